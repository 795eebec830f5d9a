"""`FlatAttention`: a drop-in for an HF LLaMA-like attention module, with FlatQuant's sites.

Data flow (non-FP mode), per METHOD.md:
  x -> attn_in (kron transform, quant) -> q, k, v projections (weights carry the inverse)
  v_proj's output carries the head_dim factor P_v (merged into its weight rows)
  q, k -> [q/k norm] -> RoPE -> k @ P_k, q @ P_k^-T (scores unchanged) -> K quant; V quant
  attention -> o_in (heads factor P_h^T online, so o's input is kron(P_h, P_v)-transformed, quant)
  -> o_proj (weight carries kron(P_h, P_v)^-T)
In FP mode it runs exactly the HF computation on the original weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

from fq_core.adapters.base import DecoderAdapter
from fq_core.adapters.hf_names import given_cache
from fq_core.flat.config import FlatConfig
from fq_core.flat.linear import FlatLinear
from fq_core.flat.sites import CacheSite, HeadsSite, InputSite, make_factor
from fq_core.transforms.kronecker import apply_right, kron_apply
from fq_core.transforms.matrices import Factor, frozen


def hf_attention(
    module: nn.Module,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' configured attention function (sdpa, eager, ...) on q, k, v [B, H, T, D], called
    as its own attention modules call it. `module` carries what those functions read: config,
    scaling, attention_dropout, training, is_causal, num_key_value_groups, and sliding_window (None
    when the model has none). Used by the fake-quant attention here and fq-kernels' int4 one."""
    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
        module.config._attn_implementation, eager_attention_forward
    )
    if module.sliding_window is not None:
        kwargs["sliding_window"] = module.sliding_window
    return attention_interface(
        module,
        q,
        k,
        v,
        attention_mask,
        dropout=0.0 if not module.training else module.attention_dropout,
        scaling=module.scaling,
        **kwargs,
    )


class FlatAttention(nn.Module):
    def __init__(
        self, attention: nn.Module, adapter: DecoderAdapter, config: FlatConfig, generator: torch.Generator
    ) -> None:
        super().__init__()
        names = adapter.names
        self.config = attention.config
        self.layer_idx = attention.layer_idx
        self.head_dim = attention.head_dim
        self.num_heads = self.config.num_attention_heads
        self.num_key_value_groups = attention.num_key_value_groups
        self.scaling = attention.scaling
        self.attention_dropout = attention.attention_dropout
        self.is_causal = True
        self.sliding_window = adapter.sliding_window(attention)
        self.rope: Callable = adapter.rope_function(attention)
        self.q_norm = getattr(attention, names.q_norm) if adapter.qk_norm else None
        self.k_norm = getattr(attention, names.k_norm) if adapter.qk_norm else None

        w, lwc = config.weight, config.lwc
        self.q_proj = FlatLinear(getattr(attention, names.q), w, lwc)
        self.k_proj = FlatLinear(getattr(attention, names.k), w, lwc)
        self.v_proj = FlatLinear(getattr(attention, names.v), w, lwc)
        self.o_proj = FlatLinear(getattr(attention, names.o), w, lwc)

        self.attn_in = InputSite(self.q_proj.in_features, config, generator)
        self.o_in = HeadsSite(self.num_heads, config, generator)
        self.v_out: Factor | None = (
            make_factor(self.head_dim, config, generator) if config.has_transforms else None
        )
        key, value = config.kv_spec(config.key, self.head_dim), config.kv_spec(config.value, self.head_dim)
        k_factor = (
            make_factor(self.head_dim, config, generator) if config.has_transforms and key.enabled else None
        )
        self.k_cache = CacheSite(key, k_factor, config.lac)
        self.v_cache = CacheSite(value, None, config.lac)

        self.fp = False
        self.frozen = False

    # --- weight-side maps (the inverses of the online transforms) -------------------------------
    def _v_output_map(self, exact: bool):
        """v_proj's rows per head: W_h -> P_v^T W_h, bias_h -> bias_h P_v."""
        if self.v_out is None:
            return None
        p_v = self.v_out.exact()[0] if exact else self.v_out.matrix()

        def output_map(weight: torch.Tensor, bias: torch.Tensor | None):
            p = p_v.to(weight.dtype)
            heads = weight.reshape(-1, self.head_dim, weight.shape[-1])
            weight = torch.matmul(p.T, heads).reshape(weight.shape)
            if bias is not None:
                bias = apply_right(bias, p.to(bias.dtype))
            return weight, bias

        return output_map

    def _o_weight_map(self, exact: bool):
        """o_proj's input dim: W -> W kron(P_h, P_v)^-T."""
        if self.o_in.heads is None or self.v_out is None:
            return None
        if exact:
            heads_inv, v_inv = self.o_in.heads.exact()[1], self.v_out.exact()[1]
            return lambda weight: kron_apply(weight.double(), heads_inv.T, v_inv.T)
        return lambda weight: kron_apply(
            weight.to(torch.float32), self.o_in.heads.inverse().T, self.v_out.inverse().T
        )

    # --- forward -------------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = given_cache(cache, past_key_values)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        quantised = not self.fp

        if quantised:
            x = self.attn_in(hidden_states)
            w_in = None if self.frozen else self.attn_in.weight_map()
            v_map = None if self.frozen else self._v_output_map(exact=False)
            q, k = self.q_proj(x, w_in), self.k_proj(x, w_in)
            v = self.v_proj(x, w_in, v_map)
        else:
            if self.attn_in.observing:
                self.attn_in.observe(hidden_states)
            q = self.q_proj.forward_fp(hidden_states)
            k = self.k_proj.forward_fp(hidden_states)
            v = self.v_proj.forward_fp(hidden_states)

        q, k, v = q.view(hidden_shape), k.view(hidden_shape), v.view(hidden_shape)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        cos, sin = position_embeddings
        q, k = self.rope(q, k, cos, sin)

        if quantised:
            if self.k_cache.factor is not None:
                q = apply_right(q, self.k_cache.factor.inverse().T.to(q.dtype))
            k = self.k_cache(k)
            v = self.v_cache(v)

        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)

        attn_output, attn_weights = hf_attention(self, q, k, v, attention_mask, **kwargs)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()

        if quantised:
            x = self.o_in(attn_output)
            out = self.o_proj(x, None if self.frozen else self._o_weight_map(exact=False))
        else:
            out = self.o_proj.forward_fp(attn_output)
        return out, attn_weights

    # --- calibration helpers ---------------------------------------------------------------------
    def weight_absmax_for_scale(self) -> torch.Tensor:
        """max |W[:, j]| over q, k, v: the weight half of the SmoothQuant init of attn_in's scale."""
        weights = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        return weights.abs().amax(0)

    @torch.no_grad()
    def freeze(self) -> torch.Tensor | None:
        """Merge every weight-side transform (float64), quantise weights, freeze the factors.

        Returns attn_in's channel scale, which the caller folds into the input norm (it is then
        dropped here), or None.
        """
        w_in = self.attn_in.exact_weight_map()
        self.q_proj.freeze(w_in)
        self.k_proj.freeze(w_in)
        self.v_proj.freeze(w_in, self._v_output_map(exact=True))
        self.o_proj.freeze(self._o_weight_map(exact=True))
        scale = None
        if self.attn_in.transform is not None:
            scale = self.attn_in.transform.scale
            self.attn_in.transform.scale = None
            self.attn_in.transform.freeze()
        self.o_in.freeze()
        self.k_cache.freeze()
        if self.v_out is not None:
            self.v_out = frozen(self.v_out)
        self.frozen = True
        return None if scale is None else scale.detach()
