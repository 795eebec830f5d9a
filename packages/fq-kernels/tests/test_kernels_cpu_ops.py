"""Triton kernels in the CPU interpreter (TRITON_INTERPRET=1, as `nox -s tests` sets) against the
references, on small shapes: transform_quant (all variants, layouts, non-finite and zero tokens),
the packed and the int8/fp8 GEMM kernels (both schedules, split-K), the KV-cache kernels.

Kernels are compiled or interpreted when first imported, so this module sets TRITON_INTERPRET
before anything imports `fq_kernels.triton` when no GPU is present.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton
import triton.language as tl

from fq_core.quant.pack import pack_int4
from fq_kernels import reference as ref
from fq_kernels._runtime import interpreter_usable
from fq_kernels.testing import (
    assert_epilogue_close,
    assert_quant_close,
    assert_quant_equal,
    epilogue_terms,
    random_orthogonal,
    signed_permutation,
    small_packed_config,
)
from fq_kernels.triton.common import div_rn_by_reciprocal

pytestmark = [
    pytest.mark.skipif(
        not interpreter_usable(),
        reason="CPU kernel tests need TRITON_INTERPRET=1 set before triton is first imported "
        "(nox -s tests sets it; on a GPU machine run `-m gpu`)",
    ),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),  # numpy on NaN tokens
]


def _tq():
    from fq_kernels.triton.transform_quant import launch_transform_quant

    return launch_transform_quant


# ---------------------------------------------------------------------------------------------
# transform_quant


@pytest.mark.parametrize(("n1", "n2"), [(4, 8), (6, 10), (3, 12), (16, 16), (6, 5)])
@pytest.mark.parametrize("variant", ["kron", "heads", "right", "none"])
def test_transform_quant_matches_reference(n1: int, n2: int, variant: str) -> None:
    g = torch.Generator().manual_seed(n1 * 100 + n2)
    k = n1 * n2
    if k % 2:
        pytest.skip("packed int4 needs an even K")
    x = torch.randn(6, k, generator=g) * 3
    x[1] = 0
    left = random_orthogonal(n1, g) if variant in ("kron", "heads") else None
    right = random_orthogonal(n2, g) if variant in ("kron", "right") else None
    clip = torch.tensor([0.9, 0.8])
    for fmt in ("packed", "int8", "fp8"):
        q, s, _ = _tq()(x, left, right, clip, 4, fmt)
        q_ref, s_ref = ref.transform_quant_ref(x, left, right, clip, 4, fmt)
        if variant == "none":
            assert_quant_equal(q, s, q_ref, s_ref)
        else:  # float32 dots in the interpreter: equal but for values on a rounding boundary
            assert_quant_close(q, s, q_ref, s_ref, scale_rtol=1e-5, max_mismatch=0.02)
        assert s[1] == 1


@pytest.mark.parametrize("options", [{}, {"reduce_axes": True}], ids=["flat", "axes"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_kernel_configurations_agree(options: dict, symmetric: bool) -> None:
    """Both reductions give the reference's codes, scales and zero points in every output format, on
    a power-of-two tile and on a padded one, 11 tokens looping over 4 programs."""
    from fq_kernels.triton.transform_quant import TQConfig, launch_transform_quant

    g = torch.Generator().manual_seed(6)
    for n1, n2 in ((8, 16), (6, 20)):
        left, right = signed_permutation(n1, g), signed_permutation(n2, g, 0.5)
        x = torch.randint(-40, 40, (11, n1 * n2), generator=g).float() / 4
        x[2, 3] = float("nan")
        x[4] = 0
        x[9, 1] = -float("inf")
        cfg = TQConfig(num_warps=4, programs_per_sm=1, **options)
        for fmt in ("packed", "int8", "fp8"):
            q, s, z = launch_transform_quant(
                x, left, right, ref.clip_pair(0.9), 4, fmt, config=cfg, symmetric=symmetric
            )
            if symmetric:
                assert z is None
                assert_quant_equal(q, s, *ref.transform_quant_ref(x, left, right, 0.9, 4, fmt))
            else:
                q_ref, s_ref, z_ref = ref.transform_quant_asym_ref(x, left, right, ref.clip_pair(0.9), 4, fmt)
                assert_quant_equal(q, s, q_ref, s_ref)
                assert torch.equal(z, z_ref)


def test_factors_in_the_dots_type_give_the_codes_of_float32_factors() -> None:
    """Factors already in the dot's 16-bit type pass to the kernel as they are: the dot rounded the
    float32 ones to that type anyway, so codes and scales are the same bit for bit. (fp16: the
    interpreter's bf16 dot is not usable; the GPU test covers both.)"""
    from fq_kernels.triton.transform_quant import launch_transform_quant

    g = torch.Generator().manual_seed(7)
    left, right = random_orthogonal(8, g), random_orthogonal(16, g)
    x = (torch.randn(5, 128, generator=g) * 3).half()
    for fmt in ("packed", "fp8"):
        want = launch_transform_quant(x, left, right, ref.clip_pair(0.9), 4, fmt, dot="fp16")
        got = launch_transform_quant(x, left.half(), right.half(), ref.clip_pair(0.9), 4, fmt, dot="fp16")
        assert_quant_equal(*got[:2], *want[:2])
        assert_quant_close(*want[:2], *ref.transform_quant_ref(x, left, right, 0.9, 4, fmt), 1e-2, 0.05)


def _near_tie_quotients(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, scale) float32 with y / scale within a few ulps of k + 1/2 for most elements, scales over
    2^-30 .. 2^30: where y·(1/scale) and IEEE y / scale round to different integers."""
    scale = torch.rand(n, generator=g) * 2.0 ** torch.randint(-30, 30, (n,), generator=g).float() + 1e-30
    k = torch.randint(-17, 17, (n,), generator=g).double()
    y = ((k + 0.5) * scale.double()).float()
    for _ in range(3):  # nudge by up to three ulps either way
        step = torch.randint(-1, 2, (n,), generator=g).float()
        y = torch.nextafter(y, y + step * float("inf")).where(step != 0, y)
    return y, scale


@triton.jit
def _divide_by_reciprocal(y_ptr, s_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y, scale = tl.load(y_ptr + offs), tl.load(s_ptr + offs)
    inv = tl.math.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)
    tl.store(out_ptr + offs, div_rn_by_reciprocal(y, scale, inv))


def test_div_rn_by_reciprocal_rounds_as_ieee_division() -> None:
    y, scale = _near_tie_quotients(1 << 16, torch.Generator().manual_seed(7))
    out = torch.empty_like(y)
    _divide_by_reciprocal[(y.numel() // 1024,)](y, scale, out, BLOCK=1024)
    want = y / scale
    assert torch.equal(out, want)
    naive = y * (1.0 / scale)  # the data does reach the cases a plain reciprocal multiply gets wrong
    assert (naive.round() != want.round()).sum() > 0


def test_exactly_representable_transform_is_bit_exact() -> None:
    g = torch.Generator().manual_seed(5)
    left, right = signed_permutation(8, g, 2.0), signed_permutation(16, g)
    x = torch.randint(-40, 40, (9, 128), generator=g).float() / 4
    q, s, _ = _tq()(x, left, right, ref.clip_pair((1.0, 0.9)), 4, "packed")
    assert_quant_equal(q, s, *ref.transform_quant_ref(x, left, right, (1.0, 0.9), 4, "packed"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_plain_quantisation_is_bit_exact(dtype: torch.dtype, bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(11, 96, generator=g) * 5).to(dtype)
    x[0] = 0
    x[2, 4] = float("nan")
    x[3, 9] = float("inf")
    x[4] = x[4].abs()  # all non-negative: only clip_max matters
    x[5, ::2] = 0.25  # exact ties after division for some scales
    fmt = "packed" if bits <= 4 else "int8"
    clip = ref.clip_pair((0.8, 0.6))
    q, s, _ = _tq()(x, None, None, clip, bits, fmt)
    q_ref, s_ref = ref.transform_quant_ref(x, None, None, clip, bits, fmt)
    assert_quant_equal(q, s, q_ref, s_ref)
    assert torch.isnan(s[2:4]).all() and s[0] == 1


def test_ties_round_to_even() -> None:
    # absmax 7 -> scale 1: values k + 0.5 are exact ties
    x = torch.tensor([[7.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]])
    q, *_ = _tq()(x, None, None, ref.clip_pair(1.0), 4, "int8")
    assert q.tolist() == [[7, 0, 2, 2, 0, -2, -2, 4]]


def test_odd_right_factor_still_packs() -> None:
    g = torch.Generator().manual_seed(7)
    left, right = random_orthogonal(4, g), random_orthogonal(5, g)
    x = torch.randn(3, 20, generator=g)
    q, s, _ = _tq()(x, left, right, ref.clip_pair(1.0), 4, "packed")
    assert q.shape == (3, 10) and q.dtype == torch.uint8
    assert_quant_close(
        q, s, *ref.transform_quant_ref(x, left, right, 1.0, 4, "packed"), scale_rtol=1e-5, max_mismatch=0.05
    )


def test_op_keeps_leading_dims_and_strided_rows() -> None:
    from fq_kernels import ops

    g = torch.Generator().manual_seed(8)
    base = torch.randn(2, 3, 80, generator=g)
    x = base[..., :64]  # rows with a stride larger than K
    q, s = ops.transform_quant(x, random_orthogonal(8, g), random_orthogonal(8, g), 0.9, out_format="int8")
    assert q.shape == (2, 3, 64) and s.shape == (2, 3)
    q2, s2 = ops.quantize_act(x, 0.9)
    assert_quant_equal(q2, s2, *ref.transform_quant_ref(x, None, None, 0.9, 4, "packed"))


# ---------------------------------------------------------------------------------------------
# GEMM kernels


def _operands(m: int, k: int, n: int, g: torch.Generator):
    xv = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    wv = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    return xv, wv


PACKED_CASES = [
    (m, k, n, unpack, split, a_layout, kernel)
    for (m, k, n) in [(1, 64, 16), (1, 200, 33), (1, 100, 20), (5, 96, 40), (17, 200, 33), (33, 64, 70)]
    for unpack in (0, 1, 2)
    for split in (1, 3)
    for a_layout in ("int8", "int8-contiguous", "packed")
    for kernel in ("mma", "swap", "gemv")
    # the CUDA-core kernels serve one token and unpack signed nibbles only (int8 activations and
    # K a multiple of 8: the dp4a kernel; k = 100 and packed activations: the byte-wise one)
    if not (kernel == "gemv" and (m != 1 or unpack or a_layout == "int8-contiguous"))
]


@pytest.mark.parametrize(("m", "k", "n", "unpack", "split", "a_layout", "kernel"), PACKED_CASES)
def test_packed_gemm_is_exact(
    m: int, k: int, n: int, unpack: int, split: int, a_layout: str, kernel: str
) -> None:
    from fq_kernels.triton.gemm_packed import WORKSPACE, launch_packed

    g = torch.Generator().manual_seed(m * k + n)
    xv, wv = _operands(m, k, n, g)
    a = pack_int4(xv) if a_layout == "packed" else xv
    wq = pack_int4(wv)
    cfg = replace(small_packed_config(kernel, split, unpack), a_contiguous=a_layout == "int8-contiguous")
    one = torch.ones(max(m, n))
    acc = launch_packed(a, wq, one, one, None, torch.empty(m, n, dtype=torch.int32), cfg, raw=True)
    assert torch.equal(acc, ref.int_matmul_ref(xv, wq))
    sx, sw, bias = torch.rand(m, generator=g), torch.rand(n, generator=g), torch.randn(n, generator=g)
    out = launch_packed(a, wq, sx, sw, bias, torch.empty(m, n, dtype=torch.bfloat16), cfg)
    terms = epilogue_terms(xv, sx, wq, sw, bias)
    assert_epilogue_close(out, ref.w4a4_linear_ref(xv, sx, wq, sw, bias, torch.bfloat16), terms)
    for ws, locks in WORKSPACE._buffers.values():  # split-K leaves its workspace clean
        assert not ws.any() and not locks.any()


@pytest.mark.parametrize(("m", "k", "n"), [(1, 64, 16), (19, 96, 40), (40, 80, 64), (64, 200, 50)])
@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("schedule", ["tma", "ptr", "scaled_mm"])
def test_prefill_gemm_is_exact(m: int, k: int, n: int, kind: str, schedule: str) -> None:
    """Every schedule; "scaled_mm" (a CUDA library kernel) runs a Triton kernel here, as it does on
    the GPU for what the library cannot take."""
    from fq_kernels.triton.gemm_prefill import PrefillConfig, launch_prefill

    g = torch.Generator().manual_seed(m + k + n)
    xv, wv = _operands(m, k, n, g)
    dt = torch.int8 if kind == "int8" else torch.float8_e4m3fn
    a, b = xv.to(dt), wv.to(dt)
    cfg = PrefillConfig(
        block_m=16, block_n=32, block_k=32, group_m=2, num_warps=4, num_stages=1, schedule=schedule
    )
    one = torch.ones(max(m, n))
    acc = launch_prefill(a, b, one, one, None, torch.empty(m, n, dtype=torch.int32), cfg, raw=True)
    assert torch.equal(acc, ref.int_matmul_ref(xv, wv))
    sx, sw = torch.rand(m, generator=g), torch.rand(n, generator=g)
    sx[m // 2] = float("nan")
    for bias in (None, torch.randn(n, generator=g)):
        out = launch_prefill(a, b, sx, sw, bias, torch.empty(m, n, dtype=torch.float16), cfg)
        terms = epilogue_terms(xv, sx, wv, sw, bias)
        assert_epilogue_close(out, ref.w4a4_linear_ref(xv, sx, wv, sw, bias, torch.float16), terms)
        assert torch.isnan(out[m // 2]).all()


@pytest.mark.parametrize("schedule", ["tma", "ptr"])
@pytest.mark.parametrize("act", ["sym", "asym"])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_prefill_gemm_swiglu_epilogue_is_the_unfused_layer(schedule: str, act: str, out_dtype) -> None:
    """silu(gate) * up from the epilogue = the reference's step-by-step rounding (gate, up, silu,
    product in out_dtype) up to the last bit or two: its exp and the library's may round apart.
    N/2 = 24 columns over tiles of 16 gate + 16 up columns: the second is half masked. (Not bfloat16 here:
    the interpreter casts float32 to it by truncation, the GPU to nearest; the GPU test covers it.)"""
    from fq_kernels.triton.gemm_prefill import PrefillConfig, launch_prefill

    m, k, n = 19, 96, 48
    g = torch.Generator().manual_seed(7)
    xv, wv = _operands(m, k, n, g)
    a, b = xv.to(torch.int8), wv.to(torch.int8)
    sx, sw = torch.rand(m, generator=g) + 0.1, torch.rand(n, generator=g) * 0.01
    sx[3] = float("nan")
    bias = torch.randn(n, generator=g)
    zx = wsum = None
    if act == "asym":
        zx, wsum = torch.randint(-8, 8, (m,), generator=g).float(), wv.sum(1).float()
    cfg = PrefillConfig(16, 32, 32, group_m=2, num_warps=4, num_stages=1, schedule=schedule)
    out = torch.full((m, n // 2), 123.0, dtype=out_dtype)
    launch_prefill(a, b, sx, sw, bias, out, cfg, zx=zx, wsum=wsum, swiglu=True)
    expected = ref.w4a4_linear_ref(xv, sx, wv, sw, bias, out_dtype, zx, wsum, swiglu=True)
    assert torch.isnan(out[3]).all()
    ok = torch.arange(m) != 3
    eps = torch.finfo(out_dtype).eps
    torch.testing.assert_close(out[ok].float(), expected[ok].float(), rtol=4 * eps, atol=1e-6)
    if out_dtype != torch.float32:  # float32 shows the exp's last bit; 16 bits nearly never do
        assert (out[ok] != expected[ok]).float().mean() < 0.02


def test_w4a4_linear_op_dispatches_every_layout() -> None:
    from fq_kernels import ops
    from fq_kernels.layout import prefill_weight

    g = torch.Generator().manual_seed(11)
    xv, wv = _operands(6, 64, 24, g)
    wq = pack_int4(wv)
    sx, sw = torch.rand(2, 3, generator=g), torch.rand(24, generator=g)
    expected = ref.w4a4_linear_ref(xv, sx.reshape(-1), wq, sw)
    layouts = [
        (xv, wq),
        (pack_int4(xv), wq),
        (xv, prefill_weight(wq, "int8")),
        (xv.to(torch.float8_e4m3fn), prefill_weight(wq, "fp8")),
    ]
    for a, w in layouts:
        out = ops.w4a4_linear(a.reshape(2, 3, -1), sx, w, sw)
        assert out.shape == (2, 3, 24) and out.dtype == torch.bfloat16
        assert_epilogue_close(out.reshape(6, 24), expected)
        assert torch.equal(ops.w4a4_matmul_int(a, w), ref.int_matmul_ref(xv, wq))


def test_w4a4_linear_rejects_mismatched_operands() -> None:
    from fq_kernels import ops

    x8 = torch.zeros(2, 64, dtype=torch.int8)
    with pytest.raises(ValueError, match="K ="):
        ops.w4a4_linear(x8, torch.ones(2), torch.zeros(4, 16, dtype=torch.uint8), torch.ones(4))
    with pytest.raises(ValueError, match="same dtype"):
        ops.w4a4_linear(x8, torch.ones(2), torch.zeros(4, 64, dtype=torch.float8_e4m3fn), torch.ones(4))
    with pytest.raises(ValueError, match="sx"):
        ops.w4a4_linear(x8, torch.ones(3), torch.zeros(4, 32, dtype=torch.uint8), torch.ones(4))


# ---------------------------------------------------------------------------------------------
# KV cache


def test_strided_rows_describes_views_as_rows_at_one_stride() -> None:
    from fq_kernels.strided import strided_rows

    b, t, h, d = 2, 5, 3, 32
    qkv = torch.zeros(b, t, 3 * h * d)
    v = qkv[..., 2 * h * d :].view(b, t, h, d).transpose(1, 2)  # head-major view of the v slice
    assert strided_rows(v) == ([0, 2, 1, 3], h * d, 3 * h * d)
    assert strided_rows(v.contiguous()) == ([0, 1, 2, 3], b * h * t * d, b * h * t * d)
    cache = torch.zeros(4, h, 9, d)
    assert strided_rows(cache[:2, :, :5]) == ([0, 1, 2, 3], 5 * d, 9 * d)
    assert strided_rows(cache[:, :, :, ::2]) is None  # the last dim is not contiguous
    assert strided_rows(torch.zeros(3, 1, d).expand(3, 4, d)) is None  # repeated rows


def test_kv_kernels_read_views_in_place() -> None:
    """The v slice of a q|k|v projection seen head-major, and a prefix of a cache: the codes of their
    contiguous copies, with the outputs laid out in the input's memory order."""
    from fq_kernels import ops

    g = torch.Generator().manual_seed(3)
    b, t, h, d = 2, 5, 3, 32
    qkv = torch.randn(b, t, 3 * h * d, generator=g).to(torch.bfloat16)
    v = qkv[..., 2 * h * d :].view(b, t, h, d).transpose(1, 2)
    got = ops.quant_kv(v, 16, (0.95, 0.9))
    for out, want in zip(got, ref.quant_kv_ref(v.contiguous(), 16, (0.95, 0.9)), strict=True):
        assert torch.equal(out, want)
        assert out.transpose(1, 2).is_contiguous()  # token-major, like v
    cache = ops.quant_kv(torch.randn(3, h, 9, d, generator=g), 16)
    prefix = [part[:2, :, :4] for part in cache]
    expected = ref.dequant_kv_ref(*(part.contiguous() for part in prefix), 16, torch.float32)
    assert torch.equal(ops.dequant_kv(*prefix, 16, torch.float32), expected)
    step = ops.quant_kv(torch.randn(2, 1, h, d, generator=g).transpose(1, 2), 16)  # one decode token
    expected = ref.dequant_kv_ref(*(part.contiguous() for part in step), 16, torch.float32)
    assert torch.equal(ops.dequant_kv(*step, 16, torch.float32), expected)


