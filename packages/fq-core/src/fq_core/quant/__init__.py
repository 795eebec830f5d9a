"""Quantisers: specs, math, modules and the int4 packing the kernels share."""

from fq_core.quant.functional import dequantize, fake_quant, quant_range, quantize, round_ste, scale_zero
from fq_core.quant.pack import pack_int4, unpack_int4
from fq_core.quant.quantizers import ActivationQuantizer, WeightQuantizer
from fq_core.quant.spec import NO_QUANT, QuantSpec

__all__ = [
    "NO_QUANT",
    "ActivationQuantizer",
    "QuantSpec",
    "WeightQuantizer",
    "dequantize",
    "fake_quant",
    "pack_int4",
    "quant_range",
    "quantize",
    "round_ste",
    "scale_zero",
    "unpack_int4",
]
