"""LLaMA family: LLaMA-2, LLaMA-3/3.1, SmolLM2 (our embedded default)."""

from fq_core.adapters.base import DecoderAdapter, no_extra_bias

LLAMA = DecoderAdapter(family="llama", model_types=("llama",), unsupported=(no_extra_bias,))
