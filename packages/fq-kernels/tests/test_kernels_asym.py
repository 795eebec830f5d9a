"""Asymmetric per-token activations: the reference against fq-core, the kernels against the reference.

The design under test (`fq_kernels.reference.gemm`): codes and zero points stored minus 8, so the
GEMM main loops are the symmetric ones and the epilogue subtracts zx[m] * wsum[n], exactly. Kernel
tests run in Triton's CPU interpreter (TRITON_INTERPRET=1) on small shapes; `test_kernels_gpu.py`
repeats them on CUDA.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fq_core.quant import functional as F
from fq_core.quant.pack import pack_int4, unpack_int4
from fq_core.quant.spec import QuantSpec
from fq_kernels import reference as ref
from fq_kernels._runtime import interpreter_usable
from fq_kernels.layout import prefill_weight, weight_sums
from fq_kernels.testing import (
    assert_epilogue_close,
    assert_quant_close,
    assert_quant_equal,
    epilogue_terms,
    random_orthogonal,
    signed_permutation,
    small_packed_config,
)

ASYM = QuantSpec(4, symmetric=False, granularity="token")
CLIP = torch.tensor([0.9, 0.7])

needs_interpreter = pytest.mark.skipif(
    not interpreter_usable(),
    reason="CPU kernel tests need TRITON_INTERPRET=1 set before triton is first imported "
    "(nox -s tests sets it; on a GPU machine run `-m gpu`)",
)
pytestmark = [  # numpy, in the interpreter, on NaN tokens
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning"),
]


def tokens(g: torch.Generator, m: int = 12, k: int = 64) -> torch.Tensor:
    """Skewed tokens plus the edge cases: all zero, one positive / one negative value, one-signed."""
    x = torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 6 + 1.5
    x[0] = 0
    x[1] = 0
    x[1, 5] = 2.5
    x[2] = 0
    x[2, 9] = -0.75
    x[3] = x[3].abs()
    x[4] = -x[4].abs()
    return x


def dequantised(q: torch.Tensor, s: torch.Tensor, z: torch.Tensor, k: int) -> torch.Tensor:
    values = unpack_int4(q, signed=True) if q.dtype == torch.uint8 else q.reshape(-1, k)
    return (values.float() - z.reshape(-1, 1)) * s.reshape(-1, 1)


# ---------------------------------------------------------------------------------------------
# reference vs fq-core


def test_reference_dequantises_to_fq_core_asymmetric_fake_quant() -> None:
    y = tokens(torch.Generator().manual_seed(0))
    q, s, z = ref.quantize_tokens_asym(y, CLIP)
    assert torch.equal((q.float() - z[:, None]) * s[:, None], F.fake_quant(y, ASYM, (CLIP[0:1], CLIP[1:2])))
    assert q.min() >= -8 and q.max() <= 7 and z.min() >= -8 and z.max() <= 7
    assert s[0] == torch.tensor(2 / 15) and (q[0] == z[0]).all()  # all zero: range [-1, 1], codes = zero
    assert z[1] == -8 and q[1, 5] == 7  # one positive value: lo = 0 -> zero point 0 - 8
    assert z[2] == 7 and q[2, 9] == -8  # one negative value: hi = 0 -> zero point 15 - 8


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_reference_bits_and_formats(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    x = tokens(g, 6, 32)
    spec = QuantSpec(bits, symmetric=False, granularity="token")
    half = 2 ** (bits - 1)
    for fmt in ("packed", "int8", "fp8") if bits <= 4 else ("int8",):
        q, s, z = ref.transform_quant_asym_ref(x, None, None, CLIP, bits, fmt)
        assert torch.equal(dequantised(q, s, z, 32), F.fake_quant(x, spec, (CLIP[0:1], CLIP[1:2])))
        values = ref.operand_values(q, 32)
        assert values.min() >= -half and values.max() <= half - 1


def test_reference_with_a_transform_is_fake_quant_of_the_transformed_tokens() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 48, generator=g) + 0.5
    left, right = random_orthogonal(6, g), random_orthogonal(8, g)
    q, s, z = ref.transform_quant_asym_ref(x, left, right, CLIP, 4, "int8")
    assert q.shape == (2, 5, 48) and s.shape == z.shape == (2, 5)
    y = ref.online_transform(x, left, right).float()
    assert torch.equal(dequantised(q, s, z, 48), F.fake_quant(y, ASYM, (CLIP[0:1], CLIP[1:2])))


def test_reference_non_finite_tokens_follow_the_symmetric_rule() -> None:
    y = tokens(torch.Generator().manual_seed(2), 6, 32)
    y[1, 3] = float("nan")
    y[2, 0] = float("inf")
    y[3, 7] = -float("inf")
    q, s, z = ref.quantize_tokens_asym(y, CLIP)
    assert torch.isnan(s[1:4]).all() and (q[1:4] == 0).all() and (z[1:4] == 0).all()
    ok = [0, 4, 5]
    fake = F.fake_quant(y[ok], ASYM, (CLIP[0:1], CLIP[1:2]))
    assert torch.equal((q[ok].float() - z[ok, None]) * s[ok, None], fake)


def _gemm_case(m: int, k: int, n: int, g: torch.Generator):
    """Shifted activation codes and zero points, int4 weights, scales: the asymmetric GEMM's inputs."""
    xv = torch.randint(-8, 8, (m, k), generator=g, dtype=torch.int8)
    zx = torch.randint(-8, 8, (m,), generator=g).float()
    wv = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    sx, sw = torch.rand(m, generator=g) + 0.1, torch.rand(n, generator=g) * 0.01
    return xv, zx, wv, sx, sw


