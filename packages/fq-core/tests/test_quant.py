"""Quantiser math against hand-computed values."""

import pytest
import torch

from fq_core.errors import ConfigError
from fq_core.quant import ActivationQuantizer, QuantSpec, WeightQuantizer, fake_quant, quantize, round_ste
from fq_core.quant.functional import dequantize, to_reduction_view

SYM4_TOKEN = QuantSpec(4, True, "token")
ASYM4_TOKEN = QuantSpec(4, False, "token")


def test_symmetric_4bit_per_token_hand_computed():
    # absmax 7 -> scale 1; -3.5 rounds half to even (-4); 1.4 -> 1.
    x = torch.tensor([[1.4, -3.5, 0.0, 7.0]])
    assert torch.equal(fake_quant(x, SYM4_TOKEN), torch.tensor([[1.0, -4.0, 0.0, 7.0]]))


def test_symmetric_range_is_minus_8_to_7_and_scale_uses_7():
    spec = QuantSpec(4, True, "tensor")
    assert (spec.qmin, spec.qmax) == (-8, 7)
    # absmax 14 -> scale 2: -14 -> -7, 3 -> 1.5 -> 2 (half to even) -> 4.
    x = torch.tensor([-14.0, 3.0, 14.0])
    assert torch.equal(fake_quant(x, spec), torch.tensor([-14.0, 4.0, 14.0]))


def test_asymmetric_4bit_hand_computed():
    # range [-1, 2]: scale 3/15 = 0.2, zero = round(1/0.2) = 5.
    x = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    xq = fake_quant(x, ASYM4_TOKEN)
    # 0.5 / 0.2 = 2.5 -> 2 (half to even) + 5 = 7 -> (7 - 5) * 0.2 = 0.4
    torch.testing.assert_close(xq, torch.tensor([[-1.0, 0.0, 0.4, 2.0]]))


def test_asymmetric_range_always_contains_zero():
    # all positive: min widened to 0, so 0 stays exact and scale = 3 / 15.
    x = torch.tensor([[1.0, 3.0]])
    torch.testing.assert_close(fake_quant(x, ASYM4_TOKEN), torch.tensor([[1.0, 3.0]]))
    rows = to_reduction_view(torch.tensor([[0.0, 1.0, 3.0]]), ASYM4_TOKEN)
    assert fake_quant(rows, ASYM4_TOKEN)[0, 0] == 0


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_bit_widths_have_the_right_number_of_levels(bits):
    x = torch.linspace(-1, 1, 1001).reshape(1, -1)
    sym = fake_quant(x, QuantSpec(bits, True, "token"))
    asym = fake_quant(x.abs(), QuantSpec(bits, False, "token"))
    # symmetric over [-1, 1] uses the levels -(2^(b-1)-1)..2^(b-1)-1; asymmetric over [0, 1] all 2^b.
    assert sym.unique().numel() == 2**bits - 1
    assert asym.unique().numel() == 2**bits


def test_per_channel_uses_one_scale_per_row():
    w = torch.tensor([[1.0, -7.0], [0.1, 0.7]])
    out = fake_quant(w, QuantSpec(4, True, "channel"))
    torch.testing.assert_close(out, w)  # each row: scale = absmax / 7 makes both entries exact


def test_per_group_uses_one_scale_per_group():
    x = torch.tensor([[7.0, 1.0, 70.0, 10.0]])
    out = fake_quant(x, QuantSpec(4, True, "group", group_size=2))
    torch.testing.assert_close(out, x)
    whole = fake_quant(x, QuantSpec(4, True, "token"))
    # one scale (10) for the whole row rounds 7 -> 10 and 1 -> 0
    torch.testing.assert_close(whole, torch.tensor([[10.0, 0.0, 70.0, 10.0]]))


def test_per_tensor_uses_one_scale():
    x = torch.tensor([[7.0, 1.0], [70.0, 0.0]])
    torch.testing.assert_close(
        fake_quant(x, QuantSpec(4, True, "tensor")), torch.tensor([[10.0, 0.0], [70.0, 0.0]])
    )


def test_zero_rows_stay_zero_without_nan():
    x = torch.zeros(3, 8)
    for spec in (SYM4_TOKEN, ASYM4_TOKEN):
        out = fake_quant(x, spec)
        assert torch.equal(out, x)


def test_round_ste_passes_gradient_straight_through():
    x = torch.tensor([0.3, 1.7, -2.5], requires_grad=True)
    y = round_ste(x)
    y.sum().backward()
    assert torch.equal(y, torch.tensor([0.0, 2.0, -2.0]))
    assert torch.equal(x.grad, torch.ones(3))


def test_quantize_gradient_is_zero_outside_the_clamp():
    spec = SYM4_TOKEN
    x = torch.tensor([[1.0, 20.0]], requires_grad=True)
    q = quantize(x, torch.tensor([[1.0]]), torch.tensor([[0.0]]), spec)
    q.sum().backward()
    assert torch.equal(q, torch.tensor([[1.0, 7.0]]))
    assert torch.equal(x.grad, torch.tensor([[1.0, 0.0]]))


def test_learnable_weight_clipping_clips_and_trains():
    quantizer = WeightQuantizer(QuantSpec(4, True, "channel"), out_features=1, learnable_clip=True)
    w = torch.tensor([[-1.0, 0.5, 1.0]])
    factor = torch.sigmoid(torch.tensor(4.0))
    out = quantizer(w)
    # clipped range [-f, f], scale f / 7: 1.0 -> f, 0.5 -> round(3.5 / f) * f / 7
    expected = torch.tensor([-1.0, torch.round(0.5 * 7 / factor) / 7, 1.0]) * factor
    torch.testing.assert_close(out[0], expected)
    out.pow(2).sum().backward()
    assert quantizer.clip_max.grad.abs().sum() > 0 and quantizer.clip_min.grad.abs().sum() > 0


