"""Greedy decoding at the hardware's pace: a preallocated KV cache and the decode step as one CUDA graph.

transformers' `generate` launches every kernel of a step from Python, so at batch 1 a 7B step costs
~25 ms although its bf16 weights stream from HBM in ~4.5 ms (int4: ~1.2 ms): the loop, not the
weights, sets the pace, and int4 weights alone change little there. `StaticDecoder` runs the same
layers with the host out of the loop:

- one code path for both sides of a comparison: a model from `load_int4_model` (int4 GEMMs, int4 or
  full-precision KV cache) or a full-precision transformers model, whose q/k/v and gate/up linears
  are fused here like the int4 model's (their weights become views of the fused ones: no copy);
- the KV cache is preallocated for `max_batch x max_len` tokens; an int4 cache stores `quant_kv`'s
  codes, scales and zeros and is read by `kv_attention` without being dequantised to memory;
- prefill is one forward over the prompt. At one 2048-token prompt a 7B forward was ~58 ms of GPU
  work but 130-150 ms of wall time (each int4 linear is a custom-op dispatch and two Triton launches
  from Python), so on CUDA a prompt shape (batch, length) seen a second time is captured as a graph
  and replayed from then on; a shape seen once (an interactive prompt) never pays for a capture;
- a decode step reads its tokens and position from device buffers and writes the next ones back, so
  on CUDA it is captured once per batch size and replayed per token with no host work; elsewhere
  (or with graph=False) the same step runs eagerly.

On CUDA the residual adds, norms and gated activations between the GEMMs run as torch.compile'd
fused kernels (`runtime.elementwise`), in the prefill and inside the decode graph; RoPE and the
key map run as one `rope_map` kernel per q and k (as in the HF-module path).

Prompts of one call share a length (no padding); the full-precision cache is read at its whole
`max_len` every step (masked), as transformers' StaticCache is, while the int4 kernel reads only the
filled positions.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fq_core.adapters import get_adapter
from fq_core.adapters.base import DecoderAdapter, LayerNames
from fq_core.errors import ConfigError
from fq_kernels.ops import dequant_kv, kv_attention, quant_kv_into
from fq_kernels.runtime.attention import Int4Attention
from fq_kernels.runtime.elementwise import for_device, gated_activation, residual_norm
from fq_kernels.runtime.kv_cache import KVQuant
from fq_kernels.runtime.mlp import Int4MLP


class StaticKV:
    """One decoder layer's cache [max_batch, kv_heads, max_len, ...]: full precision, or int4 codes
    with per-group scales and zeros (`quant_kv`'s layout) when `quant` is given."""

    def __init__(
        self,
        max_batch: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        quant: KVQuant | None,
    ) -> None:
        self.quant, self.dtype = quant, dtype
        shape = (max_batch, kv_heads, max_len)

        def buffers() -> tuple[torch.Tensor, ...]:
            if quant is None:
                return (torch.zeros(*shape, head_dim, dtype=dtype, device=device),)
            groups = head_dim // quant.group_size
            return (
                torch.zeros(*shape, head_dim // 2, dtype=torch.uint8, device=device),
                torch.ones(*shape, groups, dtype=torch.float32, device=device),
                torch.zeros(*shape, groups, dtype=torch.uint8, device=device),
            )

        self.keys, self.values = buffers(), buffers()

    def write(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, prompt: bool) -> None:
        """Store k, v [b, kv_heads, T, head_dim] at `positions` [T] of the first b sequences (prompt:
        they are 0..T-1). An int4 cache is written by the quantiser itself (`quant_kv_into`)."""
        b, t = k.shape[0], k.shape[2]
        if self.quant is not None:
            group = self.quant.group_size
            quant_kv_into(k, self.keys, positions, group, self.quant.key_clip)
            quant_kv_into(v, self.values, positions, group, self.quant.value_clip)
            return
        for stored, new in ((self.keys[0], k), (self.values[0], v)):
            if prompt:  # one strided copy instead of an indexed one
                stored[:b, :, :t].copy_(new)
            else:
                stored[:b].index_copy_(2, positions, new)

    def prefill_attention(self, q: torch.Tensor, scaling: float) -> torch.Tensor:
        """Causal attention of a prompt q [b, heads, T, D] written at positions 0..T-1 (as stored)."""
        b, heads, t, _ = q.shape
        if self.quant is None:
            k, v = self.keys[0][:b, :, :t], self.values[0][:b, :, :t]
        else:
            group = self.quant.group_size
            k = dequant_kv(*(x[:b, :, :t] for x in self.keys), group, self.dtype)
            v = dequant_kv(*(x[:b, :, :t] for x in self.values), group, self.dtype)
        groups = heads // k.shape[1]
        if groups > 1:  # (repeating once would still copy)
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)

    def decode_attention(self, q: torch.Tensor, lengths: torch.Tensor, scaling: float) -> torch.Tensor:
        """One query token per sequence, q [b, heads, 1, D], over the first lengths[i] positions."""
        b, heads, _, d = q.shape
        if self.quant is not None:
            keys = tuple(x[:b] for x in self.keys)
            values = tuple(x[:b] for x in self.values)
            return kv_attention(q[:, :, 0], keys, values, lengths, self.quant.group_size, scaling)[:, :, None]
        k, v = self.keys[0][:b], self.values[0][:b]
        kv_heads, max_len = k.shape[1], k.shape[2]
        # The query heads sharing a kv head act as that head's query rows: no copy of the cache.
        q = q.reshape(b, kv_heads, heads // kv_heads, d)
        visible = torch.arange(max_len, device=q.device)[None, :] < lengths[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :], scale=scaling)
        return out.reshape(b, heads, 1, d)


@dataclass
class _Layer:
    input_norm: nn.Module
    attention: Int4Attention
    post_norm: nn.Module
    mlp: Int4MLP
    kv: StaticKV


def _fused_linear(linears: Sequence[nn.Linear]) -> nn.Linear:
    """One linear computing `linears` side by side; theirs become views of its weight (no copy kept)."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    has_bias = any(linear.bias is not None for linear in linears)
    bias = None
    if has_bias:
        bias = torch.cat(
            [
                linear.bias.detach() if linear.bias is not None else weight.new_zeros(linear.out_features)
                for linear in linears
            ]
        )
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        fused.bias = nn.Parameter(bias, requires_grad=False)
    start = 0
    for linear in linears:
        end = start + linear.out_features
        linear.weight = nn.Parameter(weight[start:end], requires_grad=False)
        if linear.bias is not None:
            linear.bias = nn.Parameter(bias[start:end], requires_grad=False)
        start = end
    return fused


_FUSED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
"""A full-precision model's attention / MLP module -> its fused form, made once: later decoders of
the same model (one per batch size, say) reuse it instead of concatenating the weights again."""


def _as_fused(attention: nn.Module, mlp: nn.Module, adapter: DecoderAdapter) -> tuple[Int4Attention, Int4MLP]:
    """A full-precision layer's attention and MLP in the int4 model's structure (fused projections)."""
    names: LayerNames = adapter.names
    if not isinstance(attention, Int4Attention):
        if attention not in _FUSED:
            qkv = _fused_linear([getattr(attention, name) for name in (names.q, names.k, names.v)])
            o_proj = getattr(attention, names.o)
            _FUSED[attention] = Int4Attention(attention, adapter, qkv, o_proj, None, None)
        attention = _FUSED[attention]
    if not isinstance(mlp, Int4MLP):
        if mlp not in _FUSED:
            gate_up = _fused_linear([getattr(mlp, names.gate), getattr(mlp, names.up)])
            _FUSED[mlp] = Int4MLP(mlp.act_fn, gate_up, getattr(mlp, names.down))
        mlp = _FUSED[mlp]
    return attention, mlp


class StaticDecoder:
    """Greedy generation for `model` with a static cache of `max_batch` sequences of `max_len` tokens.

    graph: capture the decode step in a CUDA graph (default: when the model is on CUDA).
    """

    def __init__(
        self, model: nn.Module, max_batch: int = 1, max_len: int | None = None, graph: bool | None = None
    ) -> None:
        adapter = get_adapter(model)
        names = adapter.names
        config = model.config
        base = getattr(model, "model", model)
        self.embed, self.norm, self.rotary = model.get_input_embeddings(), base.norm, base.rotary_emb
        self.head = model.get_output_embeddings()
        self.device, self.dtype = self.embed.weight.device, self.embed.weight.dtype
        self.max_batch = max_batch
        self.max_len = max_len or config.max_position_embeddings
        if max_batch < 1 or self.max_len < 2:
            raise ConfigError(
                f"a static decoder needs max_batch >= 1 and max_len >= 2, got {max_batch}, {max_len}"
            )
        self.graph = self.device.type == "cuda" if graph is None else graph
        if self.graph and self.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need the model on CUDA; it is on {self.device}: pass graph=False")
        self.layers: list[_Layer] = []
        for layer in adapter.decoder_layers(model):
            attention, mlp = _as_fused(getattr(layer, names.attention), getattr(layer, names.mlp), adapter)
            if attention.sliding_window is not None:
                raise ConfigError("the static decoder has no sliding-window attention: use model.generate")
            kv = StaticKV(
                max_batch,
                config.num_key_value_heads,
                self.max_len,
                attention.head_dim,
                self.dtype,
                self.device,
                attention.kv_quant,
            )
            norms = getattr(layer, names.input_norm), getattr(layer, names.post_attention_norm)
            self.layers.append(_Layer(norms[0], attention, norms[1], mlp, kv))
        # The decode step's state lives on the device: it reads the last tokens and their position
        # and writes the next tokens (also into the history, at their position) and position + 1.
        self._tokens = torch.zeros(max_batch, 1, dtype=torch.long, device=self.device)
        self._position = torch.zeros(1, dtype=torch.long, device=self.device)
        self._history = torch.zeros(max_batch, self.max_len + 1, dtype=torch.long, device=self.device)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._prefill_graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._prefill_seen: set[tuple[int, int]] = set()
        self._pool = torch.cuda.graph_pool_handle() if self.graph else None
        self._residual_norm = for_device(residual_norm, self.device)
        self._gated_activation = for_device(gated_activation, self.device)

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits [b, vocab] of the last position; lengths None: a prompt from position 0 (prefill)."""
        b, t = ids.shape
        x = self.embed(ids)
        rope = self.rotary(x, positions[None].expand(b, t))
        residual_norm, gated = self._residual_norm, self._gated_activation
        h = self.layers[0].input_norm(x)
        next_norms = [layer.input_norm for layer in self.layers[1:]] + [self.norm]
        for layer, next_norm in zip(self.layers, next_norms, strict=True):
            q, k, v = layer.attention.project(h, rope)
            layer.kv.write(k, v, positions, prompt=lengths is None)
            scaling = layer.attention.scaling
            if lengths is None:
                out = layer.kv.prefill_attention(q, scaling)
            else:
                out = layer.kv.decode_attention(q, lengths, scaling)
            x, h = residual_norm(
                layer.post_norm, x, layer.attention.o_proj(out.transpose(1, 2).reshape(b, t, -1))
            )
            mlp = layer.mlp
            x, h = residual_norm(next_norm, x, mlp.down_proj(mlp.activated(h, gated)))
        return self.head(h[:, -1:])[:, -1]

    def _decode_step(self, batch: int) -> None:
        tokens = self._tokens[:batch]
        lengths = (self._position + 1).to(torch.int32).expand(batch).contiguous()
        tokens.copy_(self._forward(tokens, self._position, lengths).argmax(-1, keepdim=True))
        self._history[:batch].index_copy_(1, self._position + 1, tokens)
        self._position.add_(1)

    def _prefill_step(self, ids: torch.Tensor) -> None:
        """Fill the cache with the prompts ids [b, T]; the first new tokens go to the device state."""
        b, t = ids.shape
        positions = torch.arange(t, device=self.device)
        first = self._forward(ids, positions, None).argmax(-1, keepdim=True)
        self._tokens[:b].copy_(first)
        self._position.fill_(t)
        self._history[:b, t].copy_(first[:, 0])

    def _capture(self, step: Callable[[], None], warmups: int) -> torch.cuda.CUDAGraph:
        """Warm up (Triton compiles, cuBLAS picks) on a side stream, then record one `step`."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(warmups):
                step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            step()
        return graph

    def _capture_decode(self, batch: int) -> torch.cuda.CUDAGraph:
        """The decode step's graph; the warm-up steps' tokens and position are put back."""
        saved = self._tokens.clone(), self._position.clone()
        graph = self._capture(lambda: self._decode_step(batch), warmups=2)
        self._tokens.copy_(saved[0])
        self._position.copy_(saved[1])
        return graph

    def _capture_prefill(self, ids: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """A prefill graph for ids' shape, reading a static copy of the ids. Its warm-up is this
        call's prefill (the recording itself computes nothing)."""
        static_ids = ids.clone()
        return self._capture(lambda: self._prefill_step(static_ids), warmups=1), static_ids

    def _check(self, batch: int, tokens: int) -> None:
        if batch > self.max_batch:
            raise ConfigError(
                f"batch {batch} is larger than this decoder's max_batch {self.max_batch}: build it with "
                f"StaticDecoder(model, max_batch={batch})"
            )
        if tokens > self.max_len:
            raise ConfigError(
                f"{tokens} tokens (prompt + new) do not fit this decoder's max_len {self.max_len}: build it "
                f"with a larger max_len (at most the model's {self.max_len} positions by default)"
            )

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Fill the cache with the prompts ids [b, T] (equal lengths); returns the first new tokens [b, 1]."""
        b, t = ids.shape
        self._check(b, t + 1)
        ids, shape = ids.to(self.device), (b, t)
        if shape in self._prefill_graphs:
            graph, static_ids = self._prefill_graphs[shape]
            static_ids.copy_(ids)
            graph.replay()
        elif self.graph and shape in self._prefill_seen:
            self._prefill_graphs[shape] = self._capture_prefill(ids)
        else:
            self._prefill_step(ids)
            self._prefill_seen.add(shape)
        return self._tokens[:b].clone()

    @torch.no_grad()
    def decode(self, batch: int, steps: int) -> None:
        """`steps` greedy tokens for the `batch` sequences of the last prefill (graph replays on CUDA)."""
        if steps < 1:
            return
        # Positions written: the current one onwards, and one more by a first capture's warm-up.
        self._check(batch, int(self._position.item()) + max(steps, 2))
        if self.graph and batch not in self._graphs:
            self._graphs[batch] = self._capture_decode(batch)
        for _ in range(steps):
            if self.graph:
                self._graphs[batch].replay()
            else:
                self._decode_step(batch)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, streamer: Any = None) -> torch.Tensor:
        """Greedy continuation of ids [b, T]: the new tokens [b, max_new_tokens].

        streamer: a transformers streamer (`put` / `end`, batch 1) fed the prompt, then each token as
        it is made (one host sync per token: for interactive use, not for throughput).
        """
        b, t = ids.shape
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self._check(b, t + max_new_tokens)
        first = self.prefill(ids)
        if streamer is None:
            self.decode(b, max_new_tokens - 1)
        else:
            streamer.put(ids[0].cpu())
            streamer.put(first[0].cpu())
            for _ in range(max_new_tokens - 1):
                self.decode(b, 1)
                streamer.put(self._tokens[0].cpu())
            streamer.end()
        return self._history[:b, t : t + max_new_tokens].clone()
