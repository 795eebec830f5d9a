"""RoPE and the per-head key / query map in one pass over q or k (`fq_kernels.reference.rope`).

Without it a prompt's RoPE is a compiled elementwise kernel whose dynamic-shape index arithmetic
costs 77 us per layer at 2048 tokens (48 us compiled for one shape; docs/benchmarks/decode.md,
session 12), and the key map two more cuBLAS GEMMs. Here each program takes BT tokens of one head
straight from the q|k|v projection's output (any token/head strides), rotates its two halves in
float32, rounds to the input type as the unfused layer does, and applies the map as two tensor-core
dots (top and bottom half of the map) before a token-major store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fq_kernels import tuning
from fq_kernels._runtime import next_pow2


@dataclass(frozen=True)
class RopeConfig:
    block_t: int = 16  # tokens per program (of one head)
    num_warps: int = 4


def candidates(rows: int, mapped: bool = True) -> list[RopeConfig]:
    """Configurations for `rows` tokens, with or without the head map, the measured best first
    (H200 sweep, docs/benchmarks/decode.md, session 13: 2048 tokens x 32 heads). With the map, 64
    tokens per program (each program reads the 32 KB map once per 64 tokens, not per 16: 19.1
    against 37.5 us) and 4 warps (8 warps: 38.9 us); without it, 32 tokens (7.6 us). A decode
    step's few tokens take 16, the least a dot takes."""
    if rows < 256:
        return [RopeConfig(16, 4)]
    if mapped:
        return [
            RopeConfig(64, 4),
            RopeConfig(128, 8),
            RopeConfig(64, 8),
            RopeConfig(32, 4),
            RopeConfig(16, 4),
        ]
    return [RopeConfig(32, 4), RopeConfig(64, 8), RopeConfig(16, 4), RopeConfig(64, 4), RopeConfig(128, 8)]


@triton.jit
def _rope_map_kernel(
    x_ptr,
    cos_ptr,
    sin_ptr,
    map_ptr,
    out_ptr,
    R,
    T,
    H,
    stride_xb,
    stride_xt,
    stride_xh,
    stride_cb,
    stride_ct,
    HALF: tl.constexpr,
    BH: tl.constexpr,
    BT: tl.constexpr,
    HAS_MAP: tl.constexpr,
    IEEE: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BT + tl.arange(0, BT)
    head = tl.program_id(1)
    cols = tl.arange(0, BH)
    mask = (rows < R)[:, None] & (cols < HALF)[None, :]
    b, t = rows // T, rows % T
    x_row = x_ptr + b * stride_xb + t * stride_xt + head * stride_xh
    c_row = b * stride_cb + t * stride_ct
    x1 = tl.load(x_row[:, None] + cols[None, :], mask=mask, other=0.0)
    x2 = tl.load(x_row[:, None] + HALF + cols[None, :], mask=mask, other=0.0)
    dtype = x1.dtype
    cos1 = tl.load(cos_ptr + c_row[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_ptr + c_row[:, None] + HALF + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_ptr + c_row[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sin2 = tl.load(sin_ptr + c_row[:, None] + HALF + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y1 = (x1.to(tl.float32) * cos1 - x2.to(tl.float32) * sin1).to(dtype)
    y2 = (x2.to(tl.float32) * cos2 + x1.to(tl.float32) * sin2).to(dtype)
    out_row = out_ptr + (rows * H + head) * (2 * HALF)
    if HAS_MAP:
        # y @ map, by output half j: y1 @ map[:HALF, half j] + y2 @ map[HALF:, half j]
        half_mask = (cols < HALF)[:, None] & (cols < HALF)[None, :]
        for j in tl.static_range(2):
            out_cols = j * HALF + cols[None, :]
            top = tl.load(map_ptr + cols[:, None] * (2 * HALF) + out_cols, mask=half_mask, other=0.0)
            bottom = tl.load(
                map_ptr + (HALF + cols[:, None]) * (2 * HALF) + out_cols, mask=half_mask, other=0.0
            )
            if IEEE:
                acc = tl.dot(y1, top.to(dtype), input_precision="ieee")
                acc = tl.dot(y2, bottom.to(dtype), acc, input_precision="ieee")
            else:
                acc = tl.dot(y1, top.to(dtype))
                acc = tl.dot(y2, bottom.to(dtype), acc)
            tl.store(out_row[:, None] + out_cols, acc.to(dtype), mask=mask)
    else:
        tl.store(out_row[:, None] + cols[None, :], y1, mask=mask)
        tl.store(out_row[:, None] + HALF + cols[None, :], y2, mask=mask)


def launch_rope_map(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    head_map: torch.Tensor | None,
    config: RopeConfig | None = None,
) -> torch.Tensor:
    """out [B, T, H, D] (contiguous) of x [B, T, H, D] (last dim contiguous), cos / sin [B, T, D]
    (last dim contiguous; a stride-0 batch broadcasts), head_map [D, D] or None. `config` None:
    the first candidate, or the fastest with FQ_KERNELS_AUTOTUNE=1."""
    b, t, h, d = x.shape
    out = torch.empty((b, t, h, d), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    half = d // 2
    rows = b * t
    if config is None:
        key = ("rope_map", rows, h, d, head_map is not None, x.dtype)
        configs = candidates(rows, head_map is not None)
        config = tuning.choose(key, configs, lambda c: launch_rope_map(x, cos, sin, head_map, c))
    maps = head_map.to(x.dtype).contiguous() if head_map is not None else cos  # (the reference's cast)
    grid = (triton.cdiv(rows, config.block_t), h)
    _rope_map_kernel[grid](
        x,
        cos,
        sin,
        maps,
        out,
        rows,
        t,
        h,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        cos.stride(0),
        cos.stride(1),
        HALF=half,
        BH=max(next_pow2(half), 16),
        BT=config.block_t,
        HAS_MAP=head_map is not None,
        IEEE=x.dtype == torch.float32,
        num_warps=config.num_warps,
    )
    return out