@pytest.mark.parametrize("group", [16, 32])
@pytest.mark.parametrize("t", [3, 40])
def test_quant_kv_into_writes_the_codes_of_quant_kv_at_the_positions(group: int, t: int, monkeypatch) -> None:
    """k of a q|k|v projection seen head-major (as attention has it), quantised into a larger cache
    at scattered positions of its first sequences: the kernel and the reference path both store
    exactly `quant_kv_ref`'s codes, scales and zeros there and touch nothing else. (40 tokens: a
    sequence's groups span several programs.)"""
    from fq_kernels import ops

    g = torch.Generator().manual_seed(group)
    b, h, d, length = 2, 2, 32, 48
    qkv = (torch.randn(b, t, 3 * h * d, generator=g) * 2).to(torch.bfloat16)
    k = qkv[..., h * d : 2 * h * d].view(b, t, h, d).transpose(1, 2)
    k[1, 0, 2, :group] = float("nan")
    positions = torch.randperm(length, generator=g)[:t]
    expected = ref.quant_kv_ref(k, group, (0.95, 0.9))
    for backend in ("", "reference"):
        monkeypatch.setenv("FQ_KERNELS_BACKEND", backend)
        cache = (
            torch.full((3, h, length, d // 2), 7, dtype=torch.uint8),
            torch.full((3, h, length, d // group), -1.0),
            torch.full((3, h, length, d // group), 9, dtype=torch.uint8),
        )
        ops.quant_kv_into(k, cache, positions, group, (0.95, 0.9))
        for stored, want, fill in zip(cache, expected, (7, -1.0, 9), strict=True):
            written = stored[:b].index_select(2, positions)
            assert torch.equal(written.nan_to_num(-5), want.nan_to_num(-5)), backend
            untouched = torch.ones(stored.shape, dtype=torch.bool)
            untouched[:b, :, positions] = False
            assert (stored[untouched] == fill).all(), backend
    with pytest.raises(ValueError, match="positions must hold"):
        ops.quant_kv_into(k, cache, positions[:2], group)


@pytest.mark.parametrize("group", [8, 16, 24])
def test_kv_kernels_are_bit_exact(group: int) -> None:
    from fq_kernels import ops

    g = torch.Generator().manual_seed(group)
    x = (torch.randn(2, 3, 5, 48, generator=g) * 2 + 0.3).to(torch.bfloat16)
    x[0, 0, 0] = 0
    x[1, 2, 4, 3] = float("nan")
    x[1, 1, 1, :group] = 2.0  # positive-only group
    q, s, z = ops.quant_kv(x, group, (0.95, 0.9))
    q_ref, s_ref, z_ref = ref.quant_kv_ref(x, group, (0.95, 0.9))
    assert torch.equal(q, q_ref) and torch.equal(z, z_ref)
    assert torch.equal(s.nan_to_num(-1), s_ref.nan_to_num(-1))
    d = ops.dequant_kv(q, s, z, group, torch.float32)
    assert torch.equal(
        d.nan_to_num(5.0), ref.dequant_kv_ref(q_ref, s_ref, z_ref, group, torch.float32).nan_to_num(5.0)
    )
    # the interpreter truncates float32 -> bfloat16 (the GPU rounds to nearest): one ulp allowed here
    d16 = ops.dequant_kv(q, s, z, group, torch.bfloat16)
    assert_epilogue_close(d16, ref.dequant_kv_ref(q_ref, s_ref, z_ref, group, torch.bfloat16))


# ---------------------------------------------------------------------------------------------
# rope_map


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mapped", [True, False])
@pytest.mark.parametrize(("b", "t", "heads", "d"), [(2, 19, 3, 64), (1, 1, 2, 32), (1, 4100, 1, 32)])
def test_rope_map_kernel_matches_the_reference(b, t, heads, d, mapped: bool, dtype) -> None:
    """x as a slice of a q|k|v projection (token and head strides), cos / sin of one batch row
    broadcast, ragged token blocks (of 16 and, from 256 tokens, 64); float32 agrees to rounding,
    float16 to its last bit or so (the kernel rotates in float32 and rounds once, the reference after
    each operation)."""
    from fq_kernels.triton.rope import launch_rope_map

    g = torch.Generator().manual_seed(b * t + d)
    qkv = torch.randn(b, t, 3 * heads * d + 8, generator=g).to(dtype)
    x = qkv[..., heads * d : 2 * heads * d].view(b, t, heads, d)
    angles = torch.rand(1, t, d // 2, generator=g) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(dtype), torch.cat([angles.sin()] * 2, -1).to(dtype)
    head_map = random_orthogonal(d, g) if mapped else None
    expected = ref.rope_map_ref(x, cos, sin, head_map)
    out = launch_rope_map(x, cos.expand(b, t, d), sin.expand(b, t, d), head_map)
    assert out.shape == (b, t, heads, d) and out.is_contiguous() and out.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-3, "atol": 4e-3}
    torch.testing.assert_close(out, expected, **tol)


def test_every_rope_map_configuration_matches_the_reference() -> None:
    """What autotuning may pick for a prompt (tokens per program, warps) changes the blocks, never
    the result: every candidate on a ragged 300-token slice, mapped, float32."""
    from fq_kernels.triton.rope import candidates, launch_rope_map

    g = torch.Generator().manual_seed(3)
    b, t, heads, d = 1, 300, 2, 32
    x = torch.randn(b, t, 3 * heads * d, generator=g)[..., : heads * d].view(b, t, heads, d)
    cos, sin = torch.randn(1, t, d, generator=g), torch.randn(1, t, d, generator=g)
    head_map = random_orthogonal(d, g)
    expected = ref.rope_map_ref(x, cos, sin, head_map)
    configs = set(candidates(b * t, mapped=True)) | set(candidates(b * t, mapped=False))
    assert len(configs) > 1
    for cfg in configs:
        out = launch_rope_map(x, cos, sin, head_map, cfg)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5, msg=str(cfg))


def test_kv_kernels_refuse_more_groups_than_their_int32_row_index() -> None:
    """2^31 groups of 2 (a meta tensor: nothing allocated) is past the int32 row index."""
    from fq_kernels.triton.kv import launch_dequant_kv, launch_quant_kv

    x = torch.empty(2**31, 2, device="meta", dtype=torch.float16)
    with pytest.raises(ValueError, match="fewer than 2\\^31 groups"):
        launch_quant_kv(x, 2, torch.ones(2))
    codes = torch.empty(2**31, 1, device="meta", dtype=torch.uint8)
    scales = torch.empty(2**31, 1, device="meta")
    with pytest.raises(ValueError, match="fewer than 2\\^31 groups"):
        launch_dequant_kv(codes, scales, codes, 2, torch.float16)