def test_linear_reference_is_the_dequantised_product() -> None:
    g = torch.Generator().manual_seed(3)
    xv, zx, wv, sx, sw = _gemm_case(7, 96, 10, g)
    bias = torch.randn(10, generator=g)
    wq = pack_int4(wv)
    wsum = weight_sums(wq)
    assert torch.equal(wsum, wv.float().sum(1))
    out = ref.w4a4_linear_ref(xv, sx, wq, sw, bias, torch.float32, zx, wsum)
    exact = ((xv.double() - zx.double()[:, None]) * sx.double()[:, None]) @ (
        wv.double() * sw.double()[:, None]
    ).T
    terms = epilogue_terms(xv, sx, wq, sw, bias, zx, wsum)
    assert_epilogue_close(out, (exact + bias.double()).float(), terms)
    integer = ref.w4a4_linear_ref(xv, torch.ones(7), wq, torch.ones(10), None, torch.float32, zx, wsum)
    assert torch.equal(integer.double(), (xv.double() - zx.double()[:, None]) @ wv.double().T)


def test_epilogue_is_exact_at_the_documented_bound() -> None:
    """K = ASYM_MAX_K with every term at its extreme: acc, zx * wsum and their difference near 2^24."""
    k = ref.ASYM_MAX_K
    xv = torch.tensor([[7] * k, [-8] * k], dtype=torch.int8)
    wv = torch.full((2, k), -8, dtype=torch.int8)
    wv[1, ::2] = 7
    zx = torch.tensor([-8.0, 7.0])
    out = ref.w4a4_linear_ref(
        xv, torch.ones(2), pack_int4(wv), torch.ones(2), None, torch.float32, zx, weight_sums(pack_int4(wv))
    )
    exact = (xv.double() - zx.double()[:, None]) @ wv.double().T
    assert exact.abs().max() > 2**23 and torch.equal(out.double(), exact)


# ---------------------------------------------------------------------------------------------
# kernels (interpreter)


def _tq(x, left, right, clip, bits, fmt, **kwargs):
    from fq_kernels.triton.transform_quant import launch_transform_quant

    return launch_transform_quant(x, left, right, ref.clip_pair(clip), bits, fmt, symmetric=False, **kwargs)


def assert_asym_equal(got, expected) -> None:
    (q, s, z), (q_ref, s_ref, z_ref) = got, expected
    assert_quant_equal(q, s, q_ref, s_ref)
    assert torch.equal(z.cpu(), z_ref.cpu()), "zero points differ"


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_kernel_without_transform_is_bit_exact(dtype: torch.dtype, bits: int) -> None:
    x = tokens(torch.Generator().manual_seed(bits), 12, 96).to(dtype)
    x[5, 4] = float("nan")
    x[6, 9] = float("inf")
    x[7, ::2] = 0.25  # exact ties for some scales
    for fmt in ("packed", "int8", "fp8") if bits <= 4 else ("int8",):
        got = _tq(x, None, None, (0.8, 0.6), bits, fmt)
        assert_asym_equal(got, ref.transform_quant_asym_ref(x, None, None, (0.8, 0.6), bits, fmt))
        assert torch.isnan(got[1][5:7]).all() and (got[2][5:7] == 0).all()


