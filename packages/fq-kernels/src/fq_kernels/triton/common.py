"""Small `@triton.jit` helpers shared by the kernels."""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def round_half_even(v):
    """Round float32 `v` to the nearest integer, ties to even, exactly like torch.round.

    Built from floor alone (the interpreter has no libdevice `rint`): v - floor(v) is exact for
    |v| < 2^23, so the tie test is exact too. Callers clamp `v` to a small range first.
    """
    f = tl.floor(v)
    frac = v - f
    odd = (f.to(tl.int32) & 1) == 1
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    return tl.where(up, f + 1.0, f)


@triton.jit
def rint(v, NATIVE: tl.constexpr):
    """Round half to even: one `cvt.rni` on the GPU (NATIVE), `round_half_even` in the interpreter."""
    if NATIVE:  # noqa: SIM108 (constexpr branches)
        r = libdevice.rint(v)
    else:
        r = round_half_even(v)
    return r


@triton.jit
def div_rn_by_reciprocal(y, scale, inv):
    """y / scale as IEEE division rounds it, given inv = 1 / scale (IEEE-rounded), in one multiply
    and two FMAs instead of a division per element.

    q = y·inv is within an ulp of the quotient, the FMA y - q·scale gives its residual exactly, and
    q + residual·inv (one more FMA) is then the correctly rounded quotient (Markstein's theorem;
    `test_div_rn_by_reciprocal_rounds_as_ieee_division` checks it on near-tie quotients).
    Exactness matters because the codes round the quotient: the reference divides, and a 2-ulp
    error flips a code at a tie.
    """
    q = y * inv
    return tl.fma(tl.fma(q, -scale, y), inv, q)  # -scale, not -q: negated once per scale, not per element


@triton.jit
def max_keep_nan(a, b):
    """Combine for `tl.reduce`: a maximum that returns NaN if either is NaN (one `max.NaN` each)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def min_keep_nan(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def nibbles_times_16(b, NATIVE: tl.constexpr):
    """(16 x low, 16 x high) signed nibbles of uint8 bytes, as int8: a nibble moved to the top of its
    byte with the rest zeroed is its signed value times 16, so on the GPU each half is one or two
    32-bit operations per four bytes (inline PTX on packed registers) and the products stay exact
    (|16 w a| <= 16 * 8 * 8; an int32 sum of them is shifted right by 4 at the end)."""
    if NATIVE:
        lo = tl.inline_asm_elementwise(
            "{ .reg .b32 t; shl.b32 t, $1, 4; and.b32 $0, t, 0xF0F0F0F0; }",
            "=r,r",
            [b],
            dtype=tl.int8,
            is_pure=True,
            pack=4,
        )
        hi = tl.inline_asm_elementwise(
            "and.b32 $0, $1, 0xF0F0F0F0;", "=r,r", [b], dtype=tl.int8, is_pure=True, pack=4
        )
    else:  # the same bytes, spelled out in int32 for the interpreter
        b32 = b.to(tl.int32)
        lo = ((((b32 << 4) & 0xF0) ^ 0x80) - 0x80).to(tl.int8)
        hi = (((b32 & 0xF0) ^ 0x80) - 0x80).to(tl.int8)
    return lo, hi


@triton.jit
def grouped_tile(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of a tile with GROUP_M row-tiles sharing each column sweep (L2 reuse of B)."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def scaled_tile(
    acc,
    offs_m,
    offs_n,
    M,
    N,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
):
    """float32 ((acc - zx[m] * wsum[n]) * sx[m]) * sw[n] (+ bias[n]) of one output tile, the
    zero-point term only for asymmetric activations (HAS_ZERO; exact: `fq_kernels.reference.gemm`)."""
    mask_m = offs_m < M
    mask_n = offs_n < N
    sx = tl.load(sx_ptr + offs_m, mask=mask_m, other=0.0)
    sw = tl.load(sw_ptr + offs_n, mask=mask_n, other=0.0)
    out = acc.to(tl.float32)
    if HAS_ZERO:
        zx = tl.load(zx_ptr + offs_m, mask=mask_m, other=0.0)
        wsum = tl.load(wsum_ptr + offs_n, mask=mask_n, other=0.0)
        out = out - zx[:, None] * wsum[None, :]
    out = out * sx[:, None] * sw[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)
        out = out + bias[None, :]
    return out


@triton.jit
def scaled_epilogue(
    acc,
    offs_m,
    offs_n,
    M,
    N,
    c_ptr,
    stride_cm,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
):
    """c = `scaled_tile` cast to c's dtype; RAW stores int32(acc)."""
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    if RAW:
        tl.store(c_ptrs, acc.to(tl.int32), mask=mask)
    else:
        out = scaled_tile(
            acc, offs_m, offs_n, M, N, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr, HAS_BIAS, HAS_ZERO
        )
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_epilogue(
    acc_gate,
    acc_up,
    offs_m,
    offs_n,
    M,
    N_OUT,
    c_ptr,
    stride_cm,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
):
    """c[m, j] = silu(gate) * up for gate = output column j and up = column N_OUT + j of the scaled
    GEMM (`scaled_tile`), rounded to c's dtype step by step as the unfused layer rounds: gate and up,
    silu(gate), the product (`fq_kernels.reference.gemm.swiglu_halves`)."""
    dtype = c_ptr.dtype.element_ty
    n = 2 * N_OUT
    gate = scaled_tile(
        acc_gate, offs_m, offs_n, M, N_OUT, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr, HAS_BIAS, HAS_ZERO
    )
    up = scaled_tile(
        acc_up, offs_m, offs_n + N_OUT, M, n, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr, HAS_BIAS, HAS_ZERO
    )
    gate = gate.to(dtype).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    out = (act * up.to(dtype).to(tl.float32)).to(dtype)
    mask = (offs_m < M)[:, None] & (offs_n < N_OUT)[None, :]
    tl.store(c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :], out, mask=mask)
