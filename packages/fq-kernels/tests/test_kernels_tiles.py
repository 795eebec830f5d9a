"""The prompt GEMM on packed int4 tiles (`fq_kernels.triton.gemm_tiles`) in Triton's CPU interpreter,
against the reference: exact integers at odd shapes (a partial last K step, partial token and pair
blocks, M from 1 to 300), the epilogue with bias and zero points, SwiGLU, adversarial sums, and the
errors for what it cannot take. The GPU tests run every configuration on the device."""

from __future__ import annotations

import pytest
import torch

from fq_core.quant.pack import pack_int4
from fq_kernels import reference as ref
from fq_kernels._runtime import interpreter_usable
from fq_kernels.layout import tile_decode_weight
from fq_kernels.ops import fuses_swiglu, w4a4_linear
from fq_kernels.testing import assert_epilogue_close, epilogue_terms

pytestmark = pytest.mark.skipif(
    not interpreter_usable(), reason="needs TRITON_INTERPRET=1 when triton is first imported (nox sets it)"
)


def _case(m: int, k: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    w = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    return g, x, w, tile_decode_weight(pack_int4(w))


def _launch(
    x, tiles, sx, sw, bias=None, out_dtype=torch.float32, raw=False, zx=None, wsum=None, swiglu=False
):
    from fq_kernels.triton.gemm_tiles import candidates, launch_tiles

    n = tiles.shape[0] * 16
    dtype = torch.int32 if raw else out_dtype
    out = torch.full((x.shape[0], n // 2 if swiglu else n), -1, dtype=dtype)
    cfg = candidates(x.shape[0], n, x.shape[1], swiglu)[0]
    return launch_tiles(x, tiles, sx, sw, bias, out, cfg, raw, zx, wsum, swiglu)


@pytest.mark.parametrize(
    ("m", "k", "n"), [(1, 64, 16), (3, 576, 48), (37, 192, 96), (130, 320, 32), (300, 128, 16)]
)
def test_accumulators_are_the_exact_integer_gemm(m: int, k: int, n: int) -> None:
    _, x, w, tiles = _case(m, k, n, seed=m + k)
    one = torch.ones(max(m, n))
    got = _launch(x, tiles, one[:m], one[:n], raw=True)
    assert torch.equal(got, ref.int_matmul_ref(x, pack_int4(w)))


def test_adversarial_sums_stay_exact() -> None:
    """Same-sign products at K = 4096 (sums up to 2.3e5, 16 x that in the kernel's int32 before its
    shift): any lost bit shows."""
    k = 4096
    x = torch.full((5, k), 7, dtype=torch.int8)
    x[1::2] = -8
    w = torch.randint(5, 8, (32, k), generator=torch.Generator().manual_seed(0), dtype=torch.int8)
    w[::3] = -8
    one = torch.ones(32)
    got = _launch(x, tile_decode_weight(pack_int4(w)), one[:5], one, raw=True)
    assert torch.equal(got.long(), x.long() @ w.long().T)


@pytest.mark.parametrize("act", ["sym", "asym"])
def test_epilogue_applies_scales_bias_and_zero_points(act: str) -> None:
    g, x, w, tiles = _case(19, 320, 48, seed=7)
    sx, sw = torch.rand(19, generator=g) + 0.1, torch.rand(48, generator=g) * 0.01
    bias = torch.randn(48, generator=g)
    zx = wsum = None
    if act == "asym":
        zx, wsum = torch.randint(-8, 8, (19,), generator=g).float(), w.sum(1).float()
    got = _launch(x, tiles, sx, sw, bias, zx=zx, wsum=wsum)
    want = ref.w4a4_linear_ref(x, sx, tiles, sw, bias, torch.float32, zx, wsum)
    assert_epilogue_close(got, want, epilogue_terms(x, sx, tiles, sw, bias, zx, wsum))


def test_swiglu_epilogue_is_the_gated_activation_of_the_plain_output() -> None:
    g, x, w, tiles = _case(21, 192, 64, seed=9)
    sx, sw = torch.rand(21, generator=g) + 0.1, torch.rand(64, generator=g) * 0.01
    plain = _launch(x, tiles, sx, sw)
    fused = _launch(x, tiles, sx, sw, swiglu=True)
    torch.testing.assert_close(fused, ref.swiglu_halves(plain), rtol=1e-6, atol=1e-9)
    # the op fuses it for prompts on tiles (off CUDA: every token count)
    assert fuses_swiglu(tiles, 21) and not fuses_swiglu(pack_int4(w), 21)
    torch.testing.assert_close(w4a4_linear(x, sx, tiles, sw, None, torch.float32, swiglu=True), fused)


def test_what_the_kernel_cannot_take_is_one_clear_error() -> None:
    from fq_kernels.triton.gemm_tiles import TilesConfig, launch_tiles

    _, x, _, tiles = _case(4, 128, 48, seed=1)
    out = torch.empty(4, 48)
    one = torch.ones(48)
    with pytest.raises(ValueError, match="multiple of 64"):
        launch_tiles(x, tiles, one[:4], one, None, out, TilesConfig(16, 16, 96, 2, 4, 1))
    with pytest.raises(ValueError, match="N % 32 == 0"):
        cfg = TilesConfig(16, 16, 128, 2, 4, 1)
        launch_tiles(x, tiles, one[:4], one, None, out[:, :24], cfg, swiglu=True)
    with pytest.raises(ValueError, match="K = 64"):
        launch_tiles(x[:, :64], tiles, one[:4], one, None, out, TilesConfig(16, 16, 128, 2, 4, 1))
