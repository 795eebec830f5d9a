"""Shared fixtures: small saved checkpoints of every family (built once per test session), and
running the ops on their PyTorch references for model-level tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fq_core.flat import FlatConfig, save_quantized
from fq_core.flat.testing import as_if_calibrated, kv4_specs
from fq_core.models.testing import tiny_model
from fq_core.quant import QuantSpec

ASYM_ACT = QuantSpec(4, False, "token")
"""The default recipe's activation quantiser: asymmetric per token."""


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """checkpoint(family, kv4: bool, asym: bool = False) -> a saved directory of a tiny model whose
    every transform and clipping factor is off its initial value (`as_if_calibrated`)."""
    made: dict[tuple[str, bool, bool], Path] = {}

    def make(family: str, with_kv4: bool, asym: bool = False) -> Path:
        if (family, with_kv4, asym) not in made:
            head_dim = 16 if family == "qwen3" else 12
            specs = {**(kv4_specs(head_dim) if with_kv4 else {}), **({"act": ASYM_ACT} if asym else {})}
            path = tmp_path_factory.mktemp(family) / "ckpt"
            save_quantized(as_if_calibrated(tiny_model(family), FlatConfig(**specs)), path)
            made[family, with_kv4, asym] = path
        return made[family, with_kv4, asym]

    return make


@pytest.fixture
def reference_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ops' PyTorch references even under TRITON_INTERPRET: for tests of the model around the
    kernels (which have their own interpreter and GPU tests)."""
    monkeypatch.setenv("FQ_KERNELS_BACKEND", "reference")
