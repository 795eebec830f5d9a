"""GPTQ on a single linear: reduces to RTN without input correlation, beats it with correlation."""

import pytest
import torch

from fq_core.flat import FlatLinear
from fq_core.quant import QuantSpec, WeightQuantizer
from fq_core.quant.functional import dequantize, to_reduction_view
from fq_core.quant.gptq import gptq_quantize

SPEC = QuantSpec(4, True, "channel")


def _rtn(weight: torch.Tensor, spec: QuantSpec = SPEC):
    return WeightQuantizer(spec, weight.shape[0]).quantize_int(weight)


def test_uncorrelated_inputs_give_round_to_nearest():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    q_rtn, scale, zero = _rtn(w)
    q = gptq_quantize(w, torch.eye(32), scale.reshape(8, 1), zero.reshape(8, 1), SPEC)
    assert torch.equal(q, q_rtn.double())


def test_correlated_inputs_reconstruct_the_output_better_than_rtn():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(64, 64, generator=g)
    x = torch.randn(2048, 64, generator=g) @ mix  # strongly correlated features
    w = torch.randn(16, 64, generator=g)
    for spec in (SPEC, QuantSpec(4, False, "group", group_size=16)):
        q_rtn, scale, zero = _rtn(w, spec)
        groups = scale.shape[0] // 16
        q = gptq_quantize(w, x.T @ x / len(x), scale.reshape(16, groups), zero.reshape(16, groups), spec)
        err_rtn, err_gptq = (
            (x @ (w - dequantize(to_reduction_view(ints.float(), spec), scale, zero).reshape(w.shape)).T)
            .pow(2)
            .mean()
            for ints in (q_rtn, q)
        )
        assert q.min() >= spec.qmin and q.max() <= spec.qmax
        assert err_gptq < 0.7 * err_rtn


def test_flat_linear_freezes_with_gptq_when_given_a_hessian():
    g = torch.Generator().manual_seed(2)
    linear = torch.nn.Linear(64, 16, bias=False)
    x = torch.randn(1024, 64, generator=g) @ torch.randn(64, 64, generator=g)
    plain, with_gptq = FlatLinear(linear, SPEC, False), FlatLinear(linear, SPEC, False)
    with_gptq.hessian = x.T @ x / len(x)
    plain.freeze()
    with_gptq.freeze()
    assert with_gptq.hessian is None  # used once, then dropped
    reference = linear(x)
    err = lambda layer: (layer(x) - reference).pow(2).mean()  # noqa: E731
    assert err(with_gptq) < err(plain)
    torch.testing.assert_close(with_gptq.dequantized(), with_gptq.weight, rtol=0, atol=0)


def test_blocks_give_the_unblocked_result():
    """Lazy block updates are an exact rewrite of the column-by-column algorithm (to float64 noise)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(512, 96, generator=g) @ torch.randn(96, 96, generator=g)
    w = torch.randn(24, 96, generator=g)
    _, scale, zero = _rtn(w)
    args = (w, x.T @ x / len(x), scale.reshape(24, 1), zero.reshape(24, 1), SPEC)
    assert torch.equal(gptq_quantize(*args, block_size=16), gptq_quantize(*args, block_size=96))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_gives_the_eager_loop_bit_for_bit(monkeypatch: pytest.MonkeyPatch):
    """On CUDA each block's column loop is one graph replay, captured once per block shape and
    reused; it must give exactly what the same loop launched op by op gives."""
    from fq_core.quant import gptq

    g = torch.Generator().manual_seed(4)
    spec = QuantSpec(4, False, "group", group_size=64)
    for _ in range(2):  # the second call replays the graphs the first captured
        x = torch.randn(4096, 320, generator=g) @ torch.randn(320, 320, generator=g)
        w = torch.randn(48, 320, generator=g)
        _, scale, zero = _rtn(w, spec)
        args = [t.cuda() for t in (w, x.T @ x / len(x), scale.reshape(48, -1), zero.reshape(48, -1))]
        graphed = gptq_quantize(*args, spec)
        with monkeypatch.context() as patch:
            patch.setattr(gptq, "_block_graph", lambda *_: gptq._column_loop)
            eager = gptq_quantize(*args, spec)
        assert torch.equal(graphed, eager)
    device = graphed.device
    assert {(48, 128, device, spec), (48, 64, device, spec)} <= gptq._GRAPHS.keys()
