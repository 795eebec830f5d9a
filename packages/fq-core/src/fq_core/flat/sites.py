"""Online sites: the places where an activation is transformed (maybe) and quantised at run time.

A layer has four linear-input sites (attn_in -> q/k/v, o_in -> o_proj, mlp_in -> gate/up,
down_in -> down_proj) and up to two cache sites (k_cache, v_cache). One activation quantiser per
site: the q/k/v (and gate/up) inputs are quantised once and shared, as a fused kernel would.
"""

from __future__ import annotations

import torch
from torch import nn

from fq_core.flat.config import FlatConfig
from fq_core.flat.linear import WeightMap
from fq_core.quant.quantizers import ActivationQuantizer
from fq_core.quant.spec import QuantSpec
from fq_core.transforms.affine import KroneckerAffine, smoothquant_scale
from fq_core.transforms.kronecker import apply_left, apply_right, kron_factors
from fq_core.transforms.matrices import Factor, FixedMatrix, frozen, learnable_factor
from fq_core.transforms.orthogonal import hadamard_like


def make_factor(n: int, config: FlatConfig, generator: torch.Generator) -> Factor:
    """A learnable factor for flatquant, a fixed Hadamard-like one for the hadamard baseline."""
    if config.method == "hadamard":
        return FixedMatrix(hadamard_like(n, generator))
    return learnable_factor(n, config.parametrization, generator)


class InputSite(nn.Module):
    """x -> quant((x * d) @ kron(L, R)) for one linear input (or quant(x) when untransformed)."""

    def __init__(self, size: int, config: FlatConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.transform: KroneckerAffine | None = None
        if config.has_transforms:
            n1, n2 = kron_factors(size)
            self.transform = KroneckerAffine(
                make_factor(n1, config, generator), make_factor(n2, config, generator), config.channel_scale
            )
        self.quant = ActivationQuantizer(config.act, learnable_clip=config.lac and config.act.enabled)
        self.observing = False
        self.register_buffer("act_absmax", None)

    def observe(self, x: torch.Tensor) -> None:
        """Record the per-channel |x| max (FP pass) for the SmoothQuant-style scale init."""
        absmax = x.detach().reshape(-1, x.shape[-1]).abs().amax(0).float()
        self.act_absmax = absmax if self.act_absmax is None else torch.maximum(self.act_absmax, absmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = self.transform(x)
        return self.quant(x)

    def weight_map(self) -> WeightMap | None:
        return None if self.transform is None else self.transform.transform_weight

    def exact_weight_map(self) -> WeightMap | None:
        return None if self.transform is None else self.transform.transform_weight_exact

    @torch.no_grad()
    def init_channel_scale(self, weight_absmax: torch.Tensor, alpha: float) -> None:
        if self.transform is None or self.transform.scale is None:
            return
        if self.act_absmax is None:
            raise RuntimeError("no activation statistics: run an FP pass with observing=True first")
        self.transform.scale.copy_(smoothquant_scale(weight_absmax.float(), self.act_absmax, alpha))
        self.act_absmax = None


class HeadsSite(nn.Module):
    """o_proj's input: only the heads factor runs online (head_dim factor is merged into v_proj)."""

    def __init__(self, num_heads: int, config: FlatConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.heads: Factor | None = (
            make_factor(num_heads, config, generator) if config.has_transforms else None
        )
        self.quant = ActivationQuantizer(config.act, learnable_clip=config.lac and config.act.enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.heads is not None:
            x = apply_left(x, self.heads.matrix().to(x.dtype))
        return self.quant(x)

    def freeze(self) -> None:
        if self.heads is not None:
            self.heads = frozen(self.heads)


class CacheSite(nn.Module):
    """A KV-cache quantiser on [batch, heads, seq, head_dim], after an optional head_dim transform."""

    def __init__(self, spec: QuantSpec, factor: Factor | None, learnable_clip: bool) -> None:
        super().__init__()
        self.factor = factor
        self.quant = ActivationQuantizer(spec, learnable_clip=learnable_clip and spec.enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor is not None:
            x = apply_right(x, self.factor.matrix().to(x.dtype))
        return self.quant(x)

    def freeze(self) -> None:
        if self.factor is not None:
            self.factor = frozen(self.factor)
