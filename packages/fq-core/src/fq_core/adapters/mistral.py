"""Mistral: LLaMA layout plus an optional sliding attention window."""

from fq_core.adapters.base import DecoderAdapter

MISTRAL = DecoderAdapter(
    family="mistral",
    model_types=("mistral",),
    sliding_window=lambda attention: getattr(attention.config, "sliding_window", None),
)
