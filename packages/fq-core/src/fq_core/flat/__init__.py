"""The flat (fake-quantised) model that calibration trains and evaluation runs.

from fq_core.flat import FlatConfig, quantize_
quantize_(model, FlatConfig(method="rtn"))     # W4A4 RTN, in place
"""

from fq_core.flat.attention import FlatAttention
from fq_core.flat.config import METHODS, FlatConfig
from fq_core.flat.linear import FlatLinear
from fq_core.flat.mlp import FlatMLP
from fq_core.flat.model import attach_flat_modules, flat_modules, freeze_layer, quantize_, set_fp
from fq_core.flat.serialize import (
    checkpoint_from_model,
    layer_tensors,
    load_layer,
    load_quantized,
    model_from_hf_config,
    save_quantized,
)

__all__ = [
    "METHODS",
    "FlatAttention",
    "FlatConfig",
    "FlatLinear",
    "FlatMLP",
    "attach_flat_modules",
    "checkpoint_from_model",
    "flat_modules",
    "freeze_layer",
    "layer_tensors",
    "load_layer",
    "load_quantized",
    "model_from_hf_config",
    "quantize_",
    "save_quantized",
    "set_fp",
]
