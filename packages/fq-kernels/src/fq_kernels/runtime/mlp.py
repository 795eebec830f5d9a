"""`Int4MLP`: a gated MLP whose three linears are int4 GEMMs (gate and up fused: one shared input)."""

from __future__ import annotations

import torch
from torch import nn

from fq_kernels.quant_linear import QuantLinear
from fq_kernels.runtime.elementwise import Activation, gated_activation


class Int4MLP(nn.Module):
    """down(act(gate(x)) * up(x)); each QuantLinear applies its site's online transform and clipping.

    swiglu: act is SiLU, so a prompt's gate|up GEMM applies it in its epilogue
    (`QuantLinear.forward(x, swiglu=True)`); a decode step's runs it as the fused elementwise pass
    after the GEMM. Plain `nn.Linear`s (or the FP8 baseline's linears) in place of the QuantLinears
    give the static decoder's baselines."""

    def __init__(
        self,
        act_fn: Activation,
        gate_up_proj: QuantLinear | nn.Linear,
        down_proj: QuantLinear | nn.Linear,
        swiglu: bool = False,
    ) -> None:
        super().__init__()
        self.act_fn = act_fn
        self.gate_up_proj = gate_up_proj
        self.down_proj = down_proj
        self.swiglu = swiglu and isinstance(gate_up_proj, QuantLinear)

    def activated(self, x: torch.Tensor, gated: Activation | None = None) -> torch.Tensor:
        """act(gate(x)) * up(x), the down projection's input; `gated` replaces `gated_activation`
        (the static decoder passes its compiled form)."""
        proj = self.gate_up_proj
        if self.swiglu and proj.fuses_swiglu(x.numel() // x.shape[-1]):
            return proj(x, swiglu=True)
        return (gated or gated_activation)(self.act_fn, proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.activated(x))
