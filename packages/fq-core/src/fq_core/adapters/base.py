"""What an adapter knows about a decoder family: where the linears and norms are, and its geometry.

FlatQuant places one transform per linear-layer *input* (METHOD.md): q/k/v share one after the
input norm, gate/up share one after the post-attention norm, down_proj has its own, o_proj gets a
heads x head_dim pair whose head_dim half is merged into v_proj, and the KV cache gets a head_dim
transform after RoPE. That placement is the same for every LLaMA-like family; an adapter only
says how to reach the modules and which variants of the family we support.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fq_core.errors import UnsupportedModelError


@dataclass(frozen=True)
class LayerNames:
    """Attribute names inside one decoder layer."""

    attention: str = "self_attn"
    mlp: str = "mlp"
    input_norm: str = "input_layernorm"
    post_attention_norm: str = "post_attention_layernorm"
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    gate: str = "gate_proj"
    up: str = "up_proj"
    down: str = "down_proj"
    q_norm: str = "q_norm"
    k_norm: str = "k_norm"


@dataclass(frozen=True)
class DecoderAdapter:
    """A LLaMA-like decoder family.

    family: our name for it (stored in checkpoints).
    model_types: the HF `config.model_type` values it covers.
    qkv_bias: whether q/k/v projections carry a bias for this config.
    qk_norm: whether attention normalises q and k per head before RoPE (Qwen3).
    unsupported: config checks; each returns a reason string when the variant is not supported.
    sliding_window: the sliding window the attention kernel must be told about, if any.
    """

    family: str
    model_types: tuple[str, ...]
    qkv_bias: Callable[[Any], bool] = lambda config: False
    qk_norm: bool = False
    unsupported: tuple[Callable[[Any], str | None], ...] = ()
    sliding_window: Callable[[nn.Module], int | None] = lambda attention: None
    names: LayerNames = field(default_factory=LayerNames)

    def check(self, config: Any) -> None:
        for rule in self.unsupported:
            reason = rule(config)
            if reason:
                raise UnsupportedModelError(f"{self.family} model not supported: {reason}")
        if getattr(config, "hidden_act", "silu") not in (
            "silu",
            "swish",
            "gelu",
            "gelu_new",
            "gelu_pytorch_tanh",
        ):
            raise UnsupportedModelError(
                f"hidden_act={config.hidden_act!r} is not supported (use a gated SiLU/GELU MLP)"
            )

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The decoder layers of a `*ForCausalLM` or a bare `*Model`."""
        base = getattr(model, "model", model)
        return base.layers

    def rope_function(self, attention: nn.Module) -> Callable:
        """The family's own `apply_rotary_pos_emb`, taken from the attention class's module."""
        return sys.modules[type(attention).__module__].apply_rotary_pos_emb

    def geometry(self, config: Any) -> dict[str, Any]:
        """The model block of the checkpoint config: everything that fixes the tensor inventory."""
        self.check(config)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return {
            "family": self.family,
            "model_type": config.model_type,
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_layers": config.num_hidden_layers,
            "num_heads": config.num_attention_heads,
            "num_kv_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            "head_dim": head_dim,
            "vocab_size": config.vocab_size,
            "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
            "qkv_bias": self.qkv_bias(config),
            "qk_norm": self.qk_norm,
        }


def no_extra_bias(config: Any) -> str | None:
    """LLaMA-style configs may put biases on o_proj/MLP; our checkpoint schema has q/k/v biases only."""
    if getattr(config, "attention_bias", False):
        return "attention_bias=True (biases on o_proj) is not supported"
    if getattr(config, "mlp_bias", False):
        return "mlp_bias=True is not supported"
    return None
