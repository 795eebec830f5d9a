"""The FP activations and weights at each online site of a decoder layer.

A site is the input shared by one or more linears (q/k/v share attn_in, gate/up share mlp_in). Its
weight is those linears' weights stacked along the output dim: the site's transform acts on all of
them alike, and a channel that is large in any of them matters to the shared activation scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fq_core.adapters import get_adapter

SITES = ("attn_in", "o_in", "mlp_in", "down_in")
SITE_LINEARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "attn_in": ("attention", ("q", "k", "v")),
    "o_in": ("attention", ("o",)),
    "mlp_in": ("mlp", ("gate", "up")),
    "down_in": ("mlp", ("down",)),
}
"""site -> (sub-module, linears): attribute names of `fq_core.adapters.base.LayerNames`."""


def site_linears(model: nn.Module, index: int, site: str) -> list[nn.Module]:
    """The linears of decoder layer `index` that read `site` (the first is the one hooked)."""
    adapter = get_adapter(model)
    names = adapter.names
    owner, linears = SITE_LINEARS[site]
    parent = getattr(adapter.decoder_layers(model)[index], getattr(names, owner))
    return [getattr(parent, getattr(names, linear)) for linear in linears]


def site_weight(model: nn.Module, index: int, site: str) -> torch.Tensor:
    """[sum of outputs, n] float32: the site's consumers' weights, stacked."""
    return torch.cat([linear.weight.detach().float() for linear in site_linears(model, index, site)])


class _Captured(Exception):
    """Raised by the deepest layer's last hook: the rest of the model is not needed."""


@torch.no_grad()
def capture_site_inputs(
    model: nn.Module, windows: torch.Tensor, layers: Sequence[int]
) -> dict[int, dict[str, torch.Tensor]]:
    """{layer: {site: X [tokens, n] float32}}: each site's input over `windows` [batch, seqlen].

    One forward pass of the (unquantised) model, stopped after the deepest requested layer's
    down_proj, which is the last linear of a decoder layer in every supported family.
    """
    captured: dict[int, dict[str, torch.Tensor]] = {index: {} for index in layers}
    last = (max(layers), SITES[-1])

    def hook_for(index: int, site: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            captured[index][site] = x.detach().reshape(-1, x.shape[-1]).float()
            if (index, site) == last:
                raise _Captured

        return hook

    handles = [
        site_linears(model, index, site)[0].register_forward_pre_hook(hook_for(index, site))
        for index in layers
        for site in SITES
    ]
    try:
        model(windows.to(next(model.parameters()).device), use_cache=False)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured
