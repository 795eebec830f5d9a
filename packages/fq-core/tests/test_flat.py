"""The flat fake-quant model: RTN against direct fake quantisation, caches, calibration hooks."""

import copy

import torch

from fq_core.adapters.hf_names import cache_kwarg, output_cache
from fq_core.flat import FlatConfig, quantize_, set_fp
from fq_core.models.testing import tiny_model
from fq_core.quant import QuantSpec, fake_quant

W4A4_KV4 = FlatConfig(
    key=QuantSpec(4, False, "group", group_size=12), value=QuantSpec(4, False, "group", group_size=12)
)


def test_rtn_weights_are_plain_per_channel_fake_quant_of_the_originals():
    model = tiny_model("llama")
    original = model.model.layers[1].mlp.down_proj.weight.detach().clone()
    quantize_(model, FlatConfig(method="rtn"))
    down = model.model.layers[1].mlp.down_proj
    assert down.frozen and down.qweight.dtype == torch.int8
    assert torch.equal(down.weight, fake_quant(original, QuantSpec(4, True, "channel")))
    torch.testing.assert_close(down.dequantized(), down.weight, rtol=0, atol=0)


def test_rtn_activations_are_per_token_fake_quantised():
    model = tiny_model("llama")
    quantize_(model, FlatConfig(method="rtn"))
    mlp = model.model.layers[0].mlp
    x = torch.randn(3, 48)
    gate = torch.nn.functional.linear(fake_quant(x, QuantSpec(4, True, "token")), mlp.gate_proj.weight)
    up = torch.nn.functional.linear(fake_quant(x, QuantSpec(4, True, "token")), mlp.up_proj.weight)
    h = fake_quant(mlp.act_fn(gate) * up, QuantSpec(4, True, "token"))
    torch.testing.assert_close(mlp(x), torch.nn.functional.linear(h, mlp.down_proj.weight))


def test_incremental_decoding_matches_full_forward_with_kv4():
    # Per-token activation quant and per-token/head KV quant make each position's result
    # independent of how many tokens are processed at once: cache and no cache must agree.
    model = quantize_(tiny_model("llama"), W4A4_KV4)
    ids = torch.randint(0, 64, (1, 10))
    full = model(ids).logits[:, -1]
    out = model(ids[:, :-1], use_cache=True)
    step = model(ids[:, -1:], **{cache_kwarg(): output_cache(out)}).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_every_learnable_parameter_gets_a_gradient_from_the_layer_loss():
    model = quantize_(tiny_model("qwen2"), W4A4_KV4)
    layer = model.model.layers[0]
    hidden = torch.randn(2, 8, 48)
    position_ids = torch.arange(8).unsqueeze(0)
    embeddings = model.model.rotary_emb(hidden, position_ids)
    out = layer(hidden, position_embeddings=embeddings, position_ids=position_ids)
    out = out[0] if isinstance(out, tuple) else out
    out.pow(2).mean().backward()
    names = [name for name, p in layer.named_parameters() if p.requires_grad]
    missing = [
        name
        for name, p in layer.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    # original weights are buffers, not parameters: only transforms and clipping factors train
    assert names and all(any(k in n for k in ("skew", "singular", "scale", "clip")) for n in names)
    assert not missing, missing


def test_observing_the_fp_pass_gives_smoothquant_channel_scales():
    model = quantize_(tiny_model("llama"), FlatConfig())
    layer = model.model.layers[0]
    set_fp(model, True)
    layer.mlp.mlp_in.observing = True
    captured = []
    hook = layer.post_attention_layernorm.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    model(torch.randint(0, 64, (2, 9)))
    hook.remove()
    act_absmax = captured[0].reshape(-1, 48).abs().amax(0)
    torch.testing.assert_close(layer.mlp.mlp_in.act_absmax, act_absmax)
    weight_absmax = layer.mlp.weight_absmax_for_scale()[0]
    layer.mlp.mlp_in.init_channel_scale(weight_absmax, alpha=0.3)
    expected = weight_absmax.pow(0.7) / act_absmax.pow(0.3)
    torch.testing.assert_close(layer.mlp.mlp_in.transform.scale.detach(), expected)


def test_hadamard_beats_rtn_on_activations_with_outlier_channels():
    torch.manual_seed(0)
    model = tiny_model("llama")
    with torch.no_grad():  # a few huge channels in the residual stream, as in real LLMs
        model.model.layers[0].input_layernorm.weight[:3] = 40.0
    ids = torch.randint(0, 64, (2, 16))
    expected = model(ids).logits
    errors = {}
    for method in ("rtn", "hadamard"):
        flat = quantize_(copy.deepcopy(model), FlatConfig(method=method))
        errors[method] = (flat(ids).logits - expected).pow(2).mean().item()
    assert errors["hadamard"] < errors["rtn"]
