"""`FlatMLP`: a drop-in for a gated (SwiGLU-style) HF MLP with FlatQuant's two input sites."""

from __future__ import annotations

import torch
from torch import nn

from fq_core.adapters.base import DecoderAdapter
from fq_core.flat.config import FlatConfig
from fq_core.flat.linear import FlatLinear
from fq_core.flat.sites import InputSite


class FlatMLP(nn.Module):
    def __init__(
        self, mlp: nn.Module, adapter: DecoderAdapter, config: FlatConfig, generator: torch.Generator
    ):
        super().__init__()
        names = adapter.names
        self.act_fn = mlp.act_fn
        w, lwc = config.weight, config.lwc
        self.gate_proj = FlatLinear(getattr(mlp, names.gate), w, lwc)
        self.up_proj = FlatLinear(getattr(mlp, names.up), w, lwc)
        self.down_proj = FlatLinear(getattr(mlp, names.down), w, lwc)
        self.mlp_in = InputSite(self.gate_proj.in_features, config, generator)
        self.down_in = InputSite(self.down_proj.in_features, config, generator)
        self.fp = False
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp:
            if self.mlp_in.observing:
                self.mlp_in.observe(x)
            h = self.act_fn(self.gate_proj.forward_fp(x)) * self.up_proj.forward_fp(x)
            if self.down_in.observing:
                self.down_in.observe(h)
            return self.down_proj.forward_fp(h)
        xq = self.mlp_in(x)
        w_in = None if self.frozen else self.mlp_in.weight_map()
        h = self.act_fn(self.gate_proj(xq, w_in)) * self.up_proj(xq, w_in)
        return self.down_proj(self.down_in(h), None if self.frozen else self.down_in.weight_map())

    def weight_absmax_for_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Column |W| maxima for the SmoothQuant init: (gate+up for mlp_in, down for down_in)."""
        gate_up = torch.cat([self.gate_proj.weight, self.up_proj.weight]).abs().amax(0)
        return gate_up, self.down_proj.weight.abs().amax(0)

    @torch.no_grad()
    def freeze(self) -> torch.Tensor | None:
        """Merge transforms (float64) and quantise weights. down_in's channel scale is folded into
        up_proj's output rows (act(gate) * up * d == act(gate) * (up * d)); mlp_in's is returned for
        the caller to fold into the post-attention norm."""
        down_scale = None
        if self.down_in.transform is not None and self.down_in.transform.scale is not None:
            down_scale = self.down_in.transform.scale.detach().double()

        def scale_rows(weight: torch.Tensor, bias: torch.Tensor | None):
            return weight * down_scale[:, None], None if bias is None else bias * down_scale

        w_in = self.mlp_in.exact_weight_map()
        self.gate_proj.freeze(w_in)
        self.up_proj.freeze(w_in, None if down_scale is None else scale_rows)
        self.down_proj.freeze(self.down_in.exact_weight_map())
        for site in (self.down_in, self.mlp_in):
            if site.transform is not None:
                site.transform.freeze()
        scale = None
        if self.mlp_in.transform is not None and self.mlp_in.transform.scale is not None:
            scale = self.mlp_in.transform.scale.detach()
        for site in (self.down_in, self.mlp_in):
            if site.transform is not None:
                site.transform.scale = None
        self.frozen = True
        return scale
