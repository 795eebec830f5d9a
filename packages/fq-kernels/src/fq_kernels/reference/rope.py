"""Reference of `fq_kernels.rope_map`: rotary position embedding, then an optional per-head map.

    y   = x * cos + rotate_half(x) * sin          (transformers' `apply_rotary_pos_emb`, in x's dtype)
    out = y @ map                                  (per head; map cast to x's dtype), or y

x [B, T, H, D] (any strides), cos / sin [B or 1, T, D]; out [B, T, H, D], contiguous (token-major,
as the projection that produced x). The map is the KV cache's key transform (P_k for keys, P_k^-T for
queries; docs/architecture.md), applied after RoPE as fq-core's frozen attention does.

The kernel computes the rotation in float32 and rounds once where this rounds after each product
and the sum, so in 16-bit types the two may differ by about one unit in the last place; in float32
they agree to rounding.
"""

from __future__ import annotations

import torch

from fq_core.transforms.kronecker import apply_right


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[-x2, x1] of x = [x1, x2] along the last dim (the rotation's partner of each element)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_map_ref(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_map: torch.Tensor | None = None
) -> torch.Tensor:
    c, s = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)
    y = x * c + rotate_half(x) * s
    if head_map is not None:
        y = apply_right(y, head_map.to(y.dtype))
    return y.contiguous()