@needs_interpreter
def test_kernel_ties_round_to_even() -> None:
    # range [-7.5, 7.5]: scale 1, zero = round(7.5) = 8; values k + 0.5 are exact ties
    x = torch.tensor([[7.5, -7.5, 0.5, -0.5, 1.5, -2.5, 0.0, 2.5]])
    q, s, z = _tq(x, None, None, 1.0, 4, "int8")
    assert q.tolist() == [[7, -8, 0, 0, 2, -2, 0, 2]] and s.item() == 1 and z.item() == 0
    assert_asym_equal((q, s, z), ref.transform_quant_asym_ref(x, None, None, 1.0, 4, "int8"))


@needs_interpreter
@pytest.mark.parametrize("reduce_axes", [False, True])
def test_kernel_with_an_exact_transform_is_bit_exact(reduce_axes: bool) -> None:
    from fq_kernels.triton.transform_quant import TQConfig

    g = torch.Generator().manual_seed(5)
    left, right = signed_permutation(8, g, 2.0), signed_permutation(16, g)
    x = torch.randint(-40, 60, (9, 128), generator=g).float() / 4
    x[2] = 0
    x[3, 1] = float("nan")
    cfg = TQConfig(num_warps=4, programs_per_sm=1, reduce_axes=reduce_axes)
    for fmt in ("packed", "int8"):
        got = _tq(x, left, right, (1.0, 0.9), 4, fmt, config=cfg)
        assert_asym_equal(got, ref.transform_quant_asym_ref(x, left, right, (1.0, 0.9), 4, fmt))


@needs_interpreter
@pytest.mark.parametrize("variant", ["kron", "heads"])
def test_kernel_with_an_orthogonal_transform_matches_within_rounding(variant: str) -> None:
    g = torch.Generator().manual_seed(6)
    left = random_orthogonal(6, g)
    right = random_orthogonal(10, g) if variant == "kron" else None
    x = torch.randn(8, 60, generator=g) * 3 + 1
    q, s, z = _tq(x, left, right, CLIP, 4, "int8")
    q_ref, s_ref, z_ref = ref.transform_quant_asym_ref(x, left, right, CLIP, 4, "int8")
    assert_quant_close(q, s, q_ref, s_ref, scale_rtol=1e-5, max_mismatch=0.02)
    assert (z - z_ref).abs().max() <= 1


