"""fq-kernels: Triton kernels for FlatQuant W4A4 inference, with PyTorch references.

    from fq_kernels import transform_quant, w4a4_linear, quant_kv, dequant_kv, QuantLinear

The names load lazily: `fq` imports this package's CLI plugin on every call, and that must not pull
in torch or triton.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import Any

__version__ = version("fq-kernels")

_LAZY = {
    "transform_quant": "fq_kernels.ops",
    "transform_quant_asym": "fq_kernels.ops",
    "transform_quant_heads": "fq_kernels.ops",
    "quantize_act": "fq_kernels.ops",
    "w4a4_linear": "fq_kernels.ops",
    "w4a4_matmul_int": "fq_kernels.ops",
    "quant_kv": "fq_kernels.ops",
    "dequant_kv": "fq_kernels.ops",
    "quant_kv_into": "fq_kernels.ops",
    "kv_attention": "fq_kernels.ops",
    "rope_map": "fq_kernels.ops",
    "QuantLinear": "fq_kernels.quant_linear",
    "prefill_weight": "fq_kernels.layout",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fq_kernels' has no attribute {name!r}")
