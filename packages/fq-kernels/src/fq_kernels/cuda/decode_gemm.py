"""Launcher of `decode_gemm.cu`: the W4A4 decode GEMM on decode tiles (`fq_kernels.layout`).

One compiled variant per (configuration, token group size, output dtype, bias / zero point / raw),
cached for the process. `available(device)` compiles the default variant once and says whether
this machine can run the kernel at all (a CUDA GPU of compute capability 8.0 or newer and torch's
NVRTC wrapper); callers keep their Triton path when it cannot.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fq_kernels import tuning
from fq_kernels.cuda import nvrtc
from fq_kernels.cuda.launch import follows_marked, launch

OVERLAP_TRANSFORM_QUANT = True
"""Launch with programmatic dependent launch right after transform_quant (`fq_kernels.cuda.launch`)
where it was measured faster; the benchmarks switch it off to measure what it gains."""


@dataclass(frozen=True)
class TiledConfig:
    warps: int = 8  # warps per block, each a share of K (the block reduces them)
    tiles: int = 1  # 16-row tiles per block
    stages: int = 4  # 64-k steps per warp in flight (asynchronous copies into shared memory)


_OUT_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.int32: 0}


def ring_bytes(cfg: TiledConfig, tokens: int) -> int:
    """Dynamic shared memory of one block: every warp's copy ring (also holds the partial sums)."""
    return cfg.warps * cfg.stages * (cfg.tiles + tokens // 8) * 512


SOURCE, KERNEL = "decode_gemm.cu", "w4a4_decode_tiled"


def defines(
    cfg: TiledConfig, tokens: int, out_kind: int, bias: bool, zero: bool, raw: bool
) -> dict[str, int]:
    """The compile-time parameters of one variant (`decode_gemm.cu` lists them)."""
    return {
        "WARPS": cfg.warps,
        "NT": cfg.tiles,
        "STAGES": cfg.stages,
        "TOKENS": tokens,
        "OUT_KIND": out_kind,
        "HAS_BIAS": int(bias),
        "HAS_ZERO": int(zero),
        "RAW": int(raw),
    }


@functools.cache
def _kernel(cfg: TiledConfig, tokens: int, out_kind: int, bias: bool, zero: bool, raw: bool, device: int):
    variant = defines(cfg, tokens, out_kind, bias, zero, raw)
    return nvrtc.compile_kernel(SOURCE, KERNEL, variant, ring_bytes(cfg, tokens), device)


def available(device: torch.device | str) -> bool:
    """Whether the tiled decode kernel runs on `device` (compiled once per device to find out)."""
    return nvrtc.usable(device, _compile_default)


def _compile_default(device: int) -> object:
    return _kernel(TiledConfig(), 16, 1, False, False, False, device)


def launch_tiled(
    a: torch.Tensor,
    tiles: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: TiledConfig,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """out [M, N] = epilogue(a @ wᵀ); a int8 [M, K] (rows 16-byte aligned), tiles [N/16, K/64, 512]."""
    m, k = a.shape
    n = tiles.shape[0] * 16
    if m == 0:
        return out
    if a.stride(1) != 1 or a.stride(0) % 16 or a.data_ptr() % 16:
        a = a.clone(memory_format=torch.contiguous_format)
    tokens = 8 if m <= 8 else 16
    kernel = _kernel(
        config, tokens, _OUT_KIND[out.dtype], bias is not None, zx is not None, raw, a.device.index
    )
    grid = (-(-n // (16 * config.tiles)), -(-m // 16), 1)
    optional = [t if t is not None else sw for t in (bias, zx, wsum)]
    args = [tiles, a, out, sx, sw, *optional, m, n, k, a.stride(0), out.stride(0)]
    # the overlap measured slower on narrow layers (K > N) above one token (kernels.md, run L)
    overlap = follows_marked(a) and OVERLAP_TRANSFORM_QUANT and (n >= k or m == 1)
    launch(kernel, grid, (32 * config.warps, 1, 1), args, ring_bytes(config, tokens), a.device, overlap)
    return out


def candidates(m: int, n: int, k: int) -> list[TiledConfig]:
    """Configurations to try, the measured best for this shape class first (H200 sweep,
    docs/benchmarks/kernels.md): wide layers (N > K) two tiles per block of 4 warps with 6 steps in
    flight; otherwise 8 warps, one tile, 6 steps for up to 8 tokens, two tiles and 4 steps for 16
    tokens where K > N, 4 warps with 8 steps for 16 tokens on square layers."""
    if n > k:
        best = TiledConfig(4, 2, 6)
    elif m <= 8:
        best = TiledConfig(8, 1, 6)
    elif k > n:
        best = TiledConfig(8, 2, 4)
    else:
        best = TiledConfig(4, 1, 8)
    grid = [
        TiledConfig(8, 1, 4),
        TiledConfig(8, 1, 6),
        TiledConfig(4, 1, 6),
        TiledConfig(16, 1, 4),
        TiledConfig(8, 2, 4),
        TiledConfig(4, 2, 6),
        TiledConfig(4, 1, 8),
        TiledConfig(8, 1, 3),
    ]
    return [best, *(c for c in grid if c != best)]


def launch_tuned(
    a: torch.Tensor,
    tiles: torch.Tensor,
    sx: torch.Tensor,
    sw: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    raw: bool = False,
    zx: torch.Tensor | None = None,
    wsum: torch.Tensor | None = None,
) -> torch.Tensor:
    """`launch_tiled` with the configuration from `candidates` (timed at first use if autotuning)."""
    m, k = a.shape
    n = tiles.shape[0] * 16
    key = ("tiled", m if m <= 16 else 1 << (m - 1).bit_length(), n, k, raw)

    def run(cfg: TiledConfig) -> torch.Tensor:
        return launch_tiled(a, tiles, sx, sw, bias, out, cfg, raw, zx, wsum)

    return run(tuning.choose(key, candidates(m, n, k), run))