def _asym_operands(m: int, k: int, n: int, g: torch.Generator):
    xv, zx, wv, sx, sw = _gemm_case(m, k, n, g)
    sx[m // 2] = float("nan")  # a non-finite token: NaN row, nothing else
    return xv, zx, wv, sx, sw, weight_sums(pack_int4(wv)), torch.randn(n, generator=g)


@needs_interpreter
@pytest.mark.parametrize(
    ("m", "split", "a_layout", "kernel", "unpack"),
    [
        (1, 1, "int8", "gemv", 0),  # the CUDA-core kernel: one token, signed nibbles
        (1, 3, "packed", "gemv", 0),
        (5, 1, "packed", "mma", 0),
        (5, 3, "packed", "mma", 1),
        (17, 3, "int8", "mma", 0),
        (17, 1, "int8", "mma", 1),
        (5, 3, "packed", "swap", 1),  # weights as the MMA's row operand
        (17, 1, "int8", "swap", 0),
        (5, 3, "int8", "swap", 2),  # nibbles times 16
        (17, 1, "packed", "mma", 2),
    ],
)
def test_packed_gemm_with_zero_points(m: int, split: int, a_layout: str, kernel: str, unpack: int) -> None:
    from fq_kernels.triton.gemm_packed import launch_packed

    g = torch.Generator().manual_seed(m + split)
    xv, zx, wv, sx, sw, wsum, bias = _asym_operands(m, 200, 33, g)
    a, wq = (xv if a_layout == "int8" else pack_int4(xv)), pack_int4(wv)
    cfg = small_packed_config(kernel, split, unpack)
    one = torch.ones(max(m, 33))
    out = launch_packed(a, wq, one, one, None, torch.empty(m, 33), cfg, zx=zx, wsum=wsum)
    assert torch.equal(out, ref.w4a4_linear_ref(xv, one[:m], wq, one[:33], None, torch.float32, zx, wsum))
    out = launch_packed(a, wq, sx, sw, bias, torch.empty(m, 33, dtype=torch.bfloat16), cfg, zx=zx, wsum=wsum)
    expected = ref.w4a4_linear_ref(xv, sx, wq, sw, bias, torch.bfloat16, zx, wsum)
    assert_epilogue_close(out, expected, epilogue_terms(xv, sx, wq, sw, bias, zx, wsum))


@needs_interpreter
@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("schedule", ["tma", "ptr"])
def test_prefill_gemm_with_zero_points(kind: str, schedule: str) -> None:
    from fq_kernels.triton.gemm_prefill import PrefillConfig, launch_prefill

    g = torch.Generator().manual_seed(7)
    m, n = 40, 50
    xv, zx, wv, sx, sw, wsum, bias = _asym_operands(m, 80, n, g)
    dt = torch.int8 if kind == "int8" else torch.float8_e4m3fn
    a, b = xv.to(dt), wv.to(dt)
    cfg = PrefillConfig(
        block_m=16, block_n=32, block_k=32, group_m=2, num_warps=4, num_stages=1, schedule=schedule
    )
    one = torch.ones(max(m, n))
    out = launch_prefill(a, b, one, one, None, torch.empty(m, n), cfg, zx=zx, wsum=wsum)
    assert torch.equal(out, ref.w4a4_linear_ref(xv, one[:m], wv, one[:n], None, torch.float32, zx, wsum))
    out = launch_prefill(a, b, sx, sw, bias, torch.empty(m, n, dtype=torch.float16), cfg, zx=zx, wsum=wsum)
    expected = ref.w4a4_linear_ref(xv, sx, wv, sw, bias, torch.float16, zx, wsum)
    assert_epilogue_close(out, expected, epilogue_terms(xv, sx, wv, sw, bias, zx, wsum))
    assert torch.isnan(out[m // 2]).all() and not torch.isnan(out[m // 2 + 1]).any()


@needs_interpreter
def test_ops_end_to_end_equal_the_float64_dequantised_product() -> None:
    from fq_kernels import ops

    g = torch.Generator().manual_seed(8)
    x = tokens(g, 6, 64).reshape(2, 3, 64)
    wv = torch.randint(-8, 8, (24, 64), generator=g, dtype=torch.int8)
    wq, sw, bias = pack_int4(wv), torch.rand(24, generator=g) * 0.1, torch.randn(24, generator=g)
    wsum = weight_sums(wq)
    fake = F.fake_quant(x, ASYM, (CLIP[0:1], CLIP[1:2])).double()
    expected = (fake @ (wv.double() * sw.double()[:, None]).T + bias.double()).float()
    layouts = {"packed": wq, "int8": prefill_weight(wq, "int8"), "fp8": prefill_weight(wq, "fp8")}
    for fmt, w in layouts.items():
        xq, sx, zx = ops.transform_quant_asym(x, None, None, CLIP, 4, fmt)
        assert zx.shape == sx.shape == (2, 3) and zx.dtype == torch.float32
        out = ops.w4a4_linear(xq, sx, w, sw, bias, torch.float32, zx, wsum)
        assert out.shape == (2, 3, 24)
        xv = ref.operand_values(xq, 64)
        terms = epilogue_terms(xv.to(torch.int8), sx, wq, sw, bias, zx, wsum)
        assert_epilogue_close(out.reshape(6, 24), expected.reshape(6, 24), terms)


def test_w4a4_linear_rejects_incomplete_zero_points() -> None:
    from fq_kernels import ops

    x8, wq = torch.zeros(2, 64, dtype=torch.int8), torch.zeros(4, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="both zx"):
        ops.w4a4_linear(x8, torch.ones(2), wq, torch.ones(4), zx=torch.zeros(2))
    with pytest.raises(ValueError, match="zx must have shape"):
        ops.w4a4_linear(x8, torch.ones(2), wq, torch.ones(4), zx=torch.zeros(3), wsum=torch.zeros(4))
    with pytest.raises(ValueError, match="wsum"):
        ops.w4a4_linear(x8, torch.ones(2), wq, torch.ones(4), zx=torch.zeros(2), wsum=torch.zeros(5))
    k = ref.ASYM_MAX_K + 2
    big_x, big_w = torch.zeros(1, k, dtype=torch.int8), torch.zeros(1, k // 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="exact up to K"):
        ops.w4a4_linear(big_x, torch.ones(1), big_w, torch.ones(1), zx=torch.zeros(1), wsum=torch.zeros(1))