def test_weight_quantizer_integers_dequantize_to_its_forward():
    torch.manual_seed(0)
    w = torch.randn(6, 16)
    specs = (
        QuantSpec(4, True, "channel"),
        QuantSpec(4, False, "group", group_size=8),
        QuantSpec(3, True, "channel"),
        QuantSpec(8, False, "channel"),  # 0..255 must not wrap
    )
    for spec in specs:
        quantizer = WeightQuantizer(spec, 6, learnable_clip=True)
        with torch.no_grad():
            quantizer.clip_max.uniform_(-1, 3)
            quantizer.clip_min.uniform_(-1, 3)
        q, scale, zero = quantizer.quantize_int(w)
        assert q.dtype == (torch.int8 if spec.symmetric else torch.uint8)
        assert q.min() >= spec.qmin and q.max() <= spec.qmax
        deq = dequantize(to_reduction_view(q.float(), spec), scale, zero).reshape(w.shape)
        torch.testing.assert_close(deq, quantizer(w).detach(), rtol=0, atol=1e-6)


def test_activation_clipping_factor_starts_at_sigmoid_4_and_has_gradient():
    quantizer = ActivationQuantizer(SYM4_TOKEN, learnable_clip=True)
    x = torch.tensor([[7.0, 3.0, -1.0]])
    out = quantizer(x)
    scale = 7 * torch.sigmoid(torch.tensor(4.0)) / 7
    torch.testing.assert_close(out, torch.clamp(torch.round(x / scale), -8, 7) * scale)
    out.sum().backward()
    assert quantizer.clip_max.grad is not None


def test_static_activation_quantiser_observes_then_freezes():
    quantizer = ActivationQuantizer(QuantSpec(8, True, "tensor", dynamic=False))
    calibration = torch.tensor([[-2.0, 1.0], [0.5, 2.54]])
    assert torch.equal(quantizer(calibration), calibration)  # observing: pass-through
    quantizer.freeze()
    # frozen scale = 2.54 / 127 = 0.02; values beyond the observed range saturate.
    out = quantizer(torch.tensor([[0.03, 10.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.04, 2.54]]))


@pytest.mark.parametrize(
    "kwargs",
    [dict(bits=1), dict(bits=9), dict(granularity="row"), dict(granularity="group"), dict(group_size=4)],
)
def test_invalid_specs_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        QuantSpec(**kwargs)


def test_spec_round_trips_through_dict():
    spec = QuantSpec(4, False, "group", 64, True)
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError):
        QuantSpec.from_dict({"bits": 4, "color": "red"})


@pytest.mark.parametrize(
    ("spec", "clamp"),
    [(QuantSpec(4, True, "channel"), True), (QuantSpec(4, False, "token"), False)],
    ids=["weights-sym-channel-clamped", "acts-asym-token"],
)
def test_compiled_fake_quant_matches_eager_values_and_gradients(spec, clamp):
    """What runs on CUDA (`compiled_fake_quant`, here compiled for the CPU) is the eager function:
    the same codes and values, and the same gradients into the input and the clipping factors."""
    from fq_core.quant.functional import _fake_quant, compiled_fake_quant

    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 64, generator=g)
    theta = torch.randn(24, 1, generator=g)
    results = []
    for fn in (_fake_quant, compiled_fake_quant()):
        xi, ti = x.clone().requires_grad_(), theta.clone().requires_grad_()
        clip = (torch.sigmoid(ti), torch.sigmoid(ti) * 0.9)
        out = fn(xi, spec, clip, clamp)
        (out * torch.linspace(-1, 1, 64)).sum().backward()
        results.append((out.detach(), xi.grad, ti.grad))
    (eager, eager_dx, eager_dt), (compiled, dx, dt) = results
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, eager_dx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dt, eager_dt, rtol=1e-4, atol=1e-5)
    assert eager_dt.abs().sum() > 0  # the clipping factors really receive a gradient


def test_cpu_compiles_only_where_gradients_flow_and_falls_back_to_eager(monkeypatch):
    """Calibration (inputs that require grad) runs the compiled quantiser on the CPU, inference runs
    eager; a compiler failure warns once and leaves the CPU eager, with the eager result."""
    from fq_core.quant import functional

    calls = []

    def compiled(*args):
        calls.append("compiled")
        return functional._fake_quant(*args)

    monkeypatch.setattr(functional, "COMPILE", True)
    monkeypatch.setattr(functional, "_CPU_COMPILE_FAILED", False)
    monkeypatch.setattr(functional, "compiled_fake_quant", lambda: compiled)
    spec = QuantSpec(4, False, "token")
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    functional.fake_quant(x, spec)
    assert calls == []
    functional.fake_quant(x.clone().requires_grad_(), spec)
    assert calls == ["compiled"]

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(functional, "compiled_fake_quant", lambda: broken)
    with pytest.warns(UserWarning, match="Install a C\\+\\+ compiler"):
        out = functional.fake_quant(x.clone().requires_grad_(), spec)
    torch.testing.assert_close(out, functional._fake_quant(x, spec, None, False))
    monkeypatch.setattr(functional, "compiled_fake_quant", lambda: compiled)
    functional.fake_quant(x.clone().requires_grad_(), spec)  # no second attempt, no second warning
    assert calls == ["compiled"]
