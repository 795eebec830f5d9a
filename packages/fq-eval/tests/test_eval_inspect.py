"""fq_eval.inspect's numbers and transforms against hand-computed values and exact invariants."""

import copy

import pytest
import torch

from fq_core.flat import FlatConfig, freeze_layer, load_quantized, quantize_, save_quantized
from fq_core.models import load_model
from fq_core.quant import NO_QUANT, QuantSpec
from fq_core.transforms import FixedMatrix, random_orthogonal
from fq_eval.inspect.analysis import site_stats
from fq_eval.inspect.capture import SITES, capture_site_inputs, site_weight
from fq_eval.inspect.flatness import channel_magnitude, flatness, relative_error
from fq_eval.inspect.learned import learned_transforms
from fq_eval.inspect.transforms import TRANSFORMS, affine, compared_transforms

W4, A4 = QuantSpec(4, True, "channel"), QuantSpec(4, True, "token")


def test_flatness_is_max_over_mean_of_per_channel_absmax():
    x = torch.tensor([[1.0, -2.0, 0.5, 6.0], [-1.0, 0.0, -3.0, 1.0]])
    assert channel_magnitude(x).tolist() == [1.0, 2.0, 3.0, 6.0]
    assert flatness(channel_magnitude(x)) == pytest.approx(6 / 3)  # mean of 1, 2, 3, 6 is 3
    assert flatness(torch.full((8,), 0.3)) == pytest.approx(1.0)
    assert flatness(torch.zeros(5)) == 1.0


def test_relative_error_is_the_mean_of_per_row_error_over_energy():
    approx = torch.tensor([[1.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
    exact = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 0.0]])
    assert relative_error(approx, exact) == pytest.approx((1 / 2 + 0 + 0) / 3)
    # a massive row does not drown the others: each row weighs the same
    spiky = torch.tensor([[1000.0, 0.0], [1.0, 1.0]])
    assert relative_error(spiky + torch.tensor([[1.0, 0.0], [0.0, 1.0]]), spiky) == pytest.approx(
        (1e-6 + 1 / 2) / 2
    )


def _learned(n1, n2, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n1 * n2, generator=g) + 0.5
    left = FixedMatrix(random_orthogonal(n1, g) * (torch.rand(n1, generator=g, dtype=torch.float64) + 0.5))
    return affine(left, FixedMatrix(random_orthogonal(n2, g)), scale)


def _site(n=64, tokens=32, out=24, spike=7):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(tokens, n, generator=g)
    x[:, spike] *= 50  # an outlier channel, as in real LLM activations
    return x, torch.randn(out, n, generator=g)


def _compared(x, w, learned):
    generator = torch.Generator().manual_seed(0)
    return compared_transforms(learned, channel_magnitude(x), channel_magnitude(w), generator)


def test_hadamard_spreads_a_single_spike_perfectly_flat():
    spike = torch.zeros(1, 64)
    spike[0, 5] = 9.0
    hadamard = _compared(spike, torch.ones(4, 64), _learned(8, 8))["hadamard"]
    rotated = hadamard(spike)
    assert flatness(channel_magnitude(spike)) == pytest.approx(64)  # one channel of 64
    assert flatness(channel_magnitude(rotated)) == pytest.approx(1.0)  # all |9 / 8|
    assert rotated.abs().flatten().tolist() == pytest.approx([9 / 8] * 64)


def test_hadamard_flattens_an_outlier_channel():
    x, w = _site()
    stats = site_stats(x, w, _compared(x, w, _learned(8, 8)), A4, W4)
    assert stats["hadamard"].act_flatness < stats["none"].act_flatness / 5
    assert stats["hadamard"].act_error < stats["none"].act_error


def test_every_transform_keeps_x_times_w_transposed():
    x, w = _site()
    transforms = _compared(x, w, _learned(8, 8))
    assert list(transforms) == list(TRANSFORMS)
    exact = (x.double() @ w.double().T).float()
    for transform in transforms.values():
        product = transform(x) @ transform.transform_weight_exact(w).float().T
        torch.testing.assert_close(product, exact, rtol=1e-4, atol=1e-3)
    unquantised = site_stats(x, w, transforms, NO_QUANT, NO_QUANT)
    assert all(stats.output_error < 1e-10 for stats in unquantised.values())
    assert all(stats.act_error == stats.weight_error == 0 for stats in unquantised.values())


def test_smoothing_balances_activation_and_weight_maxima():
    """SmoothQuant with alpha 0.5 leaves both sides at sqrt(max|X_j| max|W_j|) in every channel."""
    x, w = _site()
    stats = site_stats(x, w, _compared(x, w, _learned(8, 8)), A4, W4)
    balanced = (channel_magnitude(x) * channel_magnitude(w)).sqrt()
    torch.testing.assert_close(stats["smooth"].act_magnitude, balanced, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["smooth"].weight_magnitude, balanced, rtol=1e-5, atol=1e-6)
    assert stats["smooth"].act_flatness < stats["none"].act_flatness


