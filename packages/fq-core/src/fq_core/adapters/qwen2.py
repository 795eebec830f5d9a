"""Qwen2 / Qwen2.5: q/k/v carry biases; some layers may use a sliding window."""

from fq_core.adapters.base import DecoderAdapter

QWEN2 = DecoderAdapter(
    family="qwen2",
    model_types=("qwen2",),
    qkv_bias=lambda config: True,
    sliding_window=lambda attention: getattr(attention, "sliding_window", None),
)
