"""Each adapter on a tiny random model of its family: placement, geometry and exactness."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fq_core.adapters import get_adapter, supported_model_types
from fq_core.errors import UnsupportedModelError
from fq_core.flat import FlatAttention, FlatConfig, FlatMLP, freeze_layer, quantize_, set_fp
from fq_core.models.testing import FAMILIES, tiny_model
from fq_core.quant import NO_QUANT

FP16_FLAT = FlatConfig(weight=NO_QUANT, act=NO_QUANT)


def _randomise_transforms(model: torch.nn.Module) -> None:
    """Move every learnable transform away from its init, as calibration would."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".scale") or name.endswith("singular"):
                param.copy_(torch.rand(param.shape, generator=g) + 0.5)
            elif name.endswith("skew"):
                param.copy_(0.3 * torch.randn(param.shape, generator=g))


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_geometry(family):
    model = tiny_model(family)
    geometry = get_adapter(model).geometry(model.config)
    assert geometry["family"] == family
    assert (
        geometry["hidden_size"],
        geometry["num_layers"],
        geometry["num_heads"],
        geometry["num_kv_heads"],
    ) == (
        48,
        2,
        4,
        2,
    )
    assert geometry["head_dim"] == (16 if family == "qwen3" else 12)
    assert geometry["qkv_bias"] is (family == "qwen2")
    assert geometry["qk_norm"] is (family == "qwen3")
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.out_features == geometry["num_heads"] * geometry["head_dim"]
    assert (attention.q_proj.bias is not None) is geometry["qkv_bias"]


@pytest.mark.parametrize("family", FAMILIES)
def test_fp_mode_reproduces_original_logits_exactly(family):
    model = tiny_model(family)
    ids = torch.randint(0, 64, (2, 16))
    expected = model(ids).logits
    flat = quantize_(copy.deepcopy(model), FlatConfig())
    set_fp(flat, True)
    assert all(
        isinstance(layer.self_attn, FlatAttention) and isinstance(layer.mlp, FlatMLP)
        for layer in flat.model.layers
    )
    assert torch.equal(flat(ids).logits, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_16bit_transformed_model_matches_original_before_and_after_merging(family):
    model = tiny_model(family)
    ids = torch.randint(0, 64, (2, 16))
    expected = model(ids).logits
    flat = quantize_(copy.deepcopy(model), FP16_FLAT)
    _randomise_transforms(flat)
    torch.testing.assert_close(flat(ids).logits, expected, rtol=1e-4, atol=1e-4)
    for layer in flat.model.layers:
        freeze_layer(layer, flat)
    torch.testing.assert_close(flat(ids).logits, expected, rtol=1e-4, atol=1e-4)
    # the merge really happened: norms absorbed the channel scales, weights changed
    assert not torch.equal(
        flat.model.layers[0].input_layernorm.weight, model.model.layers[0].input_layernorm.weight
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_with_kv_cache_matches_original_in_fp_mode(family):
    model = tiny_model(family)
    prompt = torch.randint(0, 64, (1, 6))
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False)
    flat = quantize_(copy.deepcopy(model), FlatConfig())
    set_fp(flat, True)
    assert torch.equal(flat.generate(prompt, max_new_tokens=5, do_sample=False), expected)


def test_unsupported_architecture_names_the_supported_ones():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(UnsupportedModelError) as err:
        quantize_(model, FlatConfig())
    message = str(err.value)
    assert "gpt2" in message and all(t in message for t in supported_model_types())
    assert "\n" not in message


def test_unsupported_variant_of_a_family_is_refused():
    model = tiny_model("llama", attention_bias=True)
    with pytest.raises(UnsupportedModelError, match="attention_bias"):
        get_adapter(model)
