"""A FlatQuant checkpoint's transform at each site, with its per-channel scale recovered.

Freezing a layer merges each site's channel scale d out of the online path: attn_in's into the input
norm and mlp_in's into the post-attention norm (norm weight * d), down_in's into up_proj's output
rows (act(gate) * up * d). Set against the FP model's norms and up_proj, the frozen layer gives d
back, so the transform can be applied, whole, to FP activations and weights. For down_in that is a
per-row least-squares fit through up_proj's quantised weights, accurate to their rounding noise.
"""

from __future__ import annotations

import torch
from torch import nn

from fq_core.adapters import get_adapter
from fq_core.quant.functional import to_reduction_view
from fq_core.quant.spec import QuantSpec
from fq_core.transforms import KroneckerAffine
from fq_eval.inspect.transforms import affine

CLIP_SAFE = 0.5
"""Learned weight clipping keeps at least this fraction of each side of a group's range in practice."""


def _ratio(merged: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """merged / base per channel (1 where the base weight is 0 and d cannot show)."""
    merged, base = merged.detach().double(), base.detach().double()
    return torch.where(base == 0, torch.ones_like(base), merged / base.where(base != 0, 1.0)).float()


def _row_scale(merged: torch.Tensor, base: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """d_j minimising ||merged_j - d_j base_j||^2 per row j over the values clipping cannot reach.

    `merged` is the stored weight: d_j base_j, clipped to a learned fraction (sigmoid, starting at
    0.98) of each quantisation group's range, then rounded. Rounding is unbiased, clipping is not:
    it shrinks a group's largest values, which dominate a least-squares fit. Fitting on the values
    inside CLIP_SAFE of their group's range on each side keeps only rounded ones.
    """
    merged, base = merged.detach().double(), base.detach().double()
    groups = to_reduction_view(base, spec)
    low, high = groups.amin(1, keepdim=True), groups.amax(1, keepdim=True)
    inside = ((groups > CLIP_SAFE * low) & (groups < CLIP_SAFE * high)).reshape(base.shape)
    base, merged = base * inside, merged * inside
    energy = base.pow(2).sum(1)
    fit = (merged * base).sum(1) / energy.where(energy > 0, 1.0)
    return torch.where(energy > 0, fit, torch.ones_like(fit)).float()


@torch.no_grad()
def learned_transforms(flat: nn.Module, fp: nn.Module, index: int) -> dict[str, KroneckerAffine]:
    """{site: KroneckerAffine} of decoder layer `index` of `flat` (a loaded flatquant checkpoint),
    scales recovered against `fp` (the same model unquantised)."""
    adapter = get_adapter(flat)
    names = adapter.names
    flat_layer, fp_layer = adapter.decoder_layers(flat)[index], adapter.decoder_layers(fp)[index]
    attention, mlp = getattr(flat_layer, names.attention), getattr(flat_layer, names.mlp)

    def norm_scale(norm: str) -> torch.Tensor:
        return _ratio(getattr(flat_layer, norm).weight, getattr(fp_layer, norm).weight)

    def site(transform: KroneckerAffine, scale: torch.Tensor) -> KroneckerAffine:
        return affine(transform.left, transform.right, scale)

    mlp_in = site(mlp.mlp_in.transform, norm_scale(names.post_attention_norm))
    fp_up = getattr(getattr(fp_layer, names.mlp), names.up).weight
    up_rows = _row_scale(mlp.up_proj.weight, mlp_in.transform_weight_exact(fp_up), mlp.up_proj.spec)
    return {
        "attn_in": site(attention.attn_in.transform, norm_scale(names.input_norm)),
        "o_in": affine(attention.o_in.heads, attention.v_out),
        "mlp_in": mlp_in,
        "down_in": site(mlp.down_in.transform, up_rows),
    }
