"""W4A4 GEMM for prompts, straight from the packed int4 weights: the tensor cores get 8-bit operands
made on chip, and no weight is ever stored one per byte.

The weights stay in the layout the decode kernel reads, tiles [N/16, K/64, 512]
(`fq_kernels.layout.tile_decode_weight`): byte 64 g + c of tile (r, s) holds weight row 16 r + g in
its low nibble and row 16 r + g + 8 in its high one, both at k = 64 s + c. Seen as a matrix of
*row pairs* p = 8 r + g (N/2 of them) by K, each byte is one (pair, k) entry, and for a block of
pairs and a multiple of 64 k the bytes lie in runs of 64 (one per pair and tile), so one
[pairs, K step] load brings a block of both rows' weights with plain vector loads.

Unpacking needs no shuffle: the low and high nibbles of that block are two [pairs, K step] int8
tiles of the same shape. A nibble moved to the top of its byte is its value times 16
(`triton.common.nibbles_times_16`: one or two 32-bit operations per four bytes), so the int32
accumulators hold 16 x the exact sums (|16 w a| <= 1024: exact for K < 2^21) and are shifted right
by 4 before the epilogue. The two tiles are interleaved into one [2 x pairs, K step] operand in
channel order (pair p's low row at 16 (p // 8) + p % 8, its high row 8 further), which is the order
of the MMA's register fragments (a thread holds rows r and r + 8): the interleave relabels
registers and moves no data (sm_90 SASS: no shared-memory round trip in the K loop), and one MMA per
K step covers both rows of every pair. (Concatenating the low tiles above the high ones instead
put a pair's rows in different warps below 64 pairs per program: 5-10x slower, H100, 2026-12-07.)

Operand roles: out^T = W A^T. The weights are the MMA's row operand, which Hopper's wgmma reads from
registers, where the nibbles were just unpacked (no round trip through shared memory; feeding
unpacked weights as the B operand, which must come from shared memory, halved the speed on the
H100: METHOD.md); the activations (int8 values, K contiguous) are the column operand, read from
shared memory as the 8-bit wgmma wants (K-major). The accumulator [channels, tokens] is transposed
once, in the epilogue.

The epilogue is the prefill kernel's (`triton.common`): per-token and per-channel scales, the
asymmetric zero-point term, bias, and SwiGLU (gate rows then up rows, N/2 each: a tile computes a
block of gate pairs and the up pairs N/4 pairs further, two dots over one activation tile).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fq_kernels import tuning
from fq_kernels._runtime import interpreting
from fq_kernels.layout import TILE_K, TILE_ROWS
from fq_kernels.triton.common import grouped_tile, nibbles_times_16, scaled_epilogue, swiglu_epilogue


@dataclass(frozen=True)
class TilesConfig:
    block_m: int = 128  # tokens per program (the MMA's column count)
    block_p: int = 64  # row pairs per program (2 x that many output channels)
    block_k: int = 128  # K per step, a multiple of 64
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 4


@triton.jit
def _rows_times_16(w, NATIVE: tl.constexpr):
    """[2 pairs, K step] int8: 16 x the weight rows of a [pairs, K step] block of packed bytes, in
    channel order: pair p's low row at 16 (p // 8) + p % 8, its high row 8 further. That is also the
    order of the MMA's register fragments (a thread holds rows r and r + 8), so the interleave is a
    relabelling of registers, not a data movement."""
    lo, hi = nibbles_times_16(w, NATIVE)
    pairs: tl.constexpr = w.shape[0]
    k: tl.constexpr = w.shape[1]
    both = tl.reshape(tl.join(lo, hi), (pairs // 8, 8, k, 2))
    return tl.reshape(tl.permute(both, 0, 3, 1, 2), (2 * pairs, k))


@triton.jit
def _tiles_kernel(
    a_ptr,
    w_ptr,
    c_ptr,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    M,
    N,
    K,
    stride_am,
    stride_cm,
    BM: tl.constexpr,
    BP: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    NATIVE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
    SWIGLU: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n_out = N // 2 if SWIGLU else N  # channels of the output (the gate half's, for SwiGLU)
    pairs = n_out // 2
    num_pid_m = tl.cdiv(M, BM)
    num_pid_p = tl.cdiv(pairs, BP)
    pid_m, pid_p = grouped_tile(pid, num_pid_m, num_pid_p, GROUP_M)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_p = pid_p * BP + tl.arange(0, BP)
    offs_k = tl.arange(0, BK)
    # Out-of-range tokens and pairs read row 0 (valid memory) and are masked at the store.
    rows_a = tl.where(offs_m < M, offs_m, 0).to(tl.int64)
    pair = tl.where(offs_p < pairs, offs_p, 0)
    tile_row_bytes = K.to(tl.int64) * 8  # 16 output rows over all of K: K/64 tiles of 512 bytes
    w_rows = (pair // 8).to(tl.int64) * tile_row_bytes + (pair % 8) * 64
    w_cols = (offs_k // 64) * 512 + offs_k % 64
    w_ptrs = w_ptr + w_rows[:, None] + w_cols[None, :]
    up_ptrs = w_ptrs + (n_out // 16) * tile_row_bytes  # SWIGLU: the up rows, n_out channels down
    a_ptrs = a_ptr + rows_a[:, None] * stride_am + offs_k[None, :]
    acc = tl.zeros((2 * BP, BM), dtype=tl.int32)
    acc_up = tl.zeros((2 * BP, BM), dtype=tl.int32)
    for ki in range(tl.cdiv(K, BK)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            w = tl.load(w_ptrs)
        else:  # K is a multiple of 64: the last step's tail is whole 64-byte runs
            k_mask = offs_k < K - ki * BK
            a = tl.load(a_ptrs, mask=k_mask[None, :], other=0)
            w = tl.load(w_ptrs, mask=k_mask[None, :], other=0)
        acc = tl.dot(_rows_times_16(w, NATIVE), a.T, acc, out_dtype=tl.int32)
        if SWIGLU:
            if EVEN_K:  # noqa: SIM108 (constexpr branches, one load each)
                w_up = tl.load(up_ptrs)
            else:
                w_up = tl.load(up_ptrs, mask=k_mask[None, :], other=0)
            acc_up = tl.dot(_rows_times_16(w_up, NATIVE), a.T, acc_up, out_dtype=tl.int32)
            up_ptrs += BK * 8
        a_ptrs += BK
        w_ptrs += BK * 8
    offs_n = pid_p * 2 * BP + tl.arange(0, 2 * BP)  # acc's rows are channels (`_rows_times_16`)
    acc = acc.T >> 4  # exact: a multiple of 16
    if SWIGLU:
        swiglu_epilogue(
            acc, acc_up.T >> 4, offs_m, offs_n, M, n_out, c_ptr, stride_cm,
            sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr, HAS_BIAS, HAS_ZERO,
        )  # fmt: skip
    else:
        scaled_epilogue(
            acc, offs_m, offs_n, M, N, c_ptr, stride_cm, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr,
            HAS_BIAS, HAS_ZERO, RAW,
        )  # fmt: skip


def fused_swiglu_ok(n: int) -> bool:
    """SwiGLU in this kernel's epilogue needs the up rows to start on a tile row (N/2 % 16 == 0)."""
    return n % (2 * TILE_ROWS) == 0