def test_quantisation_errors_are_those_of_plain_rtn():
    x, w = _site()
    transforms = _compared(x, w, _learned(8, 8))
    stats = site_stats(x, w, transforms, A4, W4)["flatquant"]
    xt, wt = transforms["flatquant"](x), transforms["flatquant"].transform_weight_exact(w).float()
    # the 4-bit grid by hand: symmetric, scale = row absmax / 7, values in -8..7
    xs, ws = xt.abs().amax(1, keepdim=True) / 7, wt.abs().amax(1, keepdim=True) / 7
    xq, wq = (xt / xs).round().clamp(-8, 7) * xs, (wt / ws).round().clamp(-8, 7) * ws

    def per_row(approx, exact):
        return float(((approx - exact).pow(2).sum(1) / exact.pow(2).sum(1)).mean())

    assert stats.act_error == pytest.approx(per_row(xq, xt), rel=1e-5)
    assert stats.weight_error == pytest.approx(per_row(wq, wt), rel=1e-5)
    assert stats.output_error == pytest.approx(per_row(xq @ wq.T, x @ w.T), rel=1e-4)


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir, tmp_path_factory):
    """A flatquant checkpoint of the tiny model whose transforms and channel scales are known."""
    model, _ = load_model(tiny_model_dir)
    quantize_(model, FlatConfig(weight=QuantSpec(8, True, "channel")))
    g = torch.Generator().manual_seed(1)
    scales = {}
    with torch.no_grad():  # as if calibrated: factors and scales moved off their init
        for name, param in model.named_parameters():
            if name.endswith("skew"):
                param.copy_(0.2 * torch.randn(param.shape, generator=g))
            elif name.endswith(("transform.scale", "singular")):
                param.copy_(torch.rand(param.shape, generator=g) + 0.5)
                scales[name] = param.detach().clone()
            elif "clip" in name:  # clipping factors sigmoid(0..3) = 0.5..0.95: clipped hard
                param.copy_(torch.rand(param.shape, generator=g) * 3)
    for layer in model.model.layers:
        freeze_layer(layer, model)
    path = tmp_path_factory.mktemp("inspect") / "ckpt"
    save_quantized(model, path)
    return path, scales


def test_channel_scales_come_back_from_the_merged_checkpoint(tiny_model_dir, calibrated):
    path, scales = calibrated
    fp, _ = load_model(tiny_model_dir)
    flat = load_quantized(path, model=copy.deepcopy(fp))
    for index in range(2):
        learned = learned_transforms(flat, fp, index)
        prefix = f"model.layers.{index}."
        for site, module in (("attn_in", "self_attn"), ("mlp_in", "mlp")):
            expected = scales[f"{prefix}{module}.{site}.transform.scale"]
            torch.testing.assert_close(learned[site].scale, expected, rtol=1e-5, atol=0)
        # down_in's scale sits in up_proj's clipped 8-bit rows (48 wide here): a fit through their
        # rounding noise, unbiased by the clipping
        ratio = learned["down_in"].scale / scales[f"{prefix}mlp.down_in.transform.scale"]
        assert abs(float(ratio.mean()) - 1) < 1e-3 and float((ratio - 1).abs().max()) < 1e-2
        assert learned["o_in"].scale is None


def test_learned_transform_is_the_checkpoints_online_transform(tiny_model_dir, calibrated):
    """On the same layer input, the FP norm + recovered transform equals the checkpoint's merged norm +
    its online transform: what FlatQuant really feeds its activation quantiser."""
    path, _ = calibrated
    fp, _ = load_model(tiny_model_dir)
    flat = load_quantized(path, model=copy.deepcopy(fp))
    hidden = torch.randn(3, 5, 48)
    fp_layer, flat_layer = fp.model.layers[1], flat.model.layers[1]
    learned = learned_transforms(flat, fp, 1)
    ours = learned["attn_in"](fp_layer.input_layernorm(hidden))
    theirs = flat_layer.self_attn.attn_in.transform(flat_layer.input_layernorm(hidden))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours = learned["mlp_in"](fp_layer.post_attention_layernorm(hidden))
    theirs = flat_layer.mlp.mlp_in.transform(flat_layer.post_attention_layernorm(hidden))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_capture_takes_each_sites_input_and_stops_after_the_deepest_layer(tiny_model_dir):
    fp, _ = load_model(tiny_model_dir)
    windows = torch.randint(0, 100, (2, 16))
    seen = []
    handle = fp.model.norm.register_forward_hook(lambda *args: seen.append(True))
    captured = capture_site_inputs(fp, windows, [0])
    handle.remove()
    assert list(captured) == [0] and list(captured[0]) == list(SITES)
    assert not seen  # layer 1 and the final norm never ran
    x = captured[0]["attn_in"]
    assert x.shape == (32, 48)
    layer = fp.model.layers[0]
    torch.testing.assert_close(x @ site_weight(fp, 0, "attn_in")[:48].T, layer.self_attn.q_proj(x))
    assert site_weight(fp, 0, "mlp_in").shape == (2 * 96, 48)
    assert captured[0]["down_in"].shape == (32, 96)
