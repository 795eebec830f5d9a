"""Views the KV kernels read and write in place: rows of contiguous values at one stride.

Attention tensors reach the KV-cache kernels as views: a head-major [B, heads, T, D] transpose of a
token-major projection (with the q|k|v slices' gaps), or the first T positions of a cache. Each is,
with its dims taken in memory order, a matrix of rows of `width` contiguous values `stride` apart,
which a kernel can address as (row, column) without a copy; its outputs then follow that same
memory order, so a transposed input gives equally transposed outputs.
"""

from __future__ import annotations

import itertools

import torch


def strided_rows(x: torch.Tensor) -> tuple[list[int], int, int] | None:
    """(order, width, stride): x's dims in memory order (the last dim last) and, in that order, x as
    rows of `width` contiguous elements `stride` elements apart; None if x is not such a view."""
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        return None
    order = [*sorted(range(x.dim() - 1), key=lambda i: -x.stride(i)), x.dim() - 1]
    dims = [(x.shape[i], x.stride(i)) for i in order if x.shape[i] != 1]  # (size, stride), outer first
    width = 1
    while dims and dims[-1][1] == width:  # the dense tail
        width *= dims.pop()[0]
    for (_, outer), (size, inner) in itertools.pairwise(dims):  # the rest must fold into one row index
        if outer != inner * size:
            return None
    return order, width, dims[-1][1] if dims else width


def empty_in_order(shape: list[int], order: list[int], dtype: torch.dtype, device) -> torch.Tensor:
    """An empty tensor of `shape` whose memory follows `order` (its dims permuted back into place)."""
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return torch.empty([shape[i] for i in order], dtype=dtype, device=device).permute(inverse)


def quant_kv_outputs(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty (q, scale, zero) for x, laid out in x's memory order (as the kernel writes them)."""
    lead, d = list(x.shape[:-1]), x.shape[-1]
    order = (strided_rows(x) or (list(range(x.dim())),))[0]
    return (
        empty_in_order([*lead, d // 2], order, torch.uint8, x.device),
        empty_in_order([*lead, d // group_size], order, torch.float32, x.device),
        empty_in_order([*lead, d // group_size], order, torch.uint8, x.device),
    )
