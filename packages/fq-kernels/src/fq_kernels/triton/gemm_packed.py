"""Decode GEMM: packed int4 weights [N, K/2] read once, unpacked in registers; bound by weight bytes.

For few tokens (M <= 16) the weights dominate the traffic, so they stay packed (a quarter of bf16)
and the ALU work of unpacking is what must stay small. With K split in byte pairs, the packed dot
needs no interleaving: sum_k a[k] w[k] = sum_j a[2j] w[2j] + a[2j+1] w[2j+1], i.e. one int8 dot of
the low nibbles plus one of the high nibbles, each against the even / odd activation columns.

Weight nibbles (`UNPACK`):
  0 signed: lo = ((b & 15) ^ 8) - 8, hi = b >> 4 (arithmetic), values -8..7;
  1 offset: u = b ^ 0x88, lo = u & 15, hi = u >> 4 hold w + 8 in 0..15 (no sign extension), and the
    accumulator is corrected by -8 * sum_k a[k] (exact integer algebra).
  2 times 16: a nibble moved to the top of its byte, the rest zeroed, is its signed value times 16:
    hi16 = b & 0xF0, lo16 = (b << 4) & 0xF0. On the GPU each is one or two 32-bit operations per four
    bytes (inline PTX on packed registers), where 0 and 1 take several per byte; the accumulator,
    16 times the product, is shifted right by 4 after the K loop (exact: |16 a w| <= 16 * 128 * 8,
    so K up to 2^17 stays inside int32).
Activations come as int8 values [M, K] (the decode path's activation kernel writes them: at M <= 16
they are a few KB) or packed like the weights (A_PACKED). Int8 activations are read either as two
strided loads, even and odd k, or (`a_contiguous`) as one contiguous row segment split in
registers: compiled for sm_90, the strided form issues 32 one-byte global loads and 32 one-byte
shared stores per thread per K step of a 128 x 128-byte tile; the contiguous one is copied
asynchronously with the weights.

Swapped operands (`swap`): out^T = W A^T, so the weight tile is the MMA's row operand (64-128 rows,
Hopper's wgmma size, its unpacked nibbles fed from registers) and the few tokens are its column
operand; the accumulator is transposed once, after the K loop.

Split-K (SPLIT_K > 1) spreads the K loop over more programs so that enough weight bytes are in
flight; the int32 partial sums meet in a workspace through integer atomics (exact and order-free),
and the last program of each tile (a per-tile counter says which) applies the epilogue and resets
workspace and counter to zero, so no memset launch is needed on the next call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fq_kernels import tuning
from fq_kernels._runtime import interpreting
from fq_kernels.triton.common import nibbles_times_16, scaled_epilogue
from fq_kernels.triton.workspace import Workspace


@dataclass(frozen=True)
class PackedConfig:
    block_m: int = 16
    block_n: int = 64
    block_kp: int = 256  # packed bytes per K step (= 2 x that many values)
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 4
    unpack: int = 0  # 0 signed, 1 offset, 2 times 16 (see module docstring)
    gemv: bool = False  # M == 1 only: CUDA-core kernel instead of tensor-core dots
    swap: bool = False  # weights as the MMA's row operand (see module docstring)
    a_contiguous: bool = False  # int8 activations: contiguous vector loads split in registers


@triton.jit
def _signed_nibbles(b):
    """(low, high) signed nibbles of uint8 bytes as int8."""
    b8 = b.to(tl.int8, bitcast=True)
    lo = ((b8 & 15) ^ 8) - 8
    hi = b8 >> 4
    return lo.to(tl.int8), hi.to(tl.int8)


@triton.jit
def _packed_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    ws_ptr,
    lock_ptr,
    M,
    N,
    KP,
    stride_am,
    stride_bn,
    stride_cm,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BKP: tl.constexpr,
    SPLIT_K: tl.constexpr,
    A_PACKED: tl.constexpr,
    A_CONTIGUOUS: tl.constexpr,
    UNPACK: tl.constexpr,
    SWAP: tl.constexpr,
    NATIVE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
):
    pid_mn = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_n = tl.cdiv(N, BN)
    pid_m = pid_mn // num_pid_n
    pid_n = pid_mn % num_pid_n
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_kp = tl.arange(0, BKP)
    rows_a = tl.where(offs_m < M, offs_m, 0).to(tl.int64)
    rows_b = tl.where(offs_n < N, offs_n, 0).to(tl.int64)
    k_steps = tl.cdiv(KP, BKP)
    per_split = tl.cdiv(k_steps, SPLIT_K)
    first = pid_k * per_split
    last = tl.minimum(first + per_split, k_steps)
    if SWAP:
        acc_t = tl.zeros((BN, BM), dtype=tl.int32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.int32)
    a_sum = tl.zeros((BM, BKP), dtype=tl.int32)  # reduced once after the loop
    for step in range(first, last):
        kp = step * BKP + offs_kp
        k_mask = kp < KP
        w = tl.load(b_ptr + rows_b[:, None] * stride_bn + kp[None, :], mask=k_mask[None, :], other=0)
        if A_PACKED:
            a = tl.load(a_ptr + rows_a[:, None] * stride_am + kp[None, :], mask=k_mask[None, :], other=0)
            a_lo, a_hi = _signed_nibbles(a)
        else:
            if A_CONTIGUOUS:
                # one row segment of 2 x BKP values (vector loads, pipelined), split in registers
                k = step * 2 * BKP + tl.arange(0, 2 * BKP)
                a_rows = a_ptr + rows_a[:, None] * stride_am + k[None, :]
                a = tl.load(a_rows, mask=(k < 2 * KP)[None, :], other=0)
                a_lo, a_hi = tl.split(tl.reshape(a, [BM, BKP, 2]))
            else:  # even and odd k as two strided loads (one byte each)
                a_base = a_ptr + rows_a[:, None] * stride_am + 2 * kp[None, :]
                a_lo = tl.load(a_base, mask=k_mask[None, :], other=0)
                a_hi = tl.load(a_base + 1, mask=k_mask[None, :], other=0)
        if UNPACK == 0:
            w_lo, w_hi = _signed_nibbles(w)
        elif UNPACK == 2:
            w_lo, w_hi = nibbles_times_16(w, NATIVE)
        else:
            u = w ^ 0x88
            w_lo = (u & 15).to(tl.int8)
            w_hi = (u >> 4).to(tl.int8)
            a_sum += a_lo.to(tl.int32) + a_hi.to(tl.int32)
        if SWAP:
            acc_t = tl.dot(w_lo, a_lo.T, acc_t, out_dtype=tl.int32)
            acc_t = tl.dot(w_hi, a_hi.T, acc_t, out_dtype=tl.int32)
        else:
            acc = tl.dot(a_lo, w_lo.T, acc, out_dtype=tl.int32)
            acc = tl.dot(a_hi, w_hi.T, acc, out_dtype=tl.int32)
    if SWAP:
        acc = acc_t.T
    if UNPACK == 2:
        acc = acc >> 4  # arithmetic shift of an exact multiple of 16
    if UNPACK == 1:
        # masked K bytes load as 0 -> u = 0x88 -> 8 + 8 in both nibbles, i.e. weight 0: consistent
        acc = acc - 8 * tl.sum(a_sum, axis=1)[:, None]
    _finish(
        acc,
        offs_m,
        offs_n,
        M,
        N,
        pid_mn,
        c_ptr,
        stride_cm,
        sx_ptr,
        sw_ptr,
        bias_ptr,
        zx_ptr,
        wsum_ptr,
        ws_ptr,
        lock_ptr,
        SPLIT_K,
        HAS_BIAS,
        HAS_ZERO,
        RAW,
    )


@triton.jit
def _finish(
    acc,
    offs_m,
    offs_n,
    M,
    N,
    tile,
    c_ptr,
    stride_cm,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    ws_ptr,
    lock_ptr,
    SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
):
    """Epilogue, directly (SPLIT_K == 1) or by the last of the tile's split-K programs."""
    if SPLIT_K == 1:
        scaled_epilogue(
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
            HAS_BIAS,
            HAS_ZERO,
            RAW,
        )
    else:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        ws_ptrs = ws_ptr + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
        tl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")
        tl.debug_barrier()
        arrived = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            total = tl.atomic_xchg(ws_ptrs, tl.zeros_like(acc), mask=mask, sem="acq_rel")
            tl.atomic_xchg(lock_ptr + tile, 0, sem="relaxed")
            scaled_epilogue(
                total,
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
                HAS_BIAS,
                HAS_ZERO,
                RAW,
            )


