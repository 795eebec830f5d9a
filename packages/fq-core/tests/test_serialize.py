"""Frozen flat model -> checkpoint -> model: bit-exact logits, and refusals."""

import pytest
import torch

from fq_core.checkpoint import ModelMismatchError, load_checkpoint
from fq_core.errors import ConfigError
from fq_core.flat import FlatConfig, load_quantized, quantize_, save_quantized
from fq_core.flat.testing import as_if_calibrated
from fq_core.models.testing import FAMILIES, tiny_model
from fq_core.quant import QuantSpec, unpack_int4

KV4 = QuantSpec(4, False, "group", group_size=12)


def _frozen(family: str, config: FlatConfig) -> torch.nn.Module:
    return as_if_calibrated(tiny_model(family), config)


CASES = {
    "flatquant-w4a4kv4": FlatConfig(key=KV4, value=KV4),
    "flatquant-w4asym-g16-a8": FlatConfig(
        weight=QuantSpec(4, False, "group", 16), act=QuantSpec(8, True, "token")
    ),
    "rtn-w4a4": FlatConfig(method="rtn"),
    "hadamard-w8a8": FlatConfig(
        method="hadamard", weight=QuantSpec(8, True, "channel"), act=QuantSpec(8, True, "token")
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_reproduces_logits_bit_exactly(tmp_path, family, case):
    config = CASES[case]
    if family == "qwen3" and config.key.enabled:  # head_dim 16 there
        kv16 = QuantSpec(4, False, "group", 16)
        config = FlatConfig(**{**config.__dict__, "key": kv16, "value": kv16})
    model = _frozen(family, config)
    ids = torch.randint(0, 64, (2, 10))
    expected = model(ids).logits
    save_quantized(model, tmp_path / "ckpt")
    rebuilt = load_quantized(tmp_path / "ckpt")
    rebuilt.config._attn_implementation = "eager"  # the tiny models use eager attention
    assert torch.equal(rebuilt(ids).logits, expected)
    into_base = load_quantized(tmp_path / "ckpt", model=tiny_model(family, seed=7))
    assert torch.equal(into_base(ids).logits, expected)


def test_checkpoint_holds_packed_int4_weights_that_dequantise_to_the_model(tmp_path):
    model = _frozen("llama", CASES["flatquant-w4a4kv4"])
    save_quantized(model, tmp_path / "ckpt")
    tensors = load_checkpoint(tmp_path / "ckpt").tensors
    q_proj = model.model.layers[1].self_attn.q_proj
    packed = tensors["layers.1.self_attn.q_proj.qweight"]
    assert packed.dtype == torch.uint8 and packed.shape == (q_proj.out_features, q_proj.in_features // 2)
    dequant = unpack_int4(packed).float() * tensors["layers.1.self_attn.q_proj.scale"]
    assert torch.equal(dequant, q_proj.weight)


def test_base_model_of_another_shape_is_refused(tmp_path):
    save_quantized(_frozen("llama", CASES["rtn-w4a4"]), tmp_path / "ckpt")
    with pytest.raises(ModelMismatchError) as err:
        load_quantized(tmp_path / "ckpt", model=tiny_model("llama", intermediate_size=64))
    assert "intermediate_size" in str(err.value) and "\n" not in str(err.value)


def test_unfrozen_model_cannot_be_saved_and_leaves_no_directory(tmp_path):
    model = quantize_(tiny_model("llama"), FlatConfig())
    with pytest.raises(ConfigError, match="not frozen"):
        save_quantized(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
