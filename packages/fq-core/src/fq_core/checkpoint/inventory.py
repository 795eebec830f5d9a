"""The tensor inventory: every tensor name, shape and dtype a checkpoint must hold, from its config.

Deriving the inventory from fq_config.json alone (no model code, no transformers) is what lets a
reader check a checkpoint completely before loading any data, and lets kernel writers know the
layout without running the producer. docs/checkpoint-schema.md documents the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fq_core.checkpoint.config import CheckpointConfig, linear_shapes
from fq_core.quant.spec import QuantSpec

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)
"""Dtypes allowed for full-precision tensors (base weights, unquantised linears, biases, scales)."""
TRANSFORM_DTYPE = torch.float32
"""Transforms and clip factors are always float32: they are tiny and their precision matters."""

ValueRule = Literal["clip", "finite", "zero"]
TRANSFORM_SITES: tuple[str, ...] = ("attn_in", "mlp_in", "down_in")
ACT_SITES: tuple[str, ...] = ("attn_in", "o_in", "mlp_in", "down_in")


@dataclass(frozen=True)
class TensorSpec:
    """What one tensor must look like.

    values: a check on the data, run after loading (the header checks are shape and dtype):
        "clip"   every value in (0, 1] (clipping factors multiply a range, so 0 or >1 is a bug);
        "finite" no inf/nan (scales, transforms: one inf poisons a whole layer's output);
        "zero"   finite integers in [0, max_value] (asymmetric zero points).
    """

    shape: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...]
    values: ValueRule | None = None
    max_value: int | None = None


def _float(*shape: int, values: ValueRule | None = None) -> TensorSpec:
    return TensorSpec(tuple(shape), FLOAT_DTYPES, values)


def _fp32(*shape: int, values: ValueRule | None = None) -> TensorSpec:
    return TensorSpec(tuple(shape), (TRANSFORM_DTYPE,), values)


def weight_groups(spec: QuantSpec, in_features: int) -> int:
    """Number of scales per output channel: in/group_size for "group", else 1."""
    if spec.granularity == "group":
        assert spec.group_size is not None
        return in_features // spec.group_size
    return 1


def qweight_dtype(spec: QuantSpec) -> torch.dtype:
    """Storage dtype of quantised weights: uint8 packed for 4 bits, else int8 (sym) / uint8 (asym).

    Asymmetric values live in [0, 2^b - 1], which for 8 bits does not fit int8, so they are unsigned.
    """
    if spec.bits == 4 or not spec.symmetric:
        return torch.uint8
    return torch.int8


def linear_tensors(
    prefix: str, out_features: int, in_features: int, spec: QuantSpec
) -> dict[str, TensorSpec]:
    """The tensors of one linear layer `prefix` (weight part only; biases are added by the caller)."""
    if not spec.enabled:
        return {f"{prefix}.weight": _float(out_features, in_features)}
    packed_in = in_features // 2 if spec.bits == 4 else in_features
    groups = weight_groups(spec, in_features)
    tensors = {
        f"{prefix}.qweight": TensorSpec((out_features, packed_in), (qweight_dtype(spec),)),
        f"{prefix}.scale": _float(out_features, groups, values="finite"),
    }
    if not spec.symmetric:
        tensors[f"{prefix}.zero"] = TensorSpec((out_features, groups), (torch.uint8,), "zero", spec.qmax)
    return tensors


def _clip(prefix: str) -> dict[str, TensorSpec]:
    return {f"{prefix}.clip_max": _fp32(1, values="clip"), f"{prefix}.clip_min": _fp32(1, values="clip")}


def expected_tensors(config: CheckpointConfig) -> dict[str, TensorSpec]:
    """Every tensor of a checkpoint with this config, in a stable order (base, then layer by layer)."""
    m = config.model
    q = config.quant
    out: dict[str, TensorSpec] = {
        "embed_tokens.weight": _float(m.vocab_size, m.hidden_size),
        "norm.weight": _float(m.hidden_size),
    }
    if not m.tie_word_embeddings:
        out["lm_head.weight"] = _float(m.vocab_size, m.hidden_size)
    linears = linear_shapes(m)
    for i in range(m.num_layers):
        p = f"layers.{i}"
        out[f"{p}.input_layernorm.weight"] = _float(m.hidden_size)
        out[f"{p}.post_attention_layernorm.weight"] = _float(m.hidden_size)
        if m.qk_norm:
            out[f"{p}.self_attn.q_norm.weight"] = _float(m.head_dim)
            out[f"{p}.self_attn.k_norm.weight"] = _float(m.head_dim)
        for name, (out_f, in_f) in linears.items():
            out.update(linear_tensors(f"{p}.{name}", out_f, in_f, q.weight))
            if m.qkv_bias and name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                out[f"{p}.{name}.bias"] = _float(out_f)
        if config.layers is not None:
            layer = config.layers[i]
            for site in TRANSFORM_SITES:
                n1, n2 = getattr(layer, site)
                out[f"{p}.{site}.left"] = _fp32(n1, n1, values="finite")
                out[f"{p}.{site}.right"] = _fp32(n2, n2, values="finite")
                out[f"{p}.{site}.left_inv"] = _fp32(n1, n1, values="finite")
                out[f"{p}.{site}.right_inv"] = _fp32(n2, n2, values="finite")
            heads, head_dim = layer.o_in
            out[f"{p}.o_in.heads"] = _fp32(heads, heads, values="finite")
            out[f"{p}.o_in.heads_inv"] = _fp32(heads, heads, values="finite")
            out[f"{p}.v_out.matrix"] = _fp32(head_dim, head_dim, values="finite")
            out[f"{p}.v_out.matrix_inv"] = _fp32(head_dim, head_dim, values="finite")
            if layer.k_cache is not None:
                out[f"{p}.k_cache.matrix"] = _fp32(layer.k_cache, layer.k_cache, values="finite")
                out[f"{p}.k_cache.matrix_inv"] = _fp32(layer.k_cache, layer.k_cache, values="finite")
        if q.act.enabled:
            for site in ACT_SITES:
                out.update(_clip(f"{p}.{site}"))
        if q.key.enabled:
            out.update(_clip(f"{p}.k_cache"))
        if q.value.enabled:
            out.update(_clip(f"{p}.v_cache"))
    return out
