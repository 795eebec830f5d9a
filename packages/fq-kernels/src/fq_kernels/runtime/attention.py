"""`Int4Attention`: a decoder layer's attention with int4 GEMMs and, optionally, an int4 KV cache.

The same computation as fq-core's frozen `FlatAttention` (docs/architecture.md, the sites table),
with real kernels in place of fake quantisation:
  x -> [attn_in transform + int4 quant, once] -> q|k|v as one int4 GEMM -> [q/k norm]
    -> RoPE, then k @ P_k, q @ P_k^-T (scores unchanged; one `rope_map` kernel each)
    -> int4 KV cache -> attention
    -> [o_in heads transform + int4 quant] -> o_proj int4 GEMM
The HF decoder layer around it (norms, residuals, masks, cache plumbing) is untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache

from fq_core.adapters.base import DecoderAdapter
from fq_core.adapters.hf_names import given_cache
from fq_core.flat.attention import hf_attention
from fq_kernels.ops import rope_map
from fq_kernels.quant_linear import QuantLinear
from fq_kernels.runtime.kv_cache import KVQuant, int4_layer


class Int4Attention(nn.Module):
    """Replaces `attention` (an HF attention module, whose config, RoPE and q/k norms it keeps).

    qkv_proj: q, k and v fused (their input site is shared); o_proj: the output projection; both
    `QuantLinear`s, or plain `nn.Linear`s for the full-precision baseline of the static decoder
    (`fq_kernels.runtime.static_decode`), which runs both through the same code. key_transform: the
    k_cache site's (P_k, P_k^-1), present when the keys are quantised; kv_quant: the cache
    quantisers, or None for a full-precision cache.
    """

    def __init__(
        self,
        attention: nn.Module,
        adapter: DecoderAdapter,
        qkv_proj: QuantLinear | nn.Linear,
        o_proj: QuantLinear | nn.Linear,
        key_transform: tuple[torch.Tensor, torch.Tensor] | None,
        kv_quant: KVQuant | None,
    ) -> None:
        super().__init__()
        # What transformers' attention functions read from the module they are given:
        self.config = attention.config
        self.layer_idx = attention.layer_idx
        self.head_dim = attention.head_dim
        self.num_key_value_groups = attention.num_key_value_groups
        self.scaling = attention.scaling
        self.attention_dropout = attention.attention_dropout
        self.is_causal = True

        self.sliding_window = adapter.sliding_window(attention)
        names = adapter.names
        self.q_norm = getattr(attention, names.q_norm) if adapter.qk_norm else None
        self.k_norm = getattr(attention, names.k_norm) if adapter.qk_norm else None
        kv_size = self.config.num_key_value_heads * self.head_dim
        self.split = (qkv_proj.out_features - 2 * kv_size, kv_size, kv_size)
        self.qkv_proj = qkv_proj
        self.o_proj = o_proj
        self.kv_quant = kv_quant
        key_map, key_inverse = key_transform if key_transform is not None else (None, None)
        self.register_buffer("key_map", key_map)
        self.register_buffer("query_map", None if key_inverse is None else key_inverse.T.contiguous())

    def project(
        self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [B, heads, T, head_dim] as attention reads them: after q/k norms, RoPE and the
        cache's key transform (what the KV cache stores). The static decoder calls this too.
        Every supported family rotates halves (transformers' `rotate_half`), which `rope_map` does."""
        hidden_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q, k, v = self.qkv_proj(hidden_states).split(self.split, dim=-1)
        q, k, v = q.view(hidden_shape), k.view(hidden_shape), v.view(hidden_shape)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = position_embeddings
        # token-major [B, T, heads, D] in and out: views of the projection in, no copy before it
        q, k = rope_map(q, cos, sin, self.query_map), rope_map(k, cos, sin, self.key_map)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = given_cache(cache, past_key_values)
        input_shape = hidden_states.shape[:-1]
        q, k, v = self.project(hidden_states, position_embeddings)
        if self.kv_quant is not None:
            k, v = int4_layer(cache, self.layer_idx, self.kv_quant).update(k, v)
        elif cache is not None:
            k, v = cache.update(k, v, self.layer_idx)

        out, weights = hf_attention(self, q, k, v, attention_mask, **kwargs)
        return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights
