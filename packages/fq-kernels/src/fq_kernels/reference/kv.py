"""Reference of the KV-cache quantiser: asymmetric 4-bit, one (scale, zero) per group of the last dim.

Matches fq-core's asymmetric quantiser (`fq_core.quant.functional`, which it calls): per group,
max = max(x, 0)·clip_max and min = min(x, 0)·clip_min (so the range holds 0), scale = (max - min)/15,
zero = round(-min / scale), q = clamp(round(x / scale) + zero, 0, 15); an all-zero group uses the
range [-1, 1]. Dequantisation: x ≈ (q - zero)·scale. Storage: q packed two per byte (fq-core's
nibble order, unsigned nibbles), scale float32, zero uint8 (0..15). A group holding NaN or ±inf
gets scale NaN, zero 0, q 0, so it dequantises to NaN.
"""

from __future__ import annotations

import torch

from fq_core.quant import functional as F
from fq_core.quant.pack import pack_int4, unpack_int4
from fq_core.quant.spec import QuantSpec
from fq_kernels.reference.activation import clip_pair

QuantizedKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(codes uint8 [..., D/2], scale float32 [..., D/G], zero uint8 [..., D/G]): what `quant_kv` returns."""


def kv_spec(group_size: int = 128, bits: int = 4) -> QuantSpec:
    return QuantSpec(bits=bits, symmetric=False, granularity="group", group_size=group_size)


def quant_kv_ref(
    x: torch.Tensor,
    group_size: int = 128,
    clip: torch.Tensor | float | tuple[float, float] = 1.0,
    bits: int = 4,
) -> QuantizedKV:
    """(q uint8 [..., D/2], scale float32 [..., D/G], zero uint8 [..., D/G]) for x [..., D]."""
    if bits != 4:
        raise ValueError(f"the KV cache is packed as int4: bits must be 4, got {bits}")
    d = x.shape[-1]
    if d % group_size or group_size % 2:
        raise ValueError(f"last dim {d} must be a multiple of an even group_size, got {group_size}")
    spec = kv_spec(group_size, bits)
    rows = x.reshape(-1, group_size).to(torch.float32)
    clip = clip_pair(clip, x.device)
    xmin, xmax = F.quant_range(rows, spec, (clip[0:1], clip[1:2]))
    scale, zero = F.scale_zero(xmin, xmax, spec)
    q = F.quantize(rows, scale, zero, spec)
    bad = ~torch.isfinite(rows).all(dim=1, keepdim=True)
    q = torch.where(bad, torch.zeros_like(q), q)
    zero = torch.where(bad, torch.zeros_like(zero), zero)
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    lead = x.shape[:-1]
    groups = d // group_size
    return (
        pack_int4(q.to(torch.uint8)).reshape(*lead, d // 2),
        scale.reshape(*lead, groups),
        zero.to(torch.uint8).reshape(*lead, groups),
    )


def dequant_kv_ref(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int = 128,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """x [..., D] = ((q - zero) * scale) in float32, cast to out_dtype."""
    d = q.shape[-1] * 2
    values = unpack_int4(q.reshape(-1, q.shape[-1]), signed=False).to(torch.float32).reshape(-1, group_size)
    out = F.dequantize(values, scale.reshape(-1, 1).to(torch.float32), zero.reshape(-1, 1).to(torch.float32))
    return out.to(out_dtype).reshape(*q.shape[:-1], d)


def kv_attention_ref(
    q: torch.Tensor,
    keys: QuantizedKV,
    values: QuantizedKV,
    lengths: torch.Tensor,
    group_size: int,
    scaling: float,
) -> torch.Tensor:
    """One query token per sequence attending over an int4 cache: out [B, Hq, D] in q's dtype.

    q [B, Hq, D]; keys / values: (codes [B, Hkv, S, D/2], scale, zero [B, Hkv, S, D/G]) as `quant_kv`
    writes them; lengths [B]: the cached positions each sequence attends to (the first `lengths[b]`,
    at least 1). Query head h reads kv head h // (Hq / Hkv) (grouped-query attention). Everything in
    float32 after dequantisation: the kernel must agree within its dot products' rounding.
    """
    hq = q.shape[1]
    hkv, s = keys[0].shape[1], keys[0].shape[2]
    k = dequant_kv_ref(*keys, group_size, torch.float32).repeat_interleave(hq // hkv, dim=1)
    v = dequant_kv_ref(*values, group_size, torch.float32).repeat_interleave(hq // hkv, dim=1)
    scores = torch.einsum("bhd,bhsd->bhs", q.float(), k) * scaling
    visible = torch.arange(s, device=q.device)[None, :] < lengths.to(q.device)[:, None]
    scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
    return torch.einsum("bhs,bhsd->bhd", scores.softmax(dim=-1), v).to(q.dtype)
