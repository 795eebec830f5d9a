"""A transformers KV cache that stores keys and values as asymmetric int4, per group of head_dim.

Each token's key (after RoPE and the checkpoint's `k_cache` transform) and value are quantised once,
when written, by `fq_kernels.quant_kv` with the layer's learned clipping factors: packed codes
[B, H, S, D/2] uint8 plus a float32 scale and a uint8 zero per group [B, H, S, D/G]. Groups never
span tokens, so appending a token leaves the stored ones untouched, and what attention reads back is
exactly the fake-quantised keys/values that fq-core's evaluation (and calibration) used.

`update` returns the whole cache dequantised: attention runs in floating point, as transformers'
attention functions expect. For serving, `fq_kernels.runtime.StaticDecoder` keeps a preallocated
int4 cache and attends with `kv_attention`, which reads the codes directly (docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

from fq_core.errors import ConfigError
from fq_kernels.ops import dequant_kv, quant_kv


@dataclass(frozen=True)
class KVQuant:
    """One decoder layer's cache quantisers: int4 asymmetric per group, with the learned clipping.

    key_clip / value_clip: float32 [2] (clip_max, clip_min) of the checkpoint's k_cache / v_cache sites.
    """

    group_size: int
    key_clip: torch.Tensor
    value_clip: torch.Tensor


_STATES = ("keys", "key_scales", "key_zeros", "values", "value_scales", "value_zeros")
"""Everything an `Int4KVLayer` stores, each [B, H, S, ...]: cache operations apply to all six."""


class Int4KVLayer(DynamicLayer):
    """One layer's cache: `keys` / `values` hold the packed int4 codes, with their scales and zeros."""

    def __init__(self, quant: KVQuant) -> None:
        super().__init__()
        self.quant = quant
        self.key_scales = self.key_zeros = self.value_scales = self.value_zeros = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise and append the new tokens; return every cached key and value, dequantised."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        group = self.quant.group_size
        new = (
            *quant_kv(key_states, group, self.quant.key_clip),
            *quant_kv(value_states, group, self.quant.value_clip),
        )
        for name, t in zip(_STATES, new, strict=True):
            old = getattr(self, name)
            setattr(self, name, t if old is None else torch.cat([old, t], dim=-2))
        keys = dequant_kv(self.keys, self.key_scales, self.key_zeros, group, self.dtype)
        values = dequant_kv(self.values, self.value_scales, self.value_zeros, group, self.dtype)
        return keys, values

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.keys is not None:
            for name in _STATES:
                setattr(self, name, fn(getattr(self, name)))

    def reset(self) -> None:
        for name in _STATES:
            setattr(self, name, None)
        self.is_initialized = False

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` tokens (transformers' convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove < 0:
            self._map(lambda t: t[..., :tokens_to_remove, :])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices, ...])

    def offload(self) -> None:
        self._map(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:
        self._map(lambda t: t.to(self.device, non_blocking=True))


class Int4KVCache(Cache):
    """A cache of `Int4KVLayer`s, one per decoder layer, e.g. `Int4KVCache.for_model(model)`.

    `generate` and `forward(use_cache=True)` need no explicit one: the int4 attention puts its
    layer into whatever default cache they create (`int4_layer`).
    """

    def __init__(self, quants: Sequence[KVQuant]) -> None:
        super().__init__(layers=[Int4KVLayer(quant) for quant in quants])

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> Int4KVCache:
        """The cache of a model from `load_int4_model` with a quantised KV cache."""
        quants = [m.kv_quant for m in model.modules() if getattr(m, "kv_quant", None) is not None]
        if not quants:
            raise ConfigError("this model keeps its KV cache in full precision: use a DynamicCache")
        return cls(quants)


def int4_layer(cache: Cache | None, index: int, quant: KVQuant) -> Int4KVLayer:
    """The int4 layer that holds decoder layer `index`'s keys and values.

    Without a cache (e.g. a perplexity pass with use_cache=False) a throwaway layer quantises this
    call's keys and values, as the fake-quant model does. A cache whose layer `index` is still an
    empty plain `DynamicLayer` (the default that `generate` and `forward(use_cache=True)` create) gets
    an `Int4KVLayer` in its place, so `model.generate(...)` needs no cache argument.
    """
    if cache is None:
        return Int4KVLayer(quant)
    while len(cache.layers) <= index and cache.layer_class_to_replicate is not None:
        cache.layers.append(cache.layer_class_to_replicate())
    layer = cache.layers[index] if index < len(cache.layers) else None
    if isinstance(layer, Int4KVLayer):
        return layer
    if isinstance(layer, DynamicLayer) and layer.get_seq_length() == 0:
        cache.layers[index] = Int4KVLayer(quant)
        return cache.layers[index]
    raise ConfigError(
        f"the KV cache's layer {index} is a {type(layer).__name__} holding tokens, but this model keeps "
        "its keys and values in int4: give the model Int4KVCache.for_model(model) as its cache, or none"
    )
