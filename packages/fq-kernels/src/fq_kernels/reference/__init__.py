"""Pure-PyTorch references: they run anywhere (CPU included) and define what every kernel computes.

Integer results (quantised values, integer accumulators) of a kernel must equal these bit for bit;
float results (scales after a transform, the GEMM epilogue) within the tolerances each function
documents. The quantisers call `fq_core.quant.functional` directly, so "matches fq-core" holds by
construction rather than by a second copy of the formulas.
"""

from fq_kernels.reference.activation import (
    NONFINITE_RULE,
    act_spec,
    asym_shift,
    clip_pair,
    format_values,
    online_transform,
    quantize_tokens,
    quantize_tokens_asym,
    transform_quant_asym_ref,
    transform_quant_ref,
)
from fq_kernels.reference.gemm import (
    ASYM_MAX_K,
    int_matmul_ref,
    operand_values,
    swiglu_halves,
    w4a4_linear_ref,
)
from fq_kernels.reference.kv import QuantizedKV, dequant_kv_ref, kv_attention_ref, kv_spec, quant_kv_ref
from fq_kernels.reference.rope import rope_map_ref

__all__ = [
    "ASYM_MAX_K",
    "NONFINITE_RULE",
    "QuantizedKV",
    "act_spec",
    "asym_shift",
    "clip_pair",
    "dequant_kv_ref",
    "format_values",
    "int_matmul_ref",
    "kv_attention_ref",
    "kv_spec",
    "online_transform",
    "operand_values",
    "quant_kv_ref",
    "quantize_tokens",
    "quantize_tokens_asym",
    "rope_map_ref",
    "swiglu_halves",
    "transform_quant_asym_ref",
    "transform_quant_ref",
    "w4a4_linear_ref",
]
