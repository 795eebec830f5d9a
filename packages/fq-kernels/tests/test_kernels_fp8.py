"""The FP8 (W8A8) baseline on CPU: its quantisers, its linear against a hand-built reference, and a
whole FP8 model in the static decoder against the same model's own forward."""

from __future__ import annotations

import pytest
import torch

from fq_core.models.testing import tiny_model
from fq_kernels.runtime import Fp8Linear, StaticDecoder, quantize_fp8_
from fq_kernels.runtime.fp8 import FP8_MAX, quantize_rows

E4M3_VALUES = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
"""Every e4m3 value (NaN included), to check that quantised rows hold representable values."""


def test_rows_map_their_absmax_to_the_largest_e4m3_value() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=g) * torch.tensor([1e-3, 1.0, 10.0, 300.0, 0.0])[:, None]
    x[4] = 0.0
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (5, 1)
    assert torch.equal(scale[:4, 0], x[:4].abs().amax(1) / FP8_MAX) and scale[4, 0] == 1.0
    values = q.float()
    assert torch.isin(values, E4M3_VALUES[E4M3_VALUES.isfinite()]).all()
    assert torch.equal(values[:4].abs().amax(1), torch.full((4,), FP8_MAX))
    # e4m3 keeps 3 mantissa bits: each value within half an ulp (2^-4 relative) of x / scale
    err = (values * scale - x).abs()
    assert (err <= x.abs() * 2**-4 + scale * 2**-9).all()


def test_linear_is_the_product_of_its_dequantised_operands() -> None:
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(48, 64, generator=g), torch.randn(48, generator=g)
    x = torch.randn(2, 3, 64, generator=g)
    layer = Fp8Linear(w, b)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight.shape == (48, 64)
    xq, sx = quantize_rows(x.reshape(-1, 64))
    wq, sw = quantize_rows(w)
    want = (xq.float() * sx) @ (wq.float() * sw).T + b
    got = layer(x)
    assert got.shape == (2, 3, 48)
    torch.testing.assert_close(got.reshape(-1, 48), want, rtol=1e-5, atol=1e-5)
    exact = x @ w.T + b  # and close to the full-precision layer: e4m3 keeps ~2 significant digits
    assert ((got - exact).norm() / exact.norm()).item() < 0.05
    fused = Fp8Linear.fused([torch.nn.Linear(64, 16), torch.nn.Linear(64, 32, bias=False)])
    assert fused.out_features == 48 and torch.equal(fused.bias[16:], torch.zeros(32))


@pytest.mark.usefixtures("reference_ops")
@torch.no_grad()
def test_fp8_model_runs_in_the_static_decoder_as_in_its_own_forward() -> None:
    """The FP8 model's static-decoder prefill gives the logits of its own (transformers) forward,
    its 16-bit linears are gone (1 byte per weight plus a scale per channel), and its tokens follow
    the full-precision model's for most steps."""
    model = tiny_model("llama").eval()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(2))
    fp_logits = model(ids).logits[:, -1]
    quantize_fp8_(model)
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, Fp8Linear) and isinstance(layer.mlp.down_proj, Fp8Linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in layer.modules())
    logits = model(ids).logits[:, -1]
    decoder = StaticDecoder(model, max_batch=2, max_len=24, graph=False)
    assert decoder.layers[0].kv.quant is None  # a 16-bit KV cache
    first = decoder.prefill(ids)
    assert torch.equal(first[:, 0], logits.argmax(-1))
    assert ((logits - fp_logits).norm() / fp_logits.norm()).item() < 0.1
    new = decoder.generate(ids, 6)
    assert new.shape == (2, 6) and torch.equal(new[:, 0], first[:, 0])
