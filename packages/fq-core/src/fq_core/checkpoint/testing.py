"""Tiny valid configs and random tensors, for tests of every package that reads or writes checkpoints.

Lives in the package (not a tests folder) so fq-calib, fq-eval and fq-kernels tests can build a
valid checkpoint without a model: `save_checkpoint(d, cfg := tiny_config(), random_tensors(cfg))`.
Quantised weights are real integers in the spec's range (4-bit ones packed with `pack_int4`), so
readers can unpack and dequantise them.
"""

from __future__ import annotations

from typing import Any

import torch

from fq_core.checkpoint.config import CheckpointConfig, LayerTransforms, ModelGeometry, QuantConfig
from fq_core.checkpoint.inventory import expected_tensors
from fq_core.quant.pack import pack_int4
from fq_core.quant.spec import QuantSpec
from fq_core.transforms.kronecker import kron_factors

W4 = QuantSpec(bits=4, symmetric=True, granularity="channel")
A4 = QuantSpec(bits=4, symmetric=True, granularity="token")
KV4 = QuantSpec(bits=4, symmetric=False, granularity="group", group_size=8)


def tiny_model(**overrides: Any) -> ModelGeometry:
    """hidden 16, intermediate 32, 2 layers, 2 heads, 1 kv head, head_dim 8, vocab 50."""
    fields: dict[str, Any] = {
        "family": "llama",
        "model_type": "llama",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "num_kv_heads": 1,
        "head_dim": 8,
        "vocab_size": 50,
        "tie_word_embeddings": True,
        "qkv_bias": False,
        "qk_norm": False,
        "hf_config": {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2},
    }
    fields.update(overrides)
    return ModelGeometry(**fields)


def tiny_layers(model: ModelGeometry, k_cache: bool = True) -> tuple[LayerTransforms, ...]:
    """Per-layer factor sizes: the near-square split of hidden and intermediate (16 = 4x4, 32 = 4x8)."""

    layer = LayerTransforms(
        attn_in=kron_factors(model.hidden_size),
        o_in=(model.num_heads, model.head_dim),
        mlp_in=kron_factors(model.hidden_size),
        down_in=kron_factors(model.intermediate_size),
        k_cache=model.head_dim if k_cache else None,
    )
    return (layer,) * model.num_layers


def tiny_config(
    method: str = "flatquant",
    weight: QuantSpec = W4,
    act: QuantSpec = A4,
    key: QuantSpec = KV4,
    value: QuantSpec = KV4,
    model: ModelGeometry | None = None,
    k_cache: bool = True,
) -> CheckpointConfig:
    """A W4A4KV4 flatquant config of `tiny_model()` unless told otherwise (rtn gets layers=None)."""
    model = model or tiny_model()
    return CheckpointConfig(
        method=method,  # type: ignore[arg-type]
        quant=QuantConfig(weight=weight, act=act, key=key, value=value),
        model=model,
        layers=None if method == "rtn" else tiny_layers(model, k_cache),
        options={"seed": 0, "epochs": 1},
        producers={"tests": "0"},
    )


def random_tensors(config: CheckpointConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """One valid tensor per entry of `expected_tensors(config)` (first allowed dtype)."""
    gen = torch.Generator().manual_seed(seed)
    wspec = config.quant.weight
    out: dict[str, torch.Tensor] = {}
    for name, spec in expected_tensors(config).items():
        dtype = spec.dtypes[0]
        if name.endswith(".qweight"):
            rows, cols = spec.shape
            unpacked = (rows, cols * 2) if wspec.bits == 4 else (rows, cols)
            q = torch.randint(wspec.qmin, wspec.qmax + 1, unpacked, generator=gen)
            out[name] = pack_int4(q) if wspec.bits == 4 else q.to(dtype)
        elif spec.values == "zero":
            out[name] = torch.randint(0, (spec.max_value or 0) + 1, spec.shape, generator=gen).to(dtype)
        elif spec.values == "clip":
            out[name] = (0.5 + 0.5 * torch.rand(spec.shape, generator=gen)).to(dtype)
        elif name.endswith(".scale"):
            out[name] = (0.01 + torch.rand(spec.shape, generator=gen)).to(dtype)
        else:
            out[name] = torch.randn(spec.shape, generator=gen).to(dtype)
    return out