def launch_tiles(
    a: torch.Tensor,
    w: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: TilesConfig,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """out [M, N] = epilogue(a [M, K] @ wᵀ); a int8 values (K contiguous), w decode tiles
    uint8 [N/16, K/64, 512] (contiguous). raw: int32 accumulators (out int32); zx [M], wsum [N]:
    asymmetric activations' shifted zero points and the weights' row sums; swiglu: out [M, N/2] gets
    silu(gate) * up of the gate rows and the up rows (`fused_swiglu_ok(N)` must hold)."""
    m, k = a.shape
    n = w.shape[0] * TILE_ROWS
    if w.shape[1] * TILE_K != k:
        raise ValueError(f"activations hold K = {k}, the weight tiles K = {w.shape[1] * TILE_K}")
    if swiglu and not fused_swiglu_ok(n):
        raise ValueError(f"fused SwiGLU needs N % 32 == 0 (the up rows start on a tile row), got N = {n}")
    if m == 0 or n == 0:
        return out
    cfg = config
    if cfg.block_k % TILE_K:
        raise ValueError(f"block_k must be a multiple of {TILE_K}, got {cfg.block_k}")
    pairs = (n // 2 if swiglu else n) // 2
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(pairs, cfg.block_p),)
    _tiles_kernel[grid](
        a,
        w,
        out,
        sx,
        sw,
        *(t if t is not None else sw for t in (bias, zx, wsum)),  # absent: never read
        m,
        n,
        k,
        a.stride(0),
        out.stride(0),
        BM=cfg.block_m,
        BP=cfg.block_p,
        BK=cfg.block_k,
        GROUP_M=cfg.group_m,
        NATIVE=not interpreting(),
        HAS_BIAS=bias is not None,
        HAS_ZERO=zx is not None,
        RAW=raw,
        SWIGLU=swiglu,
        EVEN_K=k % cfg.block_k == 0,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out


def candidates(m: int, n: int, k: int, swiglu: bool = False) -> list[TilesConfig]:
    """Tile choices, the default first: the fastest of the H100 sweep (2026-12-07,
    docs/benchmarks/kernels.md) for this token count and shape class; tiles of 32 pairs (timed only
    before the channel-order interleave) follow, for autotuning and the next sweep. SwiGLU's tiles
    hold a gate and an up accumulator, so they take half the tokens or pairs (a 128 x 64 tile's two
    would spill)."""
    if interpreting():
        return [TilesConfig(block_m=16, block_p=16, block_k=128, group_m=2, num_warps=4, num_stages=1)]
    c = TilesConfig
    if swiglu:
        return [
            c(64, 64, 128, 8, 4, 4),
            c(64, 64, 256, 8, 4, 3),
            c(128, 32, 128, 8, 4, 4),
            c(64, 128, 128, 8, 8, 3),
        ]
    if m <= 64:  # weight-bound: small token tiles, deep K steps, many programs
        return [
            c(32, 64, 256, 8, 4, 4),
            c(16, 64, 256, 8, 4, 4),
            c(64, 64, 256, 8, 4, 4),
            c(64, 32, 256, 8, 4, 4),
        ]
    if m <= 256:
        if n >= 12288:
            return [c(128, 64, 128, 8, 4, 4), c(64, 128, 128, 8, 8, 3), c(64, 64, 256, 8, 4, 4)]
        if k > n:
            return [c(64, 64, 256, 8, 4, 4), c(64, 64, 128, 8, 4, 4), c(128, 64, 128, 8, 4, 4)]
        return [c(64, 64, 128, 8, 4, 3), c(128, 64, 128, 8, 4, 3), c(128, 32, 128, 8, 4, 4)]
    return [
        c(128, 64, 128, 8, 4, 4),
        c(128, 64, 128, 8, 4, 3),
        c(64, 128, 64, 8, 8, 4),
        c(64, 128, 128, 8, 8, 3),
        c(128, 32, 128, 8, 4, 4),
    ]


def launch_tuned(
    a: torch.Tensor,
    w: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """`launch_tiles` with the configuration from `candidates` (timed at first use if autotuning)."""
    m, k = a.shape
    n = w.shape[0] * TILE_ROWS
    key = ("tiles", 1 << max(m - 1, 0).bit_length(), n, k, out.dtype, raw, swiglu, zx is not None)

    def run(cfg: TilesConfig) -> torch.Tensor:
        return launch_tiles(a, w, sx, sw, bias, out, cfg, raw, zx, wsum, swiglu)

    return run(tuning.choose(key, candidates(m, n, k, swiglu), run))
