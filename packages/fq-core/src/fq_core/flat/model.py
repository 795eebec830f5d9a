"""`quantize_(model, FlatConfig(...))`: turn an HF decoder model into a FlatQuant fake-quant model.

In place, torchao-style. Each decoder layer's attention and MLP are replaced by `FlatAttention` and
`FlatMLP`; the layer's own forward (norms, residuals) is untouched, so any HF model of a supported
family keeps working with `generate`, caches and masks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from fq_core.adapters import get_adapter
from fq_core.flat.attention import FlatAttention
from fq_core.flat.config import FlatConfig
from fq_core.flat.mlp import FlatMLP


def quantize_(model: nn.Module, config: FlatConfig) -> nn.Module:
    """Replace every decoder layer's attention/MLP with fake-quant versions (in place).

    rtn and hadamard models are frozen at once (ready to evaluate). flatquant models start with
    random orthogonal transforms to be trained by calibration (fq-calib), then `freeze_layer`d.
    Afterwards the only trainable parameters are the transforms' and clipping factors'.
    """
    attach_flat_modules(model, config)
    if config.method != "flatquant":
        for layer in get_adapter(model).decoder_layers(model):
            freeze_layer(layer, model)
    return model


def attach_flat_modules(model: nn.Module, config: FlatConfig) -> nn.Module:
    """Swap in FlatAttention / FlatMLP everywhere without freezing anything (in place)."""
    adapter = get_adapter(model)
    names = adapter.names
    model.requires_grad_(False)  # the base model stays fixed; only transforms and clipping train
    generator = torch.Generator().manual_seed(config.seed)
    for layer in adapter.decoder_layers(model):
        attention = getattr(layer, names.attention)
        device = attention.q_proj.weight.device
        setattr(layer, names.attention, FlatAttention(attention, adapter, config, generator).to(device))
        mlp = getattr(layer, names.mlp)
        setattr(layer, names.mlp, FlatMLP(mlp, adapter, config, generator).to(device))
    model.flat_config = config
    return model


def flat_modules(model: nn.Module) -> Iterator[FlatAttention | FlatMLP]:
    for module in model.modules():
        if isinstance(module, FlatAttention | FlatMLP):
            yield module


def set_fp(model: nn.Module, fp: bool) -> None:
    """Switch every flat module of `model` (a whole model or one decoder layer) between full
    precision (the original computation) and fake quant."""
    for module in flat_modules(model):
        if fp and module.frozen:
            raise RuntimeError(
                "a frozen layer has merged its transforms; FP mode is only valid before freezing"
            )
        module.fp = fp


@torch.no_grad()
def freeze_layer(layer: nn.Module, model: nn.Module) -> None:
    """Merge a calibrated decoder layer: transforms into weights, channel scales into norms.

    After this the layer holds quantised weights and fixed online matrices only.
    """
    names = get_adapter(model).names
    attention, mlp = getattr(layer, names.attention), getattr(layer, names.mlp)
    for module, norm_name in ((attention, names.input_norm), (mlp, names.post_attention_norm)):
        scale = module.freeze()
        if scale is not None:
            norm = getattr(layer, norm_name)
            norm.weight.copy_((norm.weight.double() * scale.double()).to(norm.weight.dtype))
