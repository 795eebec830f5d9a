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
    SWIGLU: tl.constexpr,
):
    """out = ((float32(acc) - zx[m] * wsum[n]) * sx[m]) * sw[n] (+ bias[n]) cast to c's dtype, the
    zero-point term only for asymmetric activations (HAS_ZERO; exact: `fq_kernels.reference.gemm`);
    RAW stores int32(acc). SWIGLU: columns are (gate, up) pairs and c [M, N/2] gets silu(gate) * up,
    rounded to c's dtype step by step as the unfused layer rounds (`reference.gemm.swiglu_pairs`)."""
    mask_m = offs_m < M
    mask_n = offs_n < N
    if RAW:
        c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, acc.to(tl.int32), mask=mask_m[:, None] & mask_n[None, :])
    else:
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
        dtype = c_ptr.dtype.element_ty
        if SWIGLU:
            BM: tl.constexpr = out.shape[0]
            BN: tl.constexpr = out.shape[1]
            gate, up = tl.split(tl.reshape(out.to(dtype).to(tl.float32), [BM, BN // 2, 2]))
            act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
            gate_cols, _ = tl.split(tl.reshape(offs_n, [BN // 2, 2]))
            cols = gate_cols // 2
            c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + cols[None, :]
            tl.store(c_ptrs, (act * up).to(dtype), mask=mask_m[:, None] & (cols < N // 2)[None, :])
        else:
            c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
            tl.store(c_ptrs, out.to(dtype), mask=mask_m[:, None] & mask_n[None, :])