@triton.jit
def _gemv_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    ws_ptr,
    lock_ptr,
    N,
    KP,
    stride_bn,
    stride_cm,
    BN: tl.constexpr,
    BKP: tl.constexpr,
    SPLIT_K: tl.constexpr,
    A_PACKED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
):
    """One token (M == 1) without tensor cores: int32 multiply-adds on the unpacked nibbles, summed
    along K once after the loop, so no lane of an MMA is wasted on padding rows."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_kp = tl.arange(0, BKP)
    rows_b = tl.where(offs_n < N, offs_n, 0).to(tl.int64)
    k_steps = tl.cdiv(KP, BKP)
    per_split = tl.cdiv(k_steps, SPLIT_K)
    first = pid_k * per_split
    last = tl.minimum(first + per_split, k_steps)
    acc2 = tl.zeros((BN, BKP), dtype=tl.int32)
    for step in range(first, last):
        kp = step * BKP + offs_kp
        k_mask = kp < KP
        w = tl.load(b_ptr + rows_b[:, None] * stride_bn + kp[None, :], mask=k_mask[None, :], other=0)
        if A_PACKED:
            a_lo, a_hi = _signed_nibbles(tl.load(a_ptr + kp, mask=k_mask, other=0))
        else:
            a_lo = tl.load(a_ptr + 2 * kp, mask=k_mask, other=0)
            a_hi = tl.load(a_ptr + 2 * kp + 1, mask=k_mask, other=0)
        w_lo, w_hi = _signed_nibbles(w)
        acc2 += (
            w_lo.to(tl.int32) * a_lo.to(tl.int32)[None, :] + w_hi.to(tl.int32) * a_hi.to(tl.int32)[None, :]
        )
    acc = tl.reshape(tl.sum(acc2, axis=1), [1, BN])
    offs_m = tl.arange(0, 1)
    _finish(
        acc,
        offs_m,
        offs_n,
        1,
        N,
        pid_n,
        c_ptr,
        stride_cm,
        sx_ptr,
        sw_ptr,
        bias_ptr,
        zx_ptr,
        wsum_ptr,
        ws_ptr,
        lock_ptr,
        SPLIT_K,
        HAS_BIAS,
        HAS_ZERO,
        RAW,
    )


@triton.jit
def _dp4a(u, s, acc, NATIVE: tl.constexpr):
    """acc + the four products of u's unsigned bytes with s's signed bytes (int32 words): one PTX
    `dp4a` on the GPU, the same sum spelled out in the interpreter."""
    if NATIVE:
        out = tl.inline_asm_elementwise(
            "dp4a.u32.s32 $0, $1, $2, $3;", "=r,r,r,r", [u, s, acc], dtype=tl.int32, is_pure=True, pack=1
        )
    else:
        out = acc
        for i in tl.static_range(4):
            ub = (u >> (8 * i)) & 255
            sb = (s >> (8 * i)) & 255
            out += ub * (sb - ((sb & 128) << 1))
    return out


@triton.jit
def _byte_word(a_ptr, k, mask):
    """int32 word of the four int8 activations a[k], a[k + 2], a[k + 4], a[k + 6] (lowest byte first)."""
    word = tl.zeros(k.shape, tl.int32)
    for i in tl.static_range(4):
        byte = tl.load(a_ptr + k + 2 * i, mask=mask, other=0).to(tl.int32) & 255
        word |= byte << (8 * i)
    return word


@triton.jit
def _gemv_dp4a_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    ws_ptr,
    lock_ptr,
    N,
    KW,
    stride_bn,
    stride_cm,
    BN: tl.constexpr,
    BW: tl.constexpr,
    SPLIT_K: tl.constexpr,
    NATIVE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
):
    """One token (M == 1), int8 activations, weights read as int32 words of 8 nibbles.

    Unpacking is what bounds a CUDA-core GEMV: per word, `(w & 0x0F0F0F0F) ^ 0x08080808` gives the
    four even-k weights + 8 as unsigned bytes and the same of `w >> 4` the odd ones, and two `dp4a`
    multiply-add them against words of the even / odd activations: 6 integer instructions per 8
    products. The + 8 is undone once: acc -= 8 * sum(a) over this program's K range (exact).
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_w = tl.arange(0, BW)
    rows_b = tl.where(offs_n < N, offs_n, 0).to(tl.int64)
    w_steps = tl.cdiv(KW, BW)
    per_split = tl.cdiv(w_steps, SPLIT_K)
    first = pid_k * per_split
    last = tl.minimum(first + per_split, w_steps)
    acc2 = tl.zeros((BN, BW), dtype=tl.int32)
    a_sum = tl.zeros((BW,), dtype=tl.int32)
    for step in range(first, last):
        kw = step * BW + offs_w
        w_mask = kw < KW
        w = tl.load(b_ptr + rows_b[:, None] * stride_bn + kw[None, :], mask=w_mask[None, :], other=0)
        lo = (w & 0x0F0F0F0F) ^ 0x08080808
        hi = ((w >> 4) & 0x0F0F0F0F) ^ 0x08080808
        a_even = _byte_word(a_ptr, 8 * kw, w_mask)
        a_odd = _byte_word(a_ptr, 8 * kw + 1, w_mask)
        acc2 = _dp4a(lo, tl.broadcast_to(a_even[None, :], (BN, BW)), acc2, NATIVE)
        acc2 = _dp4a(hi, tl.broadcast_to(a_odd[None, :], (BN, BW)), acc2, NATIVE)
        a_sum += _dp4a(tl.full((BW,), 0x01010101, tl.int32), a_even, tl.zeros((BW,), tl.int32), NATIVE)
        a_sum += _dp4a(tl.full((BW,), 0x01010101, tl.int32), a_odd, tl.zeros((BW,), tl.int32), NATIVE)
    acc = tl.sum(acc2, axis=1) - 8 * tl.sum(a_sum, axis=0)
    acc = tl.reshape(acc, [1, BN])
    offs_m = tl.arange(0, 1)
    _finish(
        acc,
        offs_m,
        offs_n,
        1,
        N,
        pid_n,
        c_ptr,
        stride_cm,
        sx_ptr,
        sw_ptr,
        bias_ptr,
        zx_ptr,
        wsum_ptr,
        ws_ptr,
        lock_ptr,
        SPLIT_K,
        HAS_BIAS,
        HAS_ZERO,
        RAW,
    )


