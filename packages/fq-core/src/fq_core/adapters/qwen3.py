"""Qwen3: per-head RMSNorm on q and k before RoPE; head_dim may differ from hidden/heads."""

from fq_core.adapters.base import DecoderAdapter


def _no_attention_bias(config: object) -> str | None:
    if getattr(config, "attention_bias", False):
        return "attention_bias=True (biases on o_proj) is not supported"
    return None


QWEN3 = DecoderAdapter(
    family="qwen3",
    model_types=("qwen3",),
    qk_norm=True,
    unsupported=(_no_attention_bias,),
    sliding_window=lambda attention: getattr(attention, "sliding_window", None),
)
