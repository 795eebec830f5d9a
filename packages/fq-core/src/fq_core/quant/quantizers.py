"""Quantiser modules with learnable clipping (LWC for weights, LAC for activations).

Clipping factors are sigmoid(theta) with theta initialised to 4.0 (sigmoid ~= 0.982), one pair
(for max and for min) per output channel for weights and one pair per quantiser for activations,
as in FlatQuant/OmniQuant. They are trained by calibration through the straight-through rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from fq_core.quant import functional as F
from fq_core.quant.spec import QuantSpec

CLIP_INIT = 4.0


class WeightQuantizer(nn.Module):
    """Fake-quantises a weight [out, in] per channel/group/tensor, with optional learnable clipping."""

    def __init__(self, spec: QuantSpec, out_features: int, learnable_clip: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.learnable_clip = learnable_clip
        if learnable_clip:
            if spec.granularity == "tensor":
                raise ValueError("learnable weight clipping is per output channel: use 'channel' or 'group'")
            self.clip_max = nn.Parameter(torch.full((out_features, 1), CLIP_INIT))
            self.clip_min = nn.Parameter(torch.full((out_features, 1), CLIP_INIT))

    def clip_factors(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Sigmoid clip factors broadcast to the (groups, 1) layout of `weight`'s ranges."""
        if not self.learnable_clip:
            return None
        groups_per_row = F.to_reduction_view(weight, self.spec).shape[0] // weight.shape[0]
        grow = lambda t: torch.sigmoid(t).repeat_interleave(groups_per_row, dim=0)  # noqa: E731
        return grow(self.clip_max), grow(self.clip_min)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return F.fake_quant(weight, self.spec, self.clip_factors(weight), clamp_to_range=self.learnable_clip)

    @torch.no_grad()
    def clipped(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight clamped into its learned clipping range (unchanged without LWC)."""
        if not self.learnable_clip:
            return weight
        rows = F.to_reduction_view(weight, self.spec)
        xmin, xmax = F.quant_range(weight, self.spec, self.clip_factors(weight))
        return torch.maximum(torch.minimum(rows, xmax), xmin).reshape(weight.shape)

    @torch.no_grad()
    def quantize_int(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer weights shaped like `weight` (int8 if symmetric, uint8 if asymmetric, so 8-bit
        values 0..255 fit), scales and zeros (shaped (groups, 1)).

        `F.dequantize(q.reshape(rows), scale, zero)` equals `self(weight)` exactly.
        """
        rows = F.to_reduction_view(weight, self.spec)
        clip = self.clip_factors(weight)
        xmin, xmax = F.quant_range(weight, self.spec, clip)
        if self.learnable_clip:
            rows = torch.maximum(torch.minimum(rows, xmax), xmin)
        scale, zero = F.scale_zero(xmin, xmax, self.spec)
        q = F.quantize(rows, scale, zero, self.spec)
        dtype = torch.int8 if self.spec.symmetric else torch.uint8
        return q.reshape(weight.shape).to(dtype), scale, zero


class ActivationQuantizer(nn.Module):
    """Fake-quantises activations, dynamically (per call) or statically (observed, then frozen).

    Static mode: while `observing` is True the quantiser passes values through and records the
    running range; `freeze()` turns that range into a fixed scale.
    """

    def __init__(self, spec: QuantSpec, learnable_clip: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.learnable_clip = learnable_clip
        if learnable_clip:
            self.clip_max = nn.Parameter(torch.full((1,), CLIP_INIT))
            self.clip_min = nn.Parameter(torch.full((1,), CLIP_INIT))
        if not spec.dynamic:
            if spec.granularity != "tensor":
                raise ValueError("static activation quantisation is per tensor: set granularity='tensor'")
            self.observing = True
            self.register_buffer("observed_min", torch.zeros(1, 1))
            self.register_buffer("observed_max", torch.zeros(1, 1))

    def clip_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        fixed = getattr(self, "fixed_clip", None)
        if fixed is not None:
            return fixed[0:1], fixed[1:2]
        if not self.learnable_clip:
            return None
        return torch.sigmoid(self.clip_max), torch.sigmoid(self.clip_min)

    @torch.no_grad()
    def set_clip_factors(self, max_factor: torch.Tensor, min_factor: torch.Tensor) -> None:
        """Use fixed clip factors in (0, 1] (e.g. loaded from a checkpoint) instead of learned ones.

        Stored as the factors themselves, not as logits, so a saved model reproduces bit-exactly.
        """
        self.learnable_clip = False
        self.clip_max = self.clip_min = None
        self.register_buffer(
            "fixed_clip", torch.stack([max_factor.reshape(()), min_factor.reshape(())]).float()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spec.enabled:
            return x
        if self.spec.dynamic:
            return F.fake_quant(x, self.spec, self.clip_factors())
        if self.observing:
            xmin, xmax = F.quant_range(x.detach(), self.spec)
            self.observed_min.copy_(torch.minimum(self.observed_min, xmin))
            self.observed_max.copy_(torch.maximum(self.observed_max, xmax))
            return x
        xmin, xmax = self.observed_min, self.observed_max
        clip = self.clip_factors()
        if clip is not None:
            xmin, xmax = xmin * clip[1], xmax * clip[0]
        scale, zero = F.scale_zero(xmin, xmax, self.spec)
        return F.fake_quant_static(x, self.spec, scale, zero)

    def freeze(self) -> None:
        """End observation: from now on the observed range gives a fixed scale."""
        if self.spec.dynamic:
            raise ValueError("freeze() is for static quantisers")
        self.observing = False