WORKSPACE = Workspace(torch.int32)


def launch_packed(
    a: torch.Tensor,
    b: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: PackedConfig,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """out [M, N] = epilogue(a @ unpack(b)ᵀ); b packed uint8 [N, K/2]; a int8 [M, K] or packed [M, K/2].

    zx [M], wsum [N] (float32): asymmetric activations' shifted zero points and the weights' row sums.
    """
    m = a.shape[0]
    n, kp = b.shape
    if m == 0 or n == 0:
        return out
    cfg = config
    a_packed = a.dtype == torch.uint8
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n)
    split = max(1, min(cfg.split_k, triton.cdiv(kp, cfg.block_kp)))
    if cfg.gemv and m == 1:
        tiles = triton.cdiv(n, cfg.block_n)
    if split > 1:
        ws, locks = WORKSPACE.get(out.device, m * n, tiles)
    else:
        ws = locks = sw  # unused
    if cfg.gemv and m == 1 and not a_packed and kp % 4 == 0:
        words = kp // 4  # block_kp is a multiple of 4: the split matches the byte-wise one above
        _gemv_dp4a_kernel[(tiles, split)](
            a,
            b.view(torch.int32),
            out,
            sx,
            sw,
            bias if bias is not None else sw,
            zx if zx is not None else sw,
            wsum if wsum is not None else sw,
            ws,
            locks,
            n,
            words,
            b.stride(0) // 4,
            out.stride(0),
            BN=cfg.block_n,
            BW=cfg.block_kp // 4,
            SPLIT_K=split,
            NATIVE=not interpreting(),
            HAS_BIAS=bias is not None,
            HAS_ZERO=zx is not None,
            RAW=raw,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
        return out
    if cfg.gemv and m == 1:
        _gemv_kernel[(tiles, split)](
            a,
            b,
            out,
            sx,
            sw,
            bias if bias is not None else sw,
            zx if zx is not None else sw,
            wsum if wsum is not None else sw,
            ws,
            locks,
            n,
            kp,
            b.stride(0),
            out.stride(0),
            BN=cfg.block_n,
            BKP=cfg.block_kp,
            SPLIT_K=split,
            A_PACKED=a_packed,
            HAS_BIAS=bias is not None,
            HAS_ZERO=zx is not None,
            RAW=raw,
            num_warps=cfg.num_warps,
            num_stages=cfg.num_stages,
        )
        return out
    _packed_kernel[(tiles, split)](
        a,
        b,
        out,
        sx,
        sw,
        bias if bias is not None else sw,
        zx if zx is not None else sw,
        wsum if wsum is not None else sw,
        ws,
        locks,
        m,
        n,
        kp,
        a.stride(0),
        b.stride(0),
        out.stride(0),
        BM=cfg.block_m,
        BN=cfg.block_n,
        BKP=cfg.block_kp,
        SPLIT_K=split,
        A_PACKED=a_packed,
        A_CONTIGUOUS=cfg.a_contiguous,
        UNPACK=cfg.unpack,
        SWAP=cfg.swap,
        NATIVE=not interpreting(),
        HAS_BIAS=bias is not None,
        HAS_ZERO=zx is not None,
        RAW=raw,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out


def candidates(m: int, n: int, kp: int) -> list[PackedConfig]:
    """Configurations for the decode GEMM, the measured best first (docs/benchmarks/kernels.md)."""
    if interpreting():
        return [PackedConfig(16, 16, 32, split_k=2, num_warps=4, num_stages=1, swap=m <= 16)]  # as on the GPU
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    grid = [
        (128, 128, 8, 4, 4, 1),  # best at M = 16 on the H100 before `swap` (run C)
        (64, 128, 8, 4, 4, 1),
        (64, 256, 4, 4, 4, 1),
        (128, 128, 4, 4, 4, 0),
        (64, 256, 4, 4, 4, 0),
        (32, 256, 8, 4, 4, 1),
        (128, 256, 2, 8, 3, 1),
        (64, 128, 4, 4, 4, 0),
        (32, 512, 4, 4, 3, 1),
        (32, 256, 2, 4, 4, 1),
        (32, 128, 4, 4, 4, 1),
        (16, 256, 4, 4, 4, 1),
    ]
    # M = 16 on the H200 (docs/benchmarks/kernels.md, run I): 128 x 128 byte tiles, split-K 4 where
    # N >= K (4096 x 11008 / 14336), 128 x 64 with split-K 8 where K > N (the down projections)
    wide, deep = (128, 128, 4, 4, 4, 2), (128, 64, 8, 4, 4, 2)
    swapped = [
        *((deep, wide) if 2 * kp > n else (wide, deep)),
        (64, 128, 8, 4, 4, 2),
        (128, 128, 8, 4, 4, 2),
        (64, 256, 4, 4, 4, 2),
        (64, 128, 8, 4, 4, 1),  # best at M = 16 on every 7B/8B shape on the H100 (run F: 1.3-1.4x run C's)
        (64, 256, 4, 4, 4, 1),
        (128, 128, 4, 4, 4, 1),
        (128, 128, 8, 4, 4, 1),
        (128, 256, 4, 4, 3, 1),
        (128, 64, 8, 4, 4, 1),
    ]
    # contiguous activation loads: compiled for sm_90 they need far fewer memory instructions, not
    # yet timed on the GPU, so they follow the measured defaults (autotuning and sweeps reach them)
    tried = [(c, True, False) for c in swapped] + [(c, True, True) for c in swapped[:3]]
    tried = [t for t in tried if m <= 16] + [(c, False, False) for c in grid]
    out = []
    if m == 1:
        # The CUDA-core kernel beat every tensor-core configuration at M = 1 on the H100 (run B of
        # docs/benchmarks/kernels.md) and was exact there on adversarial sums (4 shapes, 4 configs).
        for bn, bkp, split, warps, stages in (
            (32, 256, 4, 4, 3),
            (64, 128, 4, 4, 3),
            (16, 256, 4, 4, 3),
            (32, 512, 2, 8, 3),
        ):
            split = max(1, min(split, triton.cdiv(kp, bkp)))
            out.append(PackedConfig(1, bn, bkp, split, warps, stages, 0, gemv=True))
    for (bn, bkp, split, warps, stages, unpack), swap, contiguous in tried:
        split = max(1, min(split, triton.cdiv(kp, bkp)))
        cfg = PackedConfig(block_m, bn, bkp, split, warps, stages, unpack, swap=swap, a_contiguous=contiguous)
        out.append(cfg)
    return out


def launch_tuned(
    a: torch.Tensor,
    b: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """`launch_packed` with the configuration from `candidates` (timed at first use if autotuning)."""
    m = a.shape[0]
    n, kp = b.shape
    key = ("packed", m if m <= 16 else 1 << (m - 1).bit_length(), n, kp, a.dtype, raw)

    def run(cfg: PackedConfig) -> torch.Tensor:
        return launch_packed(a, b, sx, sw, bias, out, cfg, raw, zx, wsum)

    return run(tuning.choose(key, candidates(m, n, kp), run))
