"""Stand-ins for a calibrated model, for tests and benchmarks of every package.

`as_if_calibrated` gives a frozen flat model whose transforms, channel scalings and clipping factors
are all moved off their initial values (so every site of the checkpoint schema carries information)
in seconds instead of a calibration run. Kernel speed does not depend on the values, so benchmarks
use it on random-weight models of real shapes too.
"""

from __future__ import annotations

import torch
from torch import nn

from fq_core.flat.config import FlatConfig
from fq_core.flat.model import freeze_layer, quantize_
from fq_core.quant import QuantSpec


def kv4_specs(group_size: int) -> dict[str, QuantSpec]:
    """FlatConfig fields of a 4-bit asymmetric KV cache with `group_size` (the kernels' KV4)."""
    spec = QuantSpec(4, False, "group", group_size)
    return {"key": spec, "value": spec}


@torch.no_grad()
def as_if_calibrated(model: nn.Module, config: FlatConfig, seed: int = 1) -> nn.Module:
    """`quantize_(model, config)`, random transforms / scalings / clipping, then `freeze_layer` each layer."""
    quantize_(model, config)
    g = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("skew"):
            param.copy_(0.2 * torch.randn(param.shape, generator=g))
        elif name.endswith((".scale", "singular")):
            param.copy_(torch.rand(param.shape, generator=g) + 0.5)
        elif "clip" in name:
            param.copy_(torch.rand(param.shape, generator=g) * 4)
    for layer in model.model.layers:
        if not layer.self_attn.frozen:  # methods with fixed transforms (rtn, hadamard) freeze at once
            freeze_layer(layer, model)
    return model
