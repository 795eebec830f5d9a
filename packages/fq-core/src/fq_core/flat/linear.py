"""`FlatLinear`: a linear layer whose weight is transformed and fake-quantised.

Before freezing, the weight is re-transformed on every call so gradients reach the transform and
the clipping factors (this is what calibration trains). `freeze()` does it once, in float64, keeps
the integer weights, scales and zeros for export, and from then on the layer is a plain linear with
the dequantised weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fq_core.quant.functional import dequantize, to_reduction_view
from fq_core.quant.gptq import gptq_quantize
from fq_core.quant.quantizers import WeightQuantizer
from fq_core.quant.spec import QuantSpec

WeightMap = Callable[[torch.Tensor], torch.Tensor]
OutputMap = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


class FlatLinear(nn.Module):
    def __init__(self, linear: nn.Linear, spec: QuantSpec, learnable_clip: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        self.quantizer = WeightQuantizer(spec, self.out_features, learnable_clip and spec.enabled)
        self.frozen = False
        self.hessian: torch.Tensor | None = None
        """Set (by calibration) to E[x x^T] of this layer's inputs to freeze with GPTQ instead of RTN."""

    @property
    def spec(self) -> QuantSpec:
        return self.quantizer.spec

    def forward_fp(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def forward(
        self, x: torch.Tensor, weight_in: WeightMap | None = None, output_map: OutputMap | None = None
    ) -> torch.Tensor:
        """weight_in: transform of the input dim (inverse of the activation transform);
        output_map: transform of the output dim (and bias), e.g. v_proj's head_dim factor."""
        if self.frozen:
            return F.linear(x, self.weight, self.bias)
        weight, bias = self.weight, self.bias
        if weight_in is not None:
            weight = weight_in(weight)
        if output_map is not None:
            weight, bias = output_map(weight, bias)
        weight = self.quantizer(weight)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @torch.no_grad()
    def freeze(self, weight_in: WeightMap | None = None, output_map: OutputMap | None = None) -> None:
        """Merge the (float64) transforms into the weight, quantise it once and keep the integers.

        The maps given here must be the exact float64 versions of those used in `forward`.
        """
        if self.frozen:
            raise RuntimeError("FlatLinear is already frozen")
        dtype = self.weight.dtype
        weight = self.weight.double()
        bias = None if self.bias is None else self.bias.double()
        if weight_in is not None:
            weight = weight_in(weight)
        if output_map is not None:
            weight, bias = output_map(weight, bias)
        weight = weight.float()
        if self.spec.enabled:
            q, scale, zero = self.quantizer.quantize_int(weight)
            if self.hessian is not None:
                clipped = self.quantizer.clipped(weight)
                groups = scale.reshape(self.out_features, -1)
                q = gptq_quantize(
                    clipped, self.hessian, groups, zero.reshape(self.out_features, -1), self.spec
                )
                q = q.to(torch.int8 if self.spec.symmetric else torch.uint8)
                self.hessian = None
            self.register_buffer("qweight", q)
            self.register_buffer("scale", scale.reshape(self.out_features, -1))
            self.register_buffer("zero", zero.reshape(self.out_features, -1))
            weight = self.dequantized()
        self.weight = weight.to(dtype)
        self.bias = None if bias is None else bias.to(dtype)
        self.frozen = True

    def dequantized(self) -> torch.Tensor:
        """The fake-quantised weight from the stored integers, scales and zeros."""
        rows = to_reduction_view(self.qweight.float(), self.spec)
        scale = self.scale.reshape(-1, 1).float()
        zero = self.zero.reshape(-1, 1).float()
        return dequantize(rows, scale, zero).reshape(self.out_features, self.in_features)
