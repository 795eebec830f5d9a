"""KV-cache quantisation: asymmetric int4 per group of the last dim, packed two per byte.

A tensor [..., D] is a matrix of groups [R, G] (R = numel / G): each program takes BLOCK_R groups,
reduces min/max per row, and writes packed bytes [R, G/2], float32 scales and uint8 zero points
[R]. The input need not be contiguous: any view whose dims, taken in memory order, are rows of
contiguous values at one stride (a transposed attention tensor, a slice of the q|k|v projection, a
cache prefix) is read in place, and the outputs are laid out in that same order (`strided_rows`).
The rounding and clamping follow fq-core's asymmetric quantiser exactly (IEEE division, ties to
even), so the integers are bit-exact with `reference.quant_kv_ref`. Dequantisation is the inverse
layout: (q - zero) * scale in float32, cast to the output dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fq_kernels._runtime import next_pow2
from fq_kernels.strided import quant_kv_outputs, strided_rows
from fq_kernels.triton.common import div_rn_by_reciprocal, max_keep_nan, min_keep_nan, round_half_even


@triton.jit
def _quantize_groups(
    x, clip_ptr, G: tl.constexpr, BLOCK_R: tl.constexpr, BG: tl.constexpr, QMAX: tl.constexpr
):
    """(packed bytes [BLOCK_R, BG/2], scale, zero) of BLOCK_R groups x [BLOCK_R, BG] (float32, zero
    beyond G): fq-core's asymmetric quantiser, a group with a non-finite value gets NaN and zeros."""
    clip_max = tl.load(clip_ptr)
    clip_min = tl.load(clip_ptr + 1)
    xmax = tl.reduce(x, 1, max_keep_nan)  # NaN-keeping: a group with NaN or ±inf shows it here
    xmin = tl.reduce(x, 1, min_keep_nan)
    bad = ~((xmax < float("inf")) & (xmin > -float("inf")))
    xmax = tl.maximum(xmax, 0.0) * clip_max
    xmin = tl.minimum(xmin, 0.0) * clip_min
    empty = (xmin == 0.0) & (xmax == 0.0)
    xmin = tl.where(empty, -1.0, xmin)
    xmax = tl.where(empty, 1.0, xmax)
    scale = tl.math.div_rn(xmax - xmin, tl.zeros_like(xmax) + QMAX)
    zero = round_half_even(tl.math.div_rn(-xmin, scale))
    inv = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
    zero = tl.where(bad, 0.0, zero)
    # codes clamp to [0, QMAX] after adding the integer zero point: clamp the quotient to
    # [-zero, QMAX - zero] first instead (the same integers); a bad group's bounds are [0, 0]
    high = tl.where(bad, 0.0, QMAX - zero)
    v = tl.minimum(
        tl.maximum(div_rn_by_reciprocal(x, scale[:, None], inv[:, None]), -zero[:, None]), high[:, None]
    )
    q = round_half_even(v) + zero[:, None]
    scale = tl.where(bad, float("nan"), scale)
    lo, hi = tl.split(tl.reshape(q.to(tl.int32), [BLOCK_R, BG // 2, 2]))
    return (lo | (hi << 4)).to(tl.uint8), scale, zero.to(tl.uint8)


@triton.jit
def _quant_kv_kernel(
    x_ptr,
    clip_ptr,
    q_ptr,
    s_ptr,
    z_ptr,
    R,
    groups_per_row,
    row_stride,
    G: tl.constexpr,
    BG: tl.constexpr,
    BLOCK_R: tl.constexpr,
    QMAX: tl.constexpr,
):
    # Row indices in int32 (`_int32_rows`), so the per-row division by a runtime value is not a
    # 64-bit one (several times the instructions); offsets in int64.
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BG)
    row_mask = rows < R
    mask = row_mask[:, None] & (cols[None, :] < G)
    start = (rows // groups_per_row).to(tl.int64) * row_stride + (rows % groups_per_row) * G
    rows = rows.to(tl.int64)
    x = tl.load(x_ptr + start[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    byte, scale, zero = _quantize_groups(x, clip_ptr, G, BLOCK_R, BG, QMAX)
    pcols = tl.arange(0, BG // 2)
    tl.store(
        q_ptr + rows[:, None] * (G // 2) + pcols[None, :],
        byte,
        mask=row_mask[:, None] & (pcols[None, :] < G // 2),
    )
    tl.store(s_ptr + rows, scale, mask=row_mask)
    tl.store(z_ptr + rows, zero, mask=row_mask)


@triton.jit
def _quant_kv_into_kernel(
    x_ptr,
    clip_ptr,
    pos_ptr,
    q_ptr,
    s_ptr,
    z_ptr,
    H,
    T,
    sx_b,
    sx_h,
    sx_t,
    sq_b,
    sq_h,
    sq_l,
    ss_b,
    ss_h,
    ss_l,
    sz_b,
    sz_h,
    sz_l,
    GROUPS: tl.constexpr,
    G: tl.constexpr,
    BG: tl.constexpr,
    BLOCK_R: tl.constexpr,
    QMAX: tl.constexpr,
):
    """Groups of x [B, H, T, D] (any strides but the last) quantised straight into a cache
    [max_B, H, L, ...] at positions pos[t]: codes, scales and zeros each at their own strides.

    Grid (B x H, blocks of one sequence's T x GROUPS groups): a program's sequence and head are two
    scalars, and its rows' token and group come from a constexpr division, so no row pays for the
    runtime 64-bit divisions a flat row index would need."""
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # (token, group) within the sequence
    row_mask = r < T * GROUPS
    t = (r // GROUPS).to(tl.int64)
    group = r % GROUPS
    cols = tl.arange(0, BG)
    mask = row_mask[:, None] & (cols[None, :] < G)
    x_start = b * sx_b + h * sx_h + t * sx_t + group * G
    x = tl.load(x_ptr + x_start[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    byte, scale, zero = _quantize_groups(x, clip_ptr, G, BLOCK_R, BG, QMAX)
    pos = tl.load(pos_ptr + t, mask=row_mask, other=0).to(tl.int64)
    pcols = tl.arange(0, BG // 2)
    q_start = b * sq_b + h * sq_h + pos * sq_l + group * (G // 2)
    tl.store(
        q_ptr + q_start[:, None] + pcols[None, :], byte, mask=row_mask[:, None] & (pcols[None, :] < G // 2)
    )
    tl.store(s_ptr + b * ss_b + h * ss_h + pos * ss_l + group, scale, mask=row_mask)
    tl.store(z_ptr + b * sz_b + h * sz_h + pos * sz_l + group, zero, mask=row_mask)


@triton.jit
def _dequant_kv_kernel(
    q_ptr,
    s_ptr,
    z_ptr,
    out_ptr,
    R,
    groups_per_row,
    q_stride,
    s_stride,
    z_stride,
    G: tl.constexpr,
    BG: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # int32 for the division (as above)
    row_mask = rows < R
    pcols = tl.arange(0, BG // 2)
    pmask = row_mask[:, None] & (pcols[None, :] < G // 2)
    row, group = (rows // groups_per_row).to(tl.int64), rows % groups_per_row
    rows = rows.to(tl.int64)
    q_start = row * q_stride + group * (G // 2)
    byte = tl.load(q_ptr + q_start[:, None] + pcols[None, :], mask=pmask, other=0).to(tl.int32)
    scale = tl.load(s_ptr + row * s_stride + group, mask=row_mask, other=0.0)
    zero = tl.load(z_ptr + row * z_stride + group, mask=row_mask, other=0).to(tl.float32)
    lo = ((byte & 15).to(tl.float32) - zero[:, None]) * scale[:, None]
    hi = ((byte >> 4).to(tl.float32) - zero[:, None]) * scale[:, None]
    out = tl.reshape(tl.join(lo, hi), [BLOCK_R, BG])
    cols = tl.arange(0, BG)
    mask = row_mask[:, None] & (cols[None, :] < G)
    tl.store(out_ptr + rows[:, None] * G + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def _int32_rows(groups: int) -> int:
    """`groups`, checked to fit the kernels' int32 row index (2^31 groups: 512 GB of 128-wide
    groups in 16 bits, but a small group size of a large tensor could reach it)."""
    if groups >= 2**31:
        raise ValueError(f"the KV kernels take fewer than 2^31 groups, got {groups}: use a larger group size")
    return groups


def _blocks(group_size: int) -> tuple[int, int]:
    """(group width padded to a power of two, groups per program) of the KV kernels."""
    bg = max(2, next_pow2(group_size))
    return bg, max(1, min(64, 4096 // bg))


def launch_quant_kv(
    x: torch.Tensor, group_size: int, clip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q uint8 [..., D/2], scale float32 [..., D/G], zero uint8 [..., D/G]), laid out in x's memory
    order (module docstring); x is copied only when it is not rows at one stride."""
    layout = strided_rows(x)
    if layout is None:
        x = x.contiguous()
        layout = strided_rows(x)
    _, width, stride = layout
    q, scale, zero = quant_kv_outputs(x, group_size)
    r = _int32_rows(x.numel() // group_size)
    if r:
        bg, block_r = _blocks(group_size)
        _quant_kv_kernel[(triton.cdiv(r, block_r),)](
            x,
            clip,
            q,
            scale,
            zero,
            r,
            width // group_size,
            stride,
            G=group_size,
            BG=bg,
            BLOCK_R=block_r,
            QMAX=15,
            num_warps=4,
        )
    return q, scale, zero


def launch_quant_kv_into(
    x: torch.Tensor,
    group_size: int,
    clip: torch.Tensor,
    cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    positions: torch.Tensor,
) -> None:
    """Quantise x [B, H, T, D] (last dim contiguous) into cache (codes [max_B, H, L, D/2], scales and
    zeros [max_B, H, L, D/G]) at positions [T] of the first B sequences: one kernel, no copies."""
    b, h, t, d = x.shape
    groups = d // group_size
    if not b * h * t * groups:
        return
    codes, scales, zeros = cache
    bg, block_r = _blocks(group_size)
    block_r = min(block_r, max(2, next_pow2(t * groups)))  # a decode step: one token per program
    _quant_kv_into_kernel[(b * h, triton.cdiv(t * groups, block_r))](
        x,
        clip,
        positions,
        codes,
        scales,
        zeros,
        h,
        t,
        *x.stride()[:3],
        *codes.stride()[:3],
        *scales.stride()[:3],
        *zeros.stride()[:3],
        GROUPS=groups,
        G=group_size,
        BG=bg,
        BLOCK_R=block_r,
        QMAX=15,
        num_warps=4,
    )


def _rows_in_place(parts, group_size: int) -> list[tuple[list[int], int, int]] | None:
    """The layouts of (q, scale, zero) if the dequant kernel can read them in place: rows at a stride
    in their logical order, each row holding the same number of groups."""
    layouts = [strided_rows(t) for t in parts]
    for lay, t in zip(layouts, parts, strict=True):  # (where a size-1 dim sits in memory is moot)
        if lay is None or [i for i in lay[0] if t.shape[i] != 1] != [
            i for i in range(t.dim()) if t.shape[i] != 1
        ]:
            return None
    groups = layouts[0][1] * 2 // group_size
    return layouts if layouts[1][1] == groups and layouts[2][1] == groups else None


def launch_dequant_kv(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, out_dtype: torch.dtype
) -> torch.Tensor:
    """x [..., D] (contiguous) from quant_kv's outputs, read in place where `_rows_in_place` allows
    (a prefix of a cache's positions), else from contiguous copies."""
    d = q.shape[-1] * 2
    parts = (q, scale.to(torch.float32), zero)
    layouts = _rows_in_place(parts, group_size)
    if layouts is None:
        parts = tuple(t.contiguous() for t in parts)
        layouts = _rows_in_place(parts, group_size)
    out = torch.empty((*q.shape[:-1], d), dtype=out_dtype, device=q.device)
    r = _int32_rows(out.numel() // group_size)
    if r:
        bg, block_r = _blocks(group_size)
        _dequant_kv_kernel[(triton.cdiv(r, block_r),)](
            *parts,
            out,
            r,
            layouts[0][1] * 2 // group_size,
            *(stride for _, _, stride in layouts),
            G=group_size,
            BG=bg,
            BLOCK_R=block_r,
            num_warps=4,
        )
    return out
