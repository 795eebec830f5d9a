"""Model adapters: which linears share which transform, per decoder family.

Adding a family is one small file defining a `DecoderAdapter` and one line in `ADAPTERS`.
"""

from __future__ import annotations

from typing import Any

from fq_core.adapters.base import DecoderAdapter, LayerNames
from fq_core.adapters.llama import LLAMA
from fq_core.adapters.mistral import MISTRAL
from fq_core.adapters.qwen2 import QWEN2
from fq_core.adapters.qwen3 import QWEN3
from fq_core.errors import UnsupportedModelError

ADAPTERS: tuple[DecoderAdapter, ...] = (LLAMA, MISTRAL, QWEN2, QWEN3)


def supported_model_types() -> list[str]:
    return sorted(t for adapter in ADAPTERS for t in adapter.model_types)


def get_adapter(config: Any) -> DecoderAdapter:
    """The adapter for an HF config (or a model, whose `.config` is used)."""
    config = getattr(config, "config", config)
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            adapter.check(config)
            return adapter
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
    )


__all__ = ["ADAPTERS", "DecoderAdapter", "LayerNames", "get_adapter", "supported_model_types"]
