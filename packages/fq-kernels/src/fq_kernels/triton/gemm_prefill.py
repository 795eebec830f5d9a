"""Prefill GEMM: int4 *values* stored as int8 or fp8 e4m3, so the tensor cores read them straight
from shared memory (wgmma on Hopper), with the scale epilogue fused.

Hopper has no int4 tensor cores, and unpacking nibbles in registers right before `tl.dot` takes the
operands off the shared-memory wgmma path (half speed, measured; docs/benchmarks/kernels.md). So for
compute-bound token counts the activation kernel writes int8/fp8 values and the weights are unpacked
once at load. Exactness is unchanged:

- int8 x int8 accumulates in int32: exact;
- fp8 x fp8 products of int4 values are exact and fp32 sums of integers stay exact below 2^24,
  but Hopper's fp8 wgmma accumulates internally with fewer mantissa bits unless partial sums are
  promoted to a float32 accumulator: `imprecise` = None or 0 uses Triton's fast default, which was
  measured WRONG on large sums (docs/benchmarks/kernels.md); an integer n promotes every n products
  (the default 128 was exact on every probe, and is ~20% slower than int8, so prefill stores int8).

Two schedules, same math: `tma` (persistent grid over output tiles, operands through the TMA copy
engine, zero-filled out of bounds) and `ptr` (one program per tile, masked pointer loads; any
alignment). Both use GROUP_M tile grouping for L2 reuse and the same epilogue.

A third, fp8 only: `scaled_mm`, the library's fp8 GEMM (`torch._scaled_mm` with one scale per token
and one per channel: cuBLASLt's on Hopper). Without fast accumulation it promotes partial sums to
float32 like the `imprecise` = 128 kernel above, and it was exact on the GPU tests' adversarial
int4 sums (`test_every_prefill_candidate_is_exact_with_the_reference_epilogue`, H200). Its epilogue
has no zero-point term or SwiGLU and rounds a bias to the output type, so calls with any of those
run the first Triton kernel instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from fq_kernels import tuning
from fq_kernels._runtime import interpreting, sm_count
from fq_kernels.triton.common import grouped_tile, scaled_epilogue, swiglu_epilogue


@dataclass(frozen=True)
class PrefillConfig:
    block_m: int = 128
    block_n: int = 256
    block_k: int = 128
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    schedule: str = "tma"  # "tma" (persistent), "ptr" or "scaled_mm" (fp8 only; tiles unused)
    imprecise: int | None = 128  # fp8 only: promote to the float32 accumulator every n products


@triton.jit
def _mma(a, b, acc, IS_FP8: tl.constexpr, IMPRECISE: tl.constexpr):
    """acc += a @ bᵀ (b is the [BN, BK] weight tile, K-major as wgmma wants for 8-bit types)."""
    if IS_FP8:
        if IMPRECISE == 0:  # noqa: SIM108 (constexpr branches, one dot each)
            acc = tl.dot(a, b.T, acc)
        else:
            acc = tl.dot(a, b.T, acc, max_num_imprecise_acc=IMPRECISE)
    else:
        acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
    return acc


@triton.jit
def _epilogue(
    acc,
    acc_up,
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
    """The scale epilogue of a tile, or SwiGLU of its gate and up accumulators (`triton.common`)."""
    if SWIGLU:
        n_out = N // 2
        swiglu_epilogue(
            acc, acc_up, offs_m, offs_n, M, n_out, c_ptr, stride_cm,
            sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr, HAS_BIAS, HAS_ZERO,
        )  # fmt: skip
    else:
        scaled_epilogue(
            acc, offs_m, offs_n, M, N, c_ptr, stride_cm, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr,
            HAS_BIAS, HAS_ZERO, RAW,
        )  # fmt: skip


@triton.jit
def _prefill_tma_kernel(
    a_desc,
    b_desc,
    c_ptr,
    sx_ptr,
    sw_ptr,
    bias_ptr,
    zx_ptr,
    wsum_ptr,
    M,
    N,
    K,
    stride_cm,
    num_progs,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    IS_FP8: tl.constexpr,
    IMPRECISE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
    SWIGLU: tl.constexpr,
):
    start = tl.program_id(0)
    # SWIGLU: a tile is BN gate columns and the BN up columns N/2 rows further down the weights
    n_tiled = N // 2 if SWIGLU else N
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(n_tiled, BN)
    k_tiles = tl.cdiv(K, BK)
    num_tiles = num_pid_m * num_pid_n
    acc_dtype = tl.float32 if IS_FP8 else tl.int32
    # The epilogue recomputes its tile from its own counter so that the pipeliner, which flattens
    # the two loops, can overlap the next tile's loads with this tile's stores.
    tile_c = start - num_progs
    for tile_id in tl.range(start, num_tiles, num_progs, flatten=True):
        pid_m, pid_n = grouped_tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BM
        off_n = pid_n * BN
        acc = tl.zeros((BM, BN), dtype=acc_dtype)
        acc_up = tl.zeros((BM, BN), dtype=acc_dtype)
        for ki in range(k_tiles):
            a = a_desc.load([off_m, ki * BK])
            b = b_desc.load([off_n, ki * BK])
            acc = _mma(a, b, acc, IS_FP8, IMPRECISE)
            if SWIGLU:
                b_up = b_desc.load([off_n + n_tiled, ki * BK])
                acc_up = _mma(a, b_up, acc_up, IS_FP8, IMPRECISE)
        tile_c += num_progs
        pid_m_c, pid_n_c = grouped_tile(tile_c, num_pid_m, num_pid_n, GROUP_M)
        offs_m = pid_m_c * BM + tl.arange(0, BM)
        offs_n = pid_n_c * BN + tl.arange(0, BN)
        _epilogue(
            acc, acc_up, offs_m, offs_n, M, N, c_ptr, stride_cm, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr,
            HAS_BIAS, HAS_ZERO, RAW, SWIGLU,
        )  # fmt: skip


@triton.jit
def _prefill_ptr_kernel(
    a_ptr,
    b_ptr,
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
    stride_bn,
    stride_cm,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    IS_FP8: tl.constexpr,
    IMPRECISE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    RAW: tl.constexpr,
    SWIGLU: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n_tiled = N // 2 if SWIGLU else N  # as in the TMA kernel
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(n_tiled, BN)
    pid_m, pid_n = grouped_tile(pid, num_pid_m, num_pid_n, GROUP_M)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    # Out-of-range rows/columns read row 0 (valid memory) and are masked at the store.
    rows_a = tl.where(offs_m < M, offs_m, 0).to(tl.int64)
    rows_b = tl.where(offs_n < n_tiled, offs_n, 0).to(tl.int64)
    a_ptrs = a_ptr + rows_a[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + rows_b[:, None] * stride_bn + offs_k[None, :]
    up_ptrs = b_ptrs + n_tiled * stride_bn
    acc = tl.zeros((BM, BN), dtype=tl.float32 if IS_FP8 else tl.int32)
    acc_up = tl.zeros((BM, BN), dtype=tl.float32 if IS_FP8 else tl.int32)
    for ki in range(tl.cdiv(K, BK)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_mask = offs_k < K - ki * BK
            a = tl.load(a_ptrs, mask=k_mask[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_mask[None, :], other=0.0)
        acc = _mma(a, b, acc, IS_FP8, IMPRECISE)
        if SWIGLU:
            if EVEN_K:  # noqa: SIM108 (constexpr branches, one load each)
                b_up = tl.load(up_ptrs)
            else:
                b_up = tl.load(up_ptrs, mask=k_mask[None, :], other=0.0)
            acc_up = _mma(a, b_up, acc_up, IS_FP8, IMPRECISE)
            up_ptrs += BK
        a_ptrs += BK
        b_ptrs += BK
    _epilogue(
        acc, acc_up, offs_m, offs_n, M, N, c_ptr, stride_cm, sx_ptr, sw_ptr, bias_ptr, zx_ptr, wsum_ptr,
        HAS_BIAS, HAS_ZERO, RAW, SWIGLU,
    )  # fmt: skip


def _tma_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    """TMA needs 16-byte aligned bases and row strides (K bytes here: int8/fp8 are 1 byte)."""
    return (
        a.stride(0) % 16 == 0 and b.stride(0) % 16 == 0 and a.data_ptr() % 16 == 0 and b.data_ptr() % 16 == 0
    )


def launch_prefill(
    a: torch.Tensor,
    b: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: PrefillConfig,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
    swiglu: bool = False,
) -> torch.Tensor:
    """out [M, N] = epilogue(a [M, K] @ b [N, K]ᵀ); a and b both int8 or both fp8, last dim contiguous.

    raw=True writes the int32 accumulators instead (out must be int32): the exactness checks use it.
    zx [M], wsum [N] (float32): asymmetric activations' shifted zero points and the weights' row sums.
    swiglu: b's rows are gate then up rows (N/2 each) and out [M, N/2] gets silu(gate) * up
    (`reference.gemm`): a tile computes block_n / 2 gate columns and the matching up columns.
    """
    m, n = a.shape[0], b.shape[0]
    if m == 0 or n == 0:
        return out
    if config.schedule == "scaled_mm":
        if not swiglu and _scaled_mm_ok(a, b, bias, zx, out):
            return _launch_scaled_mm(a, b, sx, sw, out, raw)
        # what the library's epilogue cannot do: the first Triton kernel for this problem
        config = next(c for c in candidates(m, n, a.shape[1], True) if c.schedule != "scaled_mm")
    if out.element_size() == 4 and config.block_m * config.block_n > 128 * 128:
        # a 4-byte output tile needs twice the epilogue scratch of bf16: keep the tile within smem
        config = replace(config, block_n=128)
    while True:
        try:
            return _launch(a, b, sx, sw, bias, zx, wsum, out, config, raw, swiglu)
        except triton.runtime.errors.OutOfResources:
            if config.num_stages <= 2:
                raise
            config = replace(config, num_stages=config.num_stages - 1)


def _scaled_mm_ok(a, b, bias, zx, out) -> bool:
    """torch._scaled_mm takes these operands: fp8 rows with 16-byte aligned strides and sizes, no
    bias or zero points, a contiguous output, on an fp8 tensor-core GPU. (Its CPU implementation
    scales with ~0.4% error even into float32, so the CPU keeps the Triton kernels.)"""
    if a.dtype != torch.float8_e4m3fn or bias is not None or zx is not None or not out.is_contiguous():
        return False
    if not a.is_cuda or torch.cuda.get_device_capability(a.device) < (8, 9):
        return False
    return a.shape[1] % 16 == 0 and b.shape[0] % 16 == 0 and _tma_ok(a, b)


def _launch_scaled_mm(a, b, sx, sw, out, raw: bool) -> torch.Tensor:
    """out = (a @ bᵀ) * sx[m] * sw[n] by torch._scaled_mm; raw: the integer sums (unit scales and a
    float32 result, exact below 2^24, then converted)."""
    m, n = a.shape[0], b.shape[0]
    if raw:
        ones_m = torch.ones((m, 1), dtype=torch.float32, device=a.device)
        ones_n = torch.ones((1, n), dtype=torch.float32, device=a.device)
        return out.copy_(torch._scaled_mm(a, b.t(), ones_m, ones_n, out_dtype=torch.float32))
    scale_a, scale_b = sx[:m].reshape(m, 1), sw[:n].reshape(1, n)
    return torch._scaled_mm(a, b.t(), scale_a, scale_b, out_dtype=out.dtype, out=out)


def _launch(
    a, b, sx, sw, bias, zx, wsum, out, config: PrefillConfig, raw: bool, swiglu: bool
) -> torch.Tensor:
    m, k = a.shape
    n = b.shape[0]
    is_fp8 = a.dtype == torch.float8_e4m3fn
    imprecise = 0 if (config.imprecise is None or not is_fp8) else min(config.imprecise, config.block_k)
    # absent operands point at sw: never read (their constexpr flag is off)
    optional = [t if t is not None else sw for t in (bias, zx, wsum)]
    cfg = config
    # SwiGLU: each tile is block_n / 2 gate columns plus their up columns (two dots of half width)
    bn, n_tiled = (cfg.block_n // 2, n // 2) if swiglu else (cfg.block_n, n)
    common = {
        "BM": cfg.block_m,
        "BN": bn,
        "BK": cfg.block_k,
        "GROUP_M": cfg.group_m,
        "IS_FP8": is_fp8,
        "IMPRECISE": imprecise,
        "HAS_BIAS": bias is not None,
        "HAS_ZERO": zx is not None,
        "RAW": raw,
        "SWIGLU": swiglu,
        "num_warps": cfg.num_warps,
        "num_stages": cfg.num_stages,
    }
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n_tiled, bn)
    if cfg.schedule == "tma" and _tma_ok(a, b):
        from triton.tools.tensor_descriptor import TensorDescriptor

        a_desc = TensorDescriptor.from_tensor(a, [cfg.block_m, cfg.block_k])
        b_desc = TensorDescriptor.from_tensor(b, [bn, cfg.block_k])
        progs = min(tiles, sm_count(a))
        _prefill_tma_kernel[(progs,)](
            a_desc, b_desc, out, sx, sw, *optional, m, n, k, out.stride(0), progs, **common
        )
    else:
        _prefill_ptr_kernel[(tiles,)](
            a,
            b,
            out,
            sx,
            sw,
            *optional,
            m,
            n,
            k,
            a.stride(0),
            b.stride(0),
            out.stride(0),
            EVEN_K=k % cfg.block_k == 0,
            **common,
        )
    return out


def candidates(m: int, n: int, k: int, fp8: bool) -> list[PrefillConfig]:
    """Tile choices by problem size, the measured best first (H100; docs/benchmarks/kernels.md)."""
    if interpreting():
        return [PrefillConfig(block_m=16, block_n=32, block_k=32, group_m=2, num_warps=4, num_stages=1)]
    c = PrefillConfig
    library = [c(schedule="scaled_mm")] if fp8 else []
    if m <= 256:  # (the library's fp8 GEMM not yet timed here)
        return [
            c(128, 128, 128, 8, 4, 4, "tma"),
            c(64, 128, 128, 8, 4, 4, "tma"),
            c(128, 128, 128, 8, 8, 4, "tma"),
            *library,
        ]
    return [
        *library,  # exact, and the fastest fp8 GEMM at M = 2048 on the H200 (kernels.md run O)
        c(128, 128, 128, 8, 4, 3, "ptr"),  # best at M = 2048 on the H200 (2026-12-03, kernels.md run M)
        c(128, 256, 128, 8, 8, 4, "tma"),  # best or within 1% at M >= 2048 on the H100 (2026-11-23 run)
        c(128, 256, 128, 8, 8, 3, "tma"),
        c(128, 128, 128, 8, 4, 4, "tma"),
        c(128, 256, 128, 8, 8, 3, "ptr"),
        c(256, 128, 128, 8, 8, 3, "tma"),
        *library,
    ]


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
    swiglu: bool = False,
) -> torch.Tensor:
    """`launch_prefill` with the configuration from `candidates` (timed at first use if autotuning)."""
    m, k = a.shape
    n = b.shape[0]
    fp8 = a.dtype == torch.float8_e4m3fn
    key = ("prefill", 1 << max(m - 1, 0).bit_length(), n, k, a.dtype, out.dtype, raw, swiglu)

    def run(cfg: PrefillConfig) -> torch.Tensor:
        return launch_prefill(a, b, sx, sw, bias, out, cfg, raw, zx, wsum, swiglu)

    return run(tuning.choose(key, candidates(m, n, k, fp8), run))
