"""The tensor inventory derived from the config, against hand-written expectations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from fq_core.checkpoint import FLOAT_DTYPES, CheckpointConfig, TensorSpec, expected_tensors
from fq_core.checkpoint.testing import random_tensors, tiny_config, tiny_model
from fq_core.quant import NO_QUANT, QuantSpec, pack_int4, unpack_int4

F = FLOAT_DTYPES
F32 = (torch.float32,)
U8 = (torch.uint8,)
I8 = (torch.int8,)


def _layer(
    specs: dict[str, TensorSpec], i: int
) -> dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]]]:
    prefix = f"layers.{i}."
    return {k[len(prefix) :]: (v.shape, v.dtypes) for k, v in specs.items() if k.startswith(prefix)}


def _base(specs: dict[str, TensorSpec]) -> dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]]]:
    return {k: (v.shape, v.dtypes) for k, v in specs.items() if not k.startswith("layers.")}


def test_flatquant_w4a4kv4_layer() -> None:
    # hidden 16, inter 32, heads 2 x head_dim 8 (q out 16), 1 kv head (k/v out 8); W4 sym per channel.
    specs = expected_tensors(tiny_config())
    assert _base(specs) == {"embed_tokens.weight": ((50, 16), F), "norm.weight": ((16,), F)}
    clip = ((1,), F32)
    assert _layer(specs, 0) == {
        "input_layernorm.weight": ((16,), F),
        "post_attention_layernorm.weight": ((16,), F),
        "self_attn.q_proj.qweight": ((16, 8), U8),
        "self_attn.q_proj.scale": ((16, 1), F),
        "self_attn.k_proj.qweight": ((8, 8), U8),
        "self_attn.k_proj.scale": ((8, 1), F),
        "self_attn.v_proj.qweight": ((8, 8), U8),
        "self_attn.v_proj.scale": ((8, 1), F),
        "self_attn.o_proj.qweight": ((16, 8), U8),
        "self_attn.o_proj.scale": ((16, 1), F),
        "mlp.gate_proj.qweight": ((32, 8), U8),
        "mlp.gate_proj.scale": ((32, 1), F),
        "mlp.up_proj.qweight": ((32, 8), U8),
        "mlp.up_proj.scale": ((32, 1), F),
        "mlp.down_proj.qweight": ((16, 16), U8),
        "mlp.down_proj.scale": ((16, 1), F),
        "attn_in.left": ((4, 4), F32),
        "attn_in.right": ((4, 4), F32),
        "attn_in.left_inv": ((4, 4), F32),
        "attn_in.right_inv": ((4, 4), F32),
        "mlp_in.left": ((4, 4), F32),
        "mlp_in.right": ((4, 4), F32),
        "mlp_in.left_inv": ((4, 4), F32),
        "mlp_in.right_inv": ((4, 4), F32),
        "down_in.left": ((4, 4), F32),
        "down_in.right": ((8, 8), F32),
        "down_in.left_inv": ((4, 4), F32),
        "down_in.right_inv": ((8, 8), F32),
        "o_in.heads": ((2, 2), F32),
        "o_in.heads_inv": ((2, 2), F32),
        "v_out.matrix": ((8, 8), F32),
        "v_out.matrix_inv": ((8, 8), F32),
        "k_cache.matrix": ((8, 8), F32),
        "k_cache.matrix_inv": ((8, 8), F32),
        "attn_in.clip_max": clip,
        "attn_in.clip_min": clip,
        "o_in.clip_max": clip,
        "o_in.clip_min": clip,
        "mlp_in.clip_max": clip,
        "mlp_in.clip_min": clip,
        "down_in.clip_max": clip,
        "down_in.clip_min": clip,
        "k_cache.clip_max": clip,
        "k_cache.clip_min": clip,
        "v_cache.clip_max": clip,
        "v_cache.clip_min": clip,
    }
    assert _layer(specs, 1).keys() == _layer(specs, 0).keys()
    assert len(specs) == 2 + 2 * 46


def test_rtn_asym_group_weights_no_transforms() -> None:
    w = QuantSpec(bits=4, symmetric=False, granularity="group", group_size=8)
    specs = expected_tensors(tiny_config(method="rtn", weight=w, key=NO_QUANT, value=NO_QUANT))
    clip = ((1,), F32)
    assert _layer(specs, 1) == {
        "input_layernorm.weight": ((16,), F),
        "post_attention_layernorm.weight": ((16,), F),
        "self_attn.q_proj.qweight": ((16, 8), U8),
        "self_attn.q_proj.scale": ((16, 2), F),
        "self_attn.q_proj.zero": ((16, 2), U8),
        "self_attn.k_proj.qweight": ((8, 8), U8),
        "self_attn.k_proj.scale": ((8, 2), F),
        "self_attn.k_proj.zero": ((8, 2), U8),
        "self_attn.v_proj.qweight": ((8, 8), U8),
        "self_attn.v_proj.scale": ((8, 2), F),
        "self_attn.v_proj.zero": ((8, 2), U8),
        "self_attn.o_proj.qweight": ((16, 8), U8),
        "self_attn.o_proj.scale": ((16, 2), F),
        "self_attn.o_proj.zero": ((16, 2), U8),
        "mlp.gate_proj.qweight": ((32, 8), U8),
        "mlp.gate_proj.scale": ((32, 2), F),
        "mlp.gate_proj.zero": ((32, 2), U8),
        "mlp.up_proj.qweight": ((32, 8), U8),
        "mlp.up_proj.scale": ((32, 2), F),
        "mlp.up_proj.zero": ((32, 2), U8),
        "mlp.down_proj.qweight": ((16, 16), U8),
        "mlp.down_proj.scale": ((16, 4), F),
        "mlp.down_proj.zero": ((16, 4), U8),
        # rtn still has activation clip factors (all 1.0), KV16 has none
        "attn_in.clip_max": clip,
        "attn_in.clip_min": clip,
        "o_in.clip_max": clip,
        "o_in.clip_min": clip,
        "mlp_in.clip_max": clip,
        "mlp_in.clip_min": clip,
        "down_in.clip_max": clip,
        "down_in.clip_min": clip,
    }
    assert specs["layers.0.mlp.down_proj.zero"].max_value == 15


def test_w16a16_with_bias_qk_norm_untied_and_no_key_transform() -> None:
    model = tiny_model(tie_word_embeddings=False, qkv_bias=True, qk_norm=True)
    config = tiny_config(
        weight=NO_QUANT, act=NO_QUANT, key=NO_QUANT, value=NO_QUANT, model=model, k_cache=False
    )
    specs = expected_tensors(config)
    assert _base(specs) == {
        "embed_tokens.weight": ((50, 16), F),
        "norm.weight": ((16,), F),
        "lm_head.weight": ((50, 16), F),
    }
    layer = _layer(specs, 0)
    assert {k: v for k, v in layer.items() if k.startswith(("self_attn.", "mlp."))} == {
        "self_attn.q_norm.weight": ((8,), F),
        "self_attn.k_norm.weight": ((8,), F),
        "self_attn.q_proj.weight": ((16, 16), F),
        "self_attn.q_proj.bias": ((16,), F),
        "self_attn.k_proj.weight": ((8, 16), F),
        "self_attn.k_proj.bias": ((8,), F),
        "self_attn.v_proj.weight": ((8, 16), F),
        "self_attn.v_proj.bias": ((8,), F),
        "self_attn.o_proj.weight": ((16, 16), F),
        "mlp.gate_proj.weight": ((32, 16), F),
        "mlp.up_proj.weight": ((32, 16), F),
        "mlp.down_proj.weight": ((16, 32), F),
    }
    assert not any("clip" in k or "k_cache" in k or "scale" in k for k in layer)
    assert "v_out.matrix" in layer and "o_in.heads_inv" in layer


def test_unpacked_bits_use_int8_or_uint8() -> None:
    w8 = expected_tensors(tiny_config(weight=QuantSpec(bits=8)))
    assert w8["layers.0.mlp.down_proj.qweight"] == TensorSpec((16, 32), I8)
    w3a = expected_tensors(tiny_config(weight=QuantSpec(bits=3, symmetric=False, granularity="tensor")))
    assert w3a["layers.0.mlp.down_proj.qweight"] == TensorSpec((16, 32), U8)
    assert w3a["layers.0.mlp.down_proj.zero"].shape == (16, 1)
    assert w3a["layers.0.mlp.down_proj.zero"].max_value == 7


def test_random_tensors_match_inventory_and_hold_real_int4() -> None:
    config = tiny_config()
    specs = expected_tensors(config)
    tensors = random_tensors(config)
    assert tensors.keys() == specs.keys()
    for name, spec in specs.items():
        assert tuple(tensors[name].shape) == spec.shape, name
        assert tensors[name].dtype in spec.dtypes, name
    values = unpack_int4(tensors["layers.0.mlp.down_proj.qweight"])
    assert values.shape == (16, 32)
    assert values.min() >= -8 and values.max() <= 7
    assert len(values.unique()) > 8  # both nibbles used, not a constant


def test_documented_packing_example() -> None:
    assert pack_int4(torch.tensor([[1, -2, 7, -8]])).tolist() == [[0xE1, 0x87]]


def test_documented_example_config_is_valid() -> None:
    """docs/checkpoint-schema.md's example (layers expanded to 30) parses, and the shapes it lists hold."""
    doc = Path(__file__).resolve().parents[3] / "docs" / "checkpoint-schema.md"
    if not doc.is_file():
        pytest.skip("docs/ is not part of this checkout")
    match = re.search(r"## Example.*?```json\n(.*?)```", doc.read_text(), re.S)
    assert match is not None
    data = json.loads(match.group(1))
    data["layers"] = data["layers"] * 30
    specs = expected_tensors(CheckpointConfig.from_dict(data))
    u8 = (torch.uint8,)
    assert specs["layers.0.self_attn.q_proj.qweight"] == TensorSpec((576, 288), u8)
    assert specs["layers.0.self_attn.q_proj.scale"].shape == (576, 1)
    assert specs["layers.0.self_attn.k_proj.qweight"] == TensorSpec((192, 288), u8)
    assert specs["layers.0.mlp.down_proj.qweight"] == TensorSpec((576, 768), u8)
    assert specs["layers.0.down_in.left"].shape == (32, 32)
    assert specs["layers.0.down_in.right"].shape == (48, 48)
    assert specs["layers.0.o_in.heads"].shape == (9, 9)
    assert specs["layers.0.v_out.matrix"].shape == specs["layers.0.k_cache.matrix"].shape == (64, 64)
    assert "lm_head.weight" not in specs
