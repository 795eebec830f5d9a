"""GPU tests (`pytest -m gpu`, run by `nox -s kernels_gpu`): every kernel against its reference on
CUDA, a fuzz over >= 200 random GEMM shapes, non-finite and all-zero inputs, QuantLinear end to end.

Non-finite behaviour checked here (and documented in fq_kernels.reference): a token (KV: a group)
holding NaN or ±inf gets scale NaN and zero integers, so the output rows that read it are NaN and
no other row changes; an all-zero token gets scale 1 and zeros, so its output row is the bias.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

pytestmark = pytest.mark.gpu

from fq_core.quant.pack import pack_int4  # noqa: E402
from fq_core.transforms.kronecker import kron_factors  # noqa: E402
from fq_kernels import reference as ref  # noqa: E402
from fq_kernels.layout import fits_decode_tiles, packed_weight, tile_decode_weight  # noqa: E402
from fq_kernels.reference.gemm import gemm_k  # noqa: E402
from fq_kernels.testing import (  # noqa: E402
    assert_epilogue_close,
    assert_quant_close,
    assert_quant_equal,
    epilogue_terms,
    random_orthogonal,
    signed_permutation,
)

DEV = "cuda"


@pytest.fixture(autouse=True)
def _cuda() -> None:
    assert torch.cuda.is_available(), "a gpu test ran without CUDA: run it through `nox -s kernels_gpu`"
    assert os.environ.get("TRITON_INTERPRET", "") in ("", "0"), (
        "GPU tests compile real kernels: unset TRITON_INTERPRET"
    )


def _ops():
    from fq_kernels import ops

    return ops


ACTS = ["sym", "asym"]
"""Activation quantisers: symmetric, and asymmetric (shifted codes + zero points, zx/wsum epilogue)."""


def _quantize(act: str, x: torch.Tensor, left, right, clip, fmt: str):
    """(kernel, reference) results of transform_quant(_asym): (values, scales, zeros or None)."""
    on = [None if t is None else t.to(DEV) for t in (left, right)]
    if act == "sym":
        got = (*_ops().transform_quant(x.to(DEV), *on, clip, out_format=fmt), None)
        return got, (*ref.transform_quant_ref(x, left, right, clip, 4, fmt), None)
    got = _ops().transform_quant_asym(x.to(DEV), *on, clip, out_format=fmt)
    return got, ref.transform_quant_asym_ref(x, left, right, clip, 4, fmt)


def _assert_act_equal(got, want) -> None:
    assert_quant_equal(*got[:2], *want[:2])
    assert (got[2] is None) == (want[2] is None)
    assert got[2] is None or torch.equal(got[2].cpu(), want[2]), "zero points differ"


def _zero_points(act: str, m: int, wq: torch.Tensor, g: torch.Generator):
    """(zx [m], wsum [N]) on the device for asymmetric activations, (None, None) for symmetric."""
    if act == "sym":
        return None, None
    wv = ref.operand_values(packed_weight(wq.cpu()) if wq.dim() == 3 else wq.cpu(), gemm_k(wq))
    return torch.randint(-8, 8, (m,), generator=g).float().to(DEV), wv.sum(1).float().to(DEV)


# ---------------------------------------------------------------------------------------------
# transform_quant


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("k", [576, 11008, 14336])
@pytest.mark.parametrize("fmt", ["packed", "int8", "fp8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_without_transform_is_bit_exact(k: int, fmt: str, dtype: torch.dtype, act: str) -> None:
    g = torch.Generator().manual_seed(k)
    x = (torch.randn(37, k, generator=g) * 4).to(dtype)
    x[3] = 0
    x[5, 7] = float("nan")
    x[6, 1] = float("inf")
    x[8, 2] = -float("inf")
    x[9] = x[9].abs()  # one-signed tokens: the asymmetric range ends at 0
    x[10] = -x[10].abs()
    clip = torch.tensor([0.9, 0.8])
    got, want = _quantize(act, x, None, None, clip.to(DEV), fmt)
    _assert_act_equal(got, want)
    s = got[1]
    assert torch.isnan(s[[5, 6, 8]]).all() and not torch.isnan(s[7])
    assert act == "asym" or s[3].item() == 1.0


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("k", [576, 4096, 11008, 14336])
@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_exact_transforms_are_bit_exact(k: int, dtype: torch.dtype, act: str) -> None:
    """Signed permutations (times 2) are exact in every dot precision: kernel == reference bit for bit."""
    g = torch.Generator().manual_seed(k + 1)
    n1, n2 = kron_factors(k)
    left, right = signed_permutation(n1, g, 2.0), signed_permutation(n2, g, 0.5)
    x = torch.randint(-64, 64, (19, k), generator=g).to(dtype) / 8
    for fmt in ("packed", "int8", "fp8"):
        _assert_act_equal(*_quantize(act, x, left, right, (0.95, 0.9), fmt))


@pytest.mark.parametrize("k", [4096, 11008])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_factors_in_the_dots_type_give_the_codes_of_float32_factors(k: int, dtype: torch.dtype) -> None:
    """Factors in the 16-bit dot's own type pass to the Triton kernel as they are: same codes and
    scales, bit for bit, as float32 factors that the dot rounds to that type."""
    from fq_kernels.triton.transform_quant import launch_transform_quant

    g = torch.Generator().manual_seed(k + 3)
    n1, n2 = kron_factors(k)
    left, right = random_orthogonal(n1, g).to(DEV), random_orthogonal(n2, g).to(DEV)
    x = (torch.randn(33, k, generator=g) * 3).to(dtype).to(DEV)
    clip = ref.clip_pair((0.95, 0.9)).to(DEV)
    for symmetric in (True, False):
        want = launch_transform_quant(x, left, right, clip, 4, "int8", symmetric=symmetric)
        got = launch_transform_quant(x, left.to(dtype), right.to(dtype), clip, 4, "int8", symmetric=symmetric)
        assert_quant_equal(*got[:2], *want[:2])
        assert symmetric or torch.equal(got[2], want[2])


@pytest.mark.parametrize("k", [1536, 4096, 11008, 14336])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_orthogonal_transforms_match_within_dot_precision(k: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(k + 2)
    n1, n2 = kron_factors(k)
    left, right = random_orthogonal(n1, g), random_orthogonal(n2, g)
    x = (torch.randn(65, k, generator=g) * 3).to(dtype)
    x[0] = 0
    q, s = _ops().transform_quant(x.to(DEV), left.to(DEV), right.to(DEV), 0.97, out_format="int8")
    q_ref, s_ref = ref.transform_quant_ref(x, left, right, 0.97, 4, "int8")
    tight = dtype == torch.float32
    assert_quant_close(
        q, s, q_ref, s_ref, scale_rtol=1e-5 if tight else 2e-2, max_mismatch=1e-3 if tight else 0.05
    )


@pytest.mark.parametrize(("heads", "head_dim"), [(9, 64), (32, 128), (28, 128), (40, 128)])
def test_heads_transform(heads: int, head_dim: int) -> None:
    g = torch.Generator().manual_seed(heads)
    p = random_orthogonal(heads, g)
    x = torch.randn(33, heads * head_dim, generator=g).to(torch.bfloat16)
    q, s = _ops().transform_quant_heads(x.to(DEV), p.to(DEV), (0.9, 0.9))
    q_ref, s_ref = ref.transform_quant_ref(x, p, None, (0.9, 0.9), 4, "packed")
    assert_quant_close(q, s, q_ref, s_ref, scale_rtol=2e-2, max_mismatch=0.05)
    exact = signed_permutation(heads, g)
    q, s = _ops().transform_quant_heads(x.to(DEV), exact.to(DEV), (0.9, 0.9))
    assert_quant_equal(q, s, *ref.transform_quant_ref(x, exact, None, (0.9, 0.9), 4, "packed"))


def test_transform_of_non_finite_token_gives_nan_scale_only_there() -> None:
    k = 4096
    left, right = random_orthogonal(64), random_orthogonal(64)
    x = torch.randn(8, k).to(torch.bfloat16)
    x[2, 100] = float("nan")
    x[4, 5] = float("inf")
    x[6] = 0
    q, s = _ops().transform_quant(x.to(DEV), left.to(DEV), right.to(DEV), out_format="int8")
    assert torch.isnan(s[[2, 4]]).all() and not torch.isnan(s[[0, 1, 3, 5, 6, 7]]).any()
    assert (q[[2, 4, 6]] == 0).all() and s[6].item() == 1.0


TILE_CASES = [(64, 64, True, True), (86, 128, True, True), (112, 128, True, True), (32, 128, True, False)]
TILE_CASES += [(9, 64, False, True), (24, 24, True, True)]
"""(n1, n2, left?, right?): the 7B / 8B factors, the o_proj heads factor, a right-only and a small tile."""


def _both_activation_kernels(x, left, right, clip, fmt: str, symmetric: bool):
    """{name: (values, scales, zeros)} of the CUDA and the Triton transform_quant, called directly."""
    from fq_kernels.cuda import transform_quant as cuda_tq
    from fq_kernels.triton.transform_quant import launch_transform_quant

    on = [None if f is None else f.to(DEV) for f in (left, right)]
    x2, clip = x.to(DEV), torch.tensor(clip, device=DEV)
    return {
        "cuda": cuda_tq.launch(x2, *on, clip, 4, fmt, symmetric),
        "triton": launch_transform_quant(x2, *on, clip, 4, fmt, symmetric=symmetric),
    }


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", TILE_CASES)
@pytest.mark.parametrize("m", [1, 5, 16, 33, 300])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_activation_kernels_are_bit_exact_on_exact_transforms(case, m: int, dtype, act: str) -> None:
    """Signed permutations (times 2 and 1/2) are exact in 16-bit dots: both kernels == the reference,
    NaN / inf / all-zero / one-signed tokens included, in both storage formats."""
    n1, n2, has_left, has_right = case
    g = torch.Generator().manual_seed(n1 * n2 + m)
    left = signed_permutation(n1, g, 2.0) if has_left else None
    right = signed_permutation(n2, g, 0.5) if has_right else None
    x = (torch.randint(-64, 64, (m, n1 * n2), generator=g).float() / 8).to(dtype)
    if m > 4:
        x[1] = 0
        x[2, 5] = float("nan")
        x[3, 7] = -float("inf")
        x[4] = x[4].abs()
    for fmt in ("int8", "packed"):
        want = (
            (*ref.transform_quant_ref(x, left, right, (0.95, 0.9), 4, fmt), None)
            if act == "sym"
            else ref.transform_quant_asym_ref(x, left, right, (0.95, 0.9), 4, fmt)
        )
        for name, got in _both_activation_kernels(x, left, right, (0.95, 0.9), fmt, act == "sym").items():
            assert_quant_equal(*got[:2], *want[:2])
            assert (got[2] is None) == (act == "sym"), name
            assert got[2] is None or torch.equal(got[2].cpu(), want[2]), f"{name}: zero points differ"


@pytest.mark.parametrize("case", TILE_CASES)
@pytest.mark.parametrize("m", [1, 16, 2048])
def test_activation_kernels_agree_on_orthogonal_transforms(case, m: int) -> None:
    """Random orthogonal factors: each kernel within the dot precision of the reference, and the two
    kernels (the same float32 sums in different orders) closer to each other than to it."""
    n1, n2, has_left, has_right = case
    g = torch.Generator().manual_seed(n1 + n2 + m)
    left = random_orthogonal(n1, g) if has_left else None
    right = random_orthogonal(n2, g) if has_right else None
    x = (torch.randn(m, n1 * n2, generator=g) * 3).to(torch.bfloat16)
    q_ref, s_ref = ref.transform_quant_ref(x, left, right, (0.97, 0.97), 4, "int8")
    got = _both_activation_kernels(x, left, right, (0.97, 0.97), "int8", True)
    for q, s, _ in got.values():
        assert_quant_close(q, s, q_ref, s_ref, scale_rtol=2e-2, max_mismatch=0.05)
    (qc, sc, _), (qt, st, _) = got["cuda"], got["triton"]
    assert_quant_close(qc, sc, qt, st, scale_rtol=1e-2, max_mismatch=0.02)


def test_transform_quant_dispatches_to_the_kernel_measured_faster(monkeypatch) -> None:
    """The op runs the CUDA kernel for 2..64 16-bit tokens of tiles above 64 x 64 with a transform,
    the Triton kernel otherwise (cuda/transform_quant.py says why)."""
    from fq_kernels.cuda import transform_quant as cuda_tq

    calls = []
    launch = cuda_tq.launch
    record = lambda *a, **kw: calls.append(tuple(a[0].shape)) or launch(*a, **kw)  # noqa: E731
    monkeypatch.setattr(cuda_tq, "launch", record)
    down = random_orthogonal(86).to(DEV), random_orthogonal(128).to(DEV)
    qkv = random_orthogonal(64).to(DEV), random_orthogonal(64).to(DEV)

    def run(m: int, factors, dtype=torch.bfloat16, fmt: str = "int8") -> None:
        k = factors[0].shape[0] * factors[1].shape[0]
        _ops().transform_quant(torch.randn(m, k, device=DEV).to(dtype), *factors, out_format=fmt)

    run(16, down)
    run(16, down, torch.float16, "packed")
    run(1, down)  # one token: Triton
    run(cuda_tq.MAX_TOKENS + 1, down)  # a prompt: Triton
    run(16, down, torch.float32)
    run(16, down, fmt="fp8")
    run(16, qkv)  # 64 x 64: Triton
    assert calls == [(16, 11008), (16, 11008)]


@pytest.mark.parametrize("kernel", ["cuda", "triton"])
@pytest.mark.parametrize("m", [1, 16, 32])
def test_decode_gemm_overlapping_transform_quant_gives_the_serial_result(m: int, kernel: str, monkeypatch):
    """With programmatic dependent launch the GEMM starts before transform_quant has finished; it
    must still read only finished activations: 30 fresh tokens in a row, each output bit-equal to
    the one from a plain launch after the kernel (a read too early sees another token's codes)."""
    from fq_kernels.cuda import decode_gemm, launch
    from fq_kernels.cuda import transform_quant as cuda_tq

    monkeypatch.setattr(cuda_tq, "supports", lambda *args: kernel == "cuda")  # either kernel at 64 x 64
    g = torch.Generator().manual_seed(m)
    left, right = random_orthogonal(64, g).to(DEV), random_orthogonal(64, g).to(DEV)
    tiles = tile_decode_weight(pack_int4(torch.randint(-8, 8, (11008, 4096), generator=g, dtype=torch.int8)))
    tiles, sw = tiles.to(DEV), (torch.rand(11008, generator=g) + 0.5).to(DEV)
    xs = [torch.randn(m, 4096, generator=g).to(DEV, torch.bfloat16) for _ in range(30)]

    def layer(x):
        xq, sx = _ops().transform_quant(x, left, right, 0.9, 4, "int8")
        return _ops().w4a4_linear(xq, sx, tiles, sw)

    monkeypatch.setattr(decode_gemm, "OVERLAP_TRANSFORM_QUANT", False)
    serial = [layer(x) for x in xs]
    monkeypatch.setattr(decode_gemm, "OVERLAP_TRANSFORM_QUANT", True)
    overlapped = [layer(x) for x in xs]
    assert launch.pdl_supported(torch.device(DEV)) == (torch.cuda.get_device_capability() >= (9, 0))
    for a, b in zip(serial, overlapped, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# w4a4_linear


def _operands(m: int, k: int, n: int, layout: str, g: torch.Generator):
    xv = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    wv = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    if layout == "packed" or (layout == "tiles" and not fits_decode_tiles(n, k)):
        return xv, pack_int4(wv)
    if layout == "tiles":  # the CUDA decode kernel (few tokens) or the prompt GEMM on the same tiles
        return xv, tile_decode_weight(pack_int4(wv))
    if layout == "packed-packed":
        return pack_int4(xv), pack_int4(wv)
    if layout == "int8":
        return xv, wv
    return xv.to(torch.float8_e4m3fn), wv.to(torch.float8_e4m3fn)


LAYOUTS = ["packed", "packed-packed", "int8", "fp8", "tiles"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("m", "k", "n"), [(1, 4096, 4096), (16, 4096, 11008), (128, 11008, 4096), (2048, 4096, 11008)]
)
def test_gemm_matches_reference(layout: str, m: int, k: int, n: int, act: str) -> None:
    g = torch.Generator().manual_seed(m + k + n)
    xq, wq = (t.to(DEV) for t in _operands(m, k, n, layout, g))
    acc = _ops().w4a4_matmul_int(xq, wq)
    assert torch.equal(acc, ref.int_matmul_ref(xq, wq))
    sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
    sw = (torch.rand(n, generator=g) * 0.01).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV)
    zx, wsum = _zero_points(act, m, wq, g)
    terms = epilogue_terms(xq, sx, wq, sw, bias, zx, wsum)
    for out_dtype in (torch.bfloat16, torch.float16, torch.float32):
        out = _ops().w4a4_linear(xq, sx, wq, sw, bias, out_dtype, zx, wsum)
        expected = ref.w4a4_linear_ref(xq, sx, wq, sw, bias, out_dtype, zx, wsum)
        assert_epilogue_close(out, expected, terms)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gemm_adversarial_accumulators_are_exact(layout: str) -> None:
    """Large same-sign sums (up to ~2^20) expose any accumulator that keeps too few bits."""
    for k in (4096, 14336):
        xv = torch.full((64, k), 7, dtype=torch.int8)
        xv[1::2] = -8
        wv = torch.randint(5, 8, (256, k), dtype=torch.int8)
        wv[::3] = -8
        if layout == "packed":
            xq, wq = xv, pack_int4(wv)
        elif layout == "tiles":
            xq, wq = xv, tile_decode_weight(pack_int4(wv))
        elif layout == "packed-packed":
            xq, wq = pack_int4(xv), pack_int4(wv)
        elif layout == "int8":
            xq, wq = xv, wv
        else:
            xq, wq = xv.to(torch.float8_e4m3fn), wv.to(torch.float8_e4m3fn)
        xq, wq = xq.to(DEV), wq.to(DEV)
        assert torch.equal(_ops().w4a4_matmul_int(xq, wq), ref.int_matmul_ref(xq, wq))
        # the asymmetric epilogue's float32 subtraction is exact too (scales 1: out is the integer)
        zx = torch.where(torch.arange(64) % 2 == 0, -8.0, 7.0).to(DEV)
        wsum = wv.sum(1, dtype=torch.int32).float().to(DEV)
        one = torch.ones(256, device=DEV)
        out = _ops().w4a4_linear(xq, one[:64], wq, one, None, torch.float32, zx, wsum)
        exact = (xv.double() - zx.cpu().double()[:, None]) @ wv.double().T
        assert torch.equal(out.cpu().double(), exact)


@pytest.mark.parametrize("k", [576, 4096, 11008, 14336])
def test_one_token_gemv_is_exact_on_adversarial_sums(k: int) -> None:
    """The dp4a kernel's accumulator (and its -8 * sum(a) correction) at the largest same-sign sums."""
    for a_value, w_value in ((7, 7), (-8, -8), (-8, 7)):
        xv = torch.full((1, k), a_value, dtype=torch.int8)
        wv = torch.full((64, k), w_value, dtype=torch.int8)
        wv[1::2, : k // 3] = -wv[1::2, : k // 3].clamp(min=-7)  # rows of mixed sign too
        xq, wq = xv.to(DEV), pack_int4(wv).to(DEV)
        assert torch.equal(_ops().w4a4_matmul_int(xq, wq).cpu(), ref.int_matmul_ref(xv, pack_int4(wv)))


@pytest.mark.parametrize("a_layout", ["int8", "packed"])
def test_every_decode_candidate_is_exact_on_adversarial_sums(a_layout: str) -> None:
    """Autotuning may pick any of the decode GEMM's configurations (plain or swapped operands,
    signed or offset nibbles, any split): each must give the exact integers at M = 16."""
    from fq_kernels.triton.gemm_packed import PackedConfig, candidates, launch_packed

    k, n = 4096, 1024
    xv = torch.full((16, k), 7, dtype=torch.int8)
    xv[1::2] = -8
    wv = torch.randint(5, 8, (n, k), dtype=torch.int8)
    wv[::3] = -8
    xq = (xv if a_layout == "int8" else pack_int4(xv)).to(DEV)
    wq = pack_int4(wv).to(DEV)
    exact = ref.int_matmul_ref(xv, pack_int4(wv))
    one = torch.ones(n, device=DEV)
    configs: list[PackedConfig] = candidates(16, n, k // 2)
    assert any(c.swap for c in configs) and any(not c.swap for c in configs)
    for cfg in configs:
        out = torch.empty(16, n, dtype=torch.int32, device=DEV)
        launch_packed(xq, wq, one, one, None, out, cfg, raw=True)
        assert torch.equal(out.cpu(), exact), cfg


@pytest.mark.parametrize("m", [1, 5, 8, 9, 16, 17, 40])
def test_every_tiled_decode_candidate_is_exact_on_adversarial_sums(m: int) -> None:
    """The CUDA decode kernel in each configuration autotuning may pick, at token counts around its
    8- and 16-token groups, K = 576 / 4096 / 14336 (tails of a warp's steps) and N = 1536 / 4096."""
    from fq_kernels.cuda.decode_gemm import candidates, launch_tiled

    for k, n in ((576, 1536), (4096, 4096), (14336, 1536)):
        xv = torch.full((m, k), 7, dtype=torch.int8)
        xv[1::2] = -8
        wv = torch.randint(5, 8, (n, k), dtype=torch.int8)
        wv[::3] = -8
        wv[1::5, : k // 3] = -wv[1::5, : k // 3].clamp(min=-7)  # rows of mixed sign too
        exact = ref.int_matmul_ref(xv, pack_int4(wv))
        tiles = tile_decode_weight(pack_int4(wv)).to(DEV)
        one = torch.ones(n, device=DEV)
        for cfg in candidates(m, n, k):
            out = torch.full((m, n), -1, dtype=torch.int32, device=DEV)
            launch_tiled(xv.to(DEV), tiles, one[:m], one, None, out, cfg, raw=True)
            assert torch.equal(out.cpu(), exact), (cfg, k, n)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize(
    ("m", "k", "n"), [(2048, 4096, 1536), (300, 11008, 4096), (4099, 576, 1000), (64, 14336, 256)]
)
def test_every_prefill_candidate_is_exact_with_the_reference_epilogue(m, k, n, kind: str) -> None:
    """Autotuning may pick any prefill configuration (pointer or TMA schedule, any tile, the library's
    fp8 GEMM): each must give the exact integers on adversarial sums (up to 8.0e5 at K = 14336) and
    the reference epilogue with and without a bias, at tile counts that leave partial tiles and a
    ragged last wave."""
    from fq_kernels.triton.gemm_prefill import candidates, launch_prefill

    g = torch.Generator().manual_seed(m + k + n)
    xv = torch.full((m, k), 7, dtype=torch.int8)
    xv[1::2] = -8
    wv = torch.randint(5, 8, (n, k), generator=g, dtype=torch.int8)
    wv[::3] = -8
    xr = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
    sw = (torch.rand(n, generator=g) * 0.01).to(DEV)
    exact = ref.int_matmul_ref(xv, wv)
    dt = torch.int8 if kind == "int8" else torch.float8_e4m3fn
    a, ar, b = (t.to(DEV).to(dt) for t in (xv, xr, wv))
    for cfg in candidates(m, n, k, fp8=kind == "fp8"):
        for bias in (None, torch.randn(n, generator=g).to(DEV)):
            raw = torch.full((m, n), -1, dtype=torch.int32, device=DEV)
            out = torch.empty(m, n, dtype=torch.bfloat16, device=DEV)
            try:
                launch_prefill(a, b, sx, sw, None, raw, cfg, raw=True)
                launch_prefill(ar, b, sx, sw, bias, out, cfg)
                torch.cuda.synchronize()
            except Exception as exc:  # name the configuration (a fault poisons every later launch)
                raise AssertionError(f"{cfg}: {exc}") from exc
            assert torch.equal(raw.cpu(), exact), cfg
            expected = ref.w4a4_linear_ref(xr.to(DEV), sx, wv.to(DEV), sw, bias, torch.bfloat16)
            assert_epilogue_close(out, expected, epilogue_terms(xr.to(DEV), sx, wv.to(DEV), sw, bias))


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize(("m", "k", "n"), [(2048, 4096, 22016), (333, 576, 3000)])
def test_every_prefill_candidate_applies_swiglu_as_the_unfused_layer(m, k, n, kind: str) -> None:
    """The SwiGLU epilogue of every prefill configuration (asymmetric activations, a bias, bfloat16)
    is bit-equal to the same kernel's plain output followed by silu(gate) * up, and so within the
    plain epilogue's tolerance of the reference: its rare last-bit gate differences (a fused
    multiply-add) are what separates the two (H200: 0.002% of the values at 2048 x 4096 x 22016)."""
    from fq_kernels.triton.gemm_prefill import candidates, launch_prefill

    g = torch.Generator().manual_seed(m + n)
    xv = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    wv = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
    sw = (torch.rand(n, generator=g) * 0.003).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV)
    zx, wsum = torch.randint(-8, 8, (m,), generator=g).float().to(DEV), wv.sum(1).float().to(DEV)
    expected = ref.w4a4_linear_ref(xv.to(DEV), sx, wv.to(DEV), sw, bias, torch.bfloat16, zx, wsum, True)
    dt = torch.int8 if kind == "int8" else torch.float8_e4m3fn
    a, b = xv.to(DEV).to(dt), wv.to(DEV).to(dt)
    for cfg in candidates(m, n, k, fp8=kind == "fp8"):
        out = torch.full((m, n // 2), float("nan"), dtype=torch.bfloat16, device=DEV)
        launch_prefill(a, b, sx, sw, bias, out, cfg, zx=zx, wsum=wsum, swiglu=True)
        plain = torch.empty(m, n, dtype=torch.bfloat16, device=DEV)
        launch_prefill(a, b, sx, sw, bias, plain, cfg, zx=zx, wsum=wsum)
        assert torch.equal(out, ref.swiglu_halves(plain)), cfg
        differ = (out != expected).float().mean().item()
        assert differ < 1e-3, f"{cfg}: {differ:.4%} of the values differ from the reference"


@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(2048, 4096, 1536), (300, 11008, 4096), (4099, 576, 1024), (33, 14336, 256), (64, 4096, 11008)],
)
def test_every_tiles_candidate_is_exact_with_the_reference_epilogue(m, k, n) -> None:
    """The prompt GEMM on packed int4 tiles, in every configuration autotuning may pick: exact
    integers on adversarial sums (up to 8.0e5 at K = 14336) and the reference epilogue with and
    without a bias and zero points, at token and channel counts that leave partial tiles and K that
    leaves a partial step (576 = 4.5 steps of 128)."""
    from fq_kernels.triton.gemm_tiles import candidates, launch_tiles

    g = torch.Generator().manual_seed(m + k + n)
    xv = torch.full((m, k), 7, dtype=torch.int8)
    xv[1::2] = -8
    wv = torch.randint(5, 8, (n, k), generator=g, dtype=torch.int8)
    wv[::3] = -8
    wv[1::5, : k // 3] = -wv[1::5, : k // 3].clamp(min=-7)  # rows of mixed sign too
    xr = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8).to(DEV)
    wr = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
    sw = (torch.rand(n, generator=g) * 0.01).to(DEV)
    exact = ref.int_matmul_ref(xv, wv)
    tiles = tile_decode_weight(pack_int4(wv)).to(DEV)
    tiles_r = tile_decode_weight(pack_int4(wr)).to(DEV)
    zx, wsum = torch.randint(-8, 8, (m,), generator=g).float().to(DEV), wr.sum(1).float().to(DEV)
    for cfg in candidates(m, n, k):
        for bias, zero in ((None, False), (torch.randn(n, generator=g).to(DEV), True)):
            raw = torch.full((m, n), -1, dtype=torch.int32, device=DEV)
            out = torch.empty(m, n, dtype=torch.bfloat16, device=DEV)
            z = (zx, wsum) if zero else (None, None)
            try:
                launch_tiles(xv.to(DEV), tiles, sx, sw, None, raw, cfg, raw=True)
                launch_tiles(xr, tiles_r, sx, sw, bias, out, cfg, False, *z)
                torch.cuda.synchronize()
            except Exception as exc:  # name the configuration (a fault poisons every later launch)
                raise AssertionError(f"{cfg}: {exc}") from exc
            assert torch.equal(raw.cpu(), exact), cfg
            expected = ref.w4a4_linear_ref(xr, sx, tiles_r, sw, bias, torch.bfloat16, *z)
            assert_epilogue_close(out, expected, epilogue_terms(xr, sx, tiles_r, sw, bias, *z))


@pytest.mark.parametrize(("m", "k", "n"), [(2048, 4096, 22016), (333, 576, 3072)])
def test_every_tiles_candidate_applies_swiglu_as_the_unfused_layer(m, k, n) -> None:
    """SwiGLU in the packed-tiles GEMM's epilogue (asymmetric activations, a bias, bfloat16) is
    bit-equal to the same kernel's plain output followed by silu(gate) * up."""
    from fq_kernels.triton.gemm_tiles import candidates, launch_tiles

    g = torch.Generator().manual_seed(m + n)
    xv = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8).to(DEV)
    wv = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    tiles = tile_decode_weight(pack_int4(wv)).to(DEV)
    sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
    sw = (torch.rand(n, generator=g) * 0.003).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV)
    zx, wsum = torch.randint(-8, 8, (m,), generator=g).float().to(DEV), wv.sum(1).float().to(DEV)
    expected = ref.w4a4_linear_ref(xv, sx, tiles, sw, bias, torch.bfloat16, zx, wsum, True)
    for cfg in candidates(m, n, k, swiglu=True):
        out = torch.full((m, n // 2), float("nan"), dtype=torch.bfloat16, device=DEV)
        launch_tiles(xv, tiles, sx, sw, bias, out, cfg, zx=zx, wsum=wsum, swiglu=True)
        plain = torch.empty(m, n, dtype=torch.bfloat16, device=DEV)
        launch_tiles(xv, tiles, sx, sw, bias, plain, cfg, zx=zx, wsum=wsum)
        assert torch.equal(out, ref.swiglu_halves(plain)), cfg
        differ = (out != expected).float().mean().item()
        assert differ < 1e-3, f"{cfg}: {differ:.4%} of the values differ from the reference"


def test_quant_linear_decodes_with_tiles_on_cuda() -> None:
    """On CUDA a QuantLinear stores decode tiles and gives what the Triton kernel on packed rows gives."""
    from fq_kernels.quant_linear import QuantLinear

    g = torch.Generator().manual_seed(5)
    k, n = 1536, 576
    packed = pack_int4(torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)).to(DEV)
    scale = (torch.rand(n, generator=g) * 0.01 + 0.001).to(DEV)
    right = random_orthogonal(k // 32, g).to(DEV)
    left = random_orthogonal(32, g).to(DEV)
    for act_symmetric in (True, False):
        kwargs = {"left": left, "right": right, "act_symmetric": act_symmetric}
        tiled = QuantLinear(packed, scale, **kwargs)
        rows = QuantLinear(packed, scale, **kwargs, decode="packed")
        assert tiled.qweight.dim() == 3 and rows.qweight.dim() == 2
        assert torch.equal(tiled.packed_qweight(), packed)
        for m in (1, 7, 16):
            x = torch.randn(m, k, generator=g).to(DEV, torch.bfloat16)
            assert torch.equal(tiled(x), rows(x)), (act_symmetric, m)


def _fuzz_shapes(count: int) -> list[tuple[int, int, int, str]]:
    rnd = random.Random(1234)
    ks = [11008, 14336, 576, 1536, 4096]
    ms = [1, 2, 3, 5, 7, 13, 16, 17, 31, 63, 127, 129, 255, 333, 511, 1023, 2047, 2049, 4095, 8191, 8192]
    shapes = []
    for i in range(count):
        k = ks[i % len(ks)] if i % 3 else rnd.randrange(2, 3000, 2)  # K not a multiple of any block
        m = ms[i % len(ms)] if i % 2 else rnd.randint(1, 8192)
        n = rnd.choice([rnd.randint(1, 700), rnd.randrange(16, 4097, 16), 4096, 11008])
        layout = LAYOUTS[rnd.randrange(len(LAYOUTS))]
        if layout == "tiles":  # the layout QuantLinear keeps: shapes that split into whole tiles
            n, k = -(-n // 16) * 16, -(-k // 64) * 64
        shapes.append((m, k, n, layout))
    return shapes


FUZZ_CHUNKS = 8
"""The 200 shapes run as 8 tests of 25, so a time-limited run can take them a few at a time (node
ids `test_kernels_gpu.py::test_gemm_fuzz_200_shapes[0]` ...): together they compile many kernels."""


@pytest.mark.parametrize("chunk", range(FUZZ_CHUNKS))
def test_gemm_fuzz_200_shapes(chunk: int) -> None:
    """Random shapes and layouts (odd M, K off every block size, the LLaMA K values), exact + epilogue."""
    g = torch.Generator().manual_seed(99 + chunk)
    failures = []
    shapes = list(enumerate(_fuzz_shapes(200)))[chunk::FUZZ_CHUNKS]
    for i, (m, k, n, layout) in shapes:
        xq, wq = (t.to(DEV) for t in _operands(m, k, n, layout, g))
        sx = (torch.rand(m, generator=g) + 0.1).to(DEV)
        sw = (torch.rand(n, generator=g) * 0.01).to(DEV)
        if m > 2:
            sx[m // 2] = float("nan")  # a non-finite token: NaN row, nothing else
        bias = torch.randn(n, generator=g).to(DEV) if m % 2 else None
        act = "asym" if i % 3 == 0 else "sym"  # asymmetric activations on a third of the shapes
        zx, wsum = _zero_points(act, m, wq, g)
        try:
            acc = _ops().w4a4_matmul_int(xq, wq)
            assert torch.equal(acc, ref.int_matmul_ref(xq, wq)), "accumulators differ"
            out = _ops().w4a4_linear(xq, sx, wq, sw, bias, zx=zx, wsum=wsum)
            terms = epilogue_terms(xq, sx, wq, sw, bias, zx, wsum)
            assert_epilogue_close(out, ref.w4a4_linear_ref(xq, sx, wq, sw, bias, zx=zx, wsum=wsum), terms)
        except AssertionError as exc:
            failures.append(f"M={m} K={k} N={n} {layout} {act}: {exc}")
    assert not failures, "\n".join(failures[:20])


def test_fuzz_covers_the_required_shapes() -> None:
    shapes = _fuzz_shapes(200)
    ks = {k for _, k, _, _ in shapes}
    ms = {m for m, _, _, _ in shapes}
    assert len(shapes) >= 200 and {11008, 14336, 576, 1536} <= ks
    assert any(k % 128 for k in ks) and any(m % 2 for m in ms) and 1 in ms and max(ms) >= 8191


@pytest.mark.parametrize("act", ACTS)
def test_zero_token_gives_bias_row(act: str) -> None:
    from fq_kernels.layout import weight_sums

    ops = _ops()
    x = torch.randn(5, 4096, device=DEV, dtype=torch.bfloat16)
    x[2] = 0
    wq = pack_int4(torch.randint(-8, 8, (256, 4096), dtype=torch.int8)).to(DEV)
    sw = torch.rand(256, device=DEV)
    bias = torch.randn(256, device=DEV)
    wsum = weight_sums(wq) if act == "asym" else None
    for fmt in ("int8", "packed"):
        if act == "sym":
            (xq, sx), zx = ops.quantize_act(x, 1.0, out_format=fmt), None
        else:
            xq, sx, zx = ops.transform_quant_asym(x, None, None, 1.0, out_format=fmt)
        out = ops.w4a4_linear(xq, sx, wq, sw, bias, torch.float32, zx, wsum)
        assert torch.equal(out[2], bias)


# ---------------------------------------------------------------------------------------------
# KV cache, QuantLinear, torch.compile


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("b", "t"), [(1, 2048), (16, 1), (3, 333)])
def test_rope_map_at_llama_shapes(b: int, t: int, dtype) -> None:
    """RoPE + key map on slices of a 7B q|k|v projection (32 heads of 128), prompt and decode
    shapes, against the reference in float32 rounded to the type (the kernel rounds once)."""
    from fq_kernels.ops import rope_map

    g = torch.Generator().manual_seed(b + t)
    qkv = torch.randn(b, t, 3 * 4096, generator=g).to(DEV, dtype)
    k = qkv[..., 4096:8192].view(b, t, 32, 128)
    angles = torch.rand(b, t, 64, generator=g) * 100
    cos, sin = (torch.cat([f(angles)] * 2, -1).to(DEV, dtype) for f in (torch.cos, torch.sin))
    head_map = random_orthogonal(128, g).to(DEV)
    for m in (None, head_map):
        out = rope_map(k, cos, sin, m)
        exact = ref.rope_map_ref(k.float(), cos.float(), sin.float(), m).to(dtype)
        torch.testing.assert_close(out, exact, rtol=2e-2, atol=2e-2)
        assert (out.float() - exact.float()).abs().mean() < 2e-3


@pytest.mark.parametrize("group", [64, 128])
def test_kv_cache_round_trip_is_bit_exact(group: int) -> None:
    g = torch.Generator().manual_seed(group)
    x = (torch.randn(2, 8, 77, 128, generator=g) * 3).to(torch.bfloat16)
    x[0, 0, 0] = 0
    x[1, 2, 3, 5] = float("nan")
    q, s, z = _ops().quant_kv(x.to(DEV), group, (0.95, 0.9))
    q_ref, s_ref, z_ref = ref.quant_kv_ref(x, group, (0.95, 0.9))
    assert torch.equal(q.cpu(), q_ref) and torch.equal(z.cpu(), z_ref)
    assert torch.equal(s.cpu().nan_to_num(-1), s_ref.nan_to_num(-1))
    for out_dtype in (torch.bfloat16, torch.float32):
        d = _ops().dequant_kv(q, s, z, group, out_dtype)
        d_ref = ref.dequant_kv_ref(q_ref, s_ref, z_ref, group, out_dtype)
        assert torch.equal(d.cpu().nan_to_num(7.0), d_ref.nan_to_num(7.0))


@pytest.mark.parametrize(("b", "t"), [(1, 2048), (16, 1)])
def test_quant_kv_into_a_7b_cache_is_bit_exact(b: int, t: int) -> None:
    """A prompt's and a decode step's keys (head-major views of the projection) written into a
    7B-shaped cache [16, 32, 4096, ...] at their positions: exactly `quant_kv_ref`'s values there."""
    g = torch.Generator().manual_seed(b + t)
    qkv = (torch.randn(b, t, 3 * 4096, generator=g) * 3).to(torch.bfloat16)
    k = qkv[..., 4096:8192].view(b, t, 32, 128).transpose(1, 2)
    cache = (
        torch.zeros(16, 32, 4096, 64, dtype=torch.uint8, device=DEV),
        torch.zeros(16, 32, 4096, 1, device=DEV),
        torch.zeros(16, 32, 4096, 1, dtype=torch.uint8, device=DEV),
    )
    positions = torch.arange(t) if t > 1 else torch.tensor([3000])
    _ops().quant_kv_into(k.to(DEV), cache, positions.to(DEV), 128, (0.95, 0.9))
    for stored, want in zip(cache, ref.quant_kv_ref(k, 128, (0.95, 0.9)), strict=True):
        assert torch.equal(stored[:b].index_select(2, positions.to(DEV)).cpu(), want)


@pytest.mark.parametrize("act", ACTS)
def test_quant_linear_from_checkpoint_on_cuda(tmp_path, act: str) -> None:
    from fq_core.checkpoint import load_checkpoint, save_checkpoint
    from fq_core.checkpoint.testing import random_tensors, tiny_config
    from fq_core.quant import QuantSpec
    from fq_kernels.quant_linear import QuantLinear

    cfg = tiny_config(act=QuantSpec(4, act == "sym", "token"))
    save_checkpoint(tmp_path / "ck", cfg, random_tensors(cfg))
    ckpt = load_checkpoint(tmp_path / "ck")
    names = ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj"]
    for prefill in ("int8", "fp8", None):
        layer = QuantLinear.from_checkpoint(ckpt, names, device=DEV, prefill=prefill, decode_max_tokens=4)
        assert layer.act_symmetric == (act == "sym")
        g = torch.Generator().manual_seed(7)
        for tokens in (3, 40):
            x = torch.randn(tokens, layer.in_features, generator=g).to(DEV, torch.bfloat16)
            y = layer(x)
            y_ref = layer.reference_forward(x)
            # random_tensors' transforms are Gaussian, not orthogonal: the kernel's bf16 tensor-core
            # dot moves more codes across a rounding boundary than with a calibrated transform (a
            # wrong scale, layout or transform gives ~1).
            rel = ((y.float() - y_ref.float()).norm() / y_ref.float().norm()).item()
            assert rel < 6e-2, (prefill, tokens, rel)


@pytest.mark.parametrize("act", ACTS)
def test_ops_compile_with_inductor(act: str) -> None:
    from fq_kernels.layout import weight_sums

    ops = _ops()
    left, right = random_orthogonal(64).to(DEV), random_orthogonal(64).to(DEV)
    wq = pack_int4(torch.randint(-8, 8, (512, 4096), dtype=torch.int8)).to(DEV)
    sw = torch.rand(512, device=DEV)
    clip = torch.tensor([0.9, 0.9], device=DEV)

    wsum = weight_sums(wq) if act == "asym" else None

    def layer(x):
        if act == "sym":
            (xq, sx), zx = ops.transform_quant(x, left, right, clip, 4, "int8"), None
        else:
            xq, sx, zx = ops.transform_quant_asym(x, left, right, clip, 4, "int8")
        return ops.w4a4_linear(xq, sx, wq, sw, None, torch.bfloat16, zx, wsum) * 2

    x = torch.randn(4, 4096, device=DEV, dtype=torch.bfloat16)
    compiled = torch.compile(layer, fullgraph=True)
    assert torch.equal(compiled(x), layer(x))


@pytest.mark.parametrize("hkv", [8, 32], ids=["llama3-gqa", "llama2-mha"])
def test_kv_attention_at_llama_shapes(hkv: int) -> None:
    """32 query heads over 8 kv heads (tensor-core kernel) or 32 (CUDA-core kernel, its codes
    unpacked by inline PTX), head_dim 128, 2304 cached positions, ragged lengths, fp16."""
    g = torch.Generator().manual_seed(11)
    b, hq, s, d = 4, 32, 2304, 128
    keys = _ops().quant_kv(torch.randn(b, hkv, s, d, generator=g).to(DEV), 128)
    values = _ops().quant_kv(torch.randn(b, hkv, s, d, generator=g).to(DEV), 128)
    q = torch.randn(b, hq, d, generator=g).to(DEV, torch.float16)
    lengths = torch.tensor([1, 100, 2048, 2304], device=DEV)
    got = _ops().kv_attention(q, keys, values, lengths, 128, d**-0.5)
    want = ref.kv_attention_ref(q, keys, values, lengths, 128, d**-0.5)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3)


def _small_llama_checkpoint(path, with_kv4: bool):
    """A random LLaMA with head_dim 64 (so the decode-attention kernel runs, unlike the tiny models')."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fq_core.flat import FlatConfig, save_quantized
    from fq_core.flat.testing import as_if_calibrated, kv4_specs
    from fq_core.quant import QuantSpec

    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    specs = {**(kv4_specs(64) if with_kv4 else {}), "act": QuantSpec(4, False, "token")}
    save_quantized(as_if_calibrated(LlamaForCausalLM(config), FlatConfig(**specs)), path)
    return path


@pytest.mark.parametrize("with_kv4", [False, True], ids=["W4A4", "W4A4KV4"])
@torch.no_grad()
def test_int4_model_perplexity_on_cuda_equals_the_fake_quant_models(tmp_path, with_kv4: bool) -> None:
    """Issue 7's criterion on the device: the Triton model's perplexity within 1% of fake quant."""
    import torch.nn.functional as F

    from fq_core.flat import load_quantized
    from fq_kernels.runtime import load_int4_model

    path = _small_llama_checkpoint(tmp_path / "ck", with_kv4)
    windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(1))

    def nll(model: torch.nn.Module, device: str) -> float:
        logits = model(windows.to(device), use_cache=False).logits[:, :-1].float().cpu()
        return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()

    real = nll(load_int4_model(path, device=DEV), DEV)  # float16 activations, Triton kernels
    fake = nll(load_quantized(path), "cpu")  # float32 fake quantisation
    assert abs(real - fake) <= 0.01 * fake, (real, fake)  # nll of a random model: ppl within ~1%


@pytest.mark.parametrize("with_kv4", [False, True], ids=["W4A4", "W4A4KV4"])
@torch.no_grad()
def test_graph_decode_gives_the_tokens_of_eager_decode_and_of_generate(tmp_path, with_kv4: bool) -> None:
    from fq_kernels.runtime import StaticDecoder, load_int4_model

    model = load_int4_model(
        _small_llama_checkpoint(tmp_path / "ck", with_kv4), device=DEV, dtype=torch.float32
    )
    ids = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(2)).to(DEV)
    graph = StaticDecoder(model, max_batch=4, max_len=64, graph=True).generate(ids, 24)
    eager = StaticDecoder(model, max_batch=4, max_len=64, graph=False).generate(ids, 24)
    assert torch.equal(graph, eager)
    hf = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, pad_token_id=0
    )
    assert torch.equal(graph, hf[:, 20:])
    # the same decoder serves a smaller batch through its own captured graph
    decoder = StaticDecoder(model, max_batch=4, max_len=64)
    assert torch.equal(decoder.generate(ids[:1], 24), graph[:1])
    assert torch.equal(decoder.generate(ids, 24), graph)


@torch.no_grad()
def test_prefill_graph_replays_give_the_eager_prefill_for_new_prompts(tmp_path) -> None:
    """A prompt shape seen twice is captured, then replayed with each new prompt's ids: the cache it
    leaves and the tokens after it are those of the eager decoder, prompt after prompt."""
    from fq_kernels.runtime import StaticDecoder, load_int4_model

    model = load_int4_model(_small_llama_checkpoint(tmp_path / "ck", True), device=DEV, dtype=torch.float32)
    graphed = StaticDecoder(model, max_batch=2, max_len=48, graph=True)
    eager = StaticDecoder(model, max_batch=2, max_len=48, graph=False)
    prompts = torch.randint(0, 256, (4, 2, 16), generator=torch.Generator().manual_seed(3)).to(DEV)
    for i, ids in enumerate(prompts):  # eager, capture, replay, replay
        assert torch.equal(graphed.generate(ids, 12), eager.generate(ids, 12)), f"prompt {i}"
        assert len(graphed._prefill_graphs) == (i >= 1)
    # another length is a new shape: eager first, then its own graph
    assert torch.equal(graphed.generate(prompts[0, :, :9], 5), eager.generate(prompts[0, :, :9], 5))
    assert len(graphed._prefill_graphs) == 1


@torch.no_grad()
def test_compiled_elementwise_matches_the_eager_functions() -> None:
    """The static loop's fused residual + RMSNorm and gated activation (torch.compile on CUDA) agree
    with the eager functions within half-precision rounding."""
    from transformers.activations import ACT2FN
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from fq_kernels.runtime.elementwise import for_device, gated_activation, residual_norm

    g = torch.Generator(device=DEV).manual_seed(0)
    norm = LlamaRMSNorm(512, eps=1e-5).to(DEV, torch.float16)
    norm.weight.copy_(torch.rand(512, generator=g, device=DEV) + 0.5)
    for tokens in (1, 37, 2048):  # decode and prefill shapes through one dynamic graph
        x, delta = (torch.randn(2, tokens, 512, generator=g, device=DEV, dtype=torch.float16) for _ in "ab")
        fused_x, fused_h = for_device(residual_norm, torch.device(DEV))(norm, x, delta)
        eager_x, eager_h = residual_norm(norm, x, delta)
        assert torch.equal(fused_x, eager_x)
        torch.testing.assert_close(fused_h, eager_h, rtol=2e-3, atol=2e-3)
        gate_up = torch.randn(2, tokens, 2 * 384, generator=g, device=DEV, dtype=torch.float16)
        fused = for_device(gated_activation, torch.device(DEV))(ACT2FN["silu"], gate_up)
        torch.testing.assert_close(fused, gated_activation(ACT2FN["silu"], gate_up), rtol=2e-3, atol=2e-3)
