"""`load_int4_model`: a flatquant checkpoint as a transformers `*ForCausalLM` running int4 kernels.

The architecture comes from the checkpoint's own `hf_config` (fq-core's `model_from_hf_config`),
built on the meta device so that no full-precision weight is ever allocated. Each decoder layer's
attention and MLP become `Int4Attention` / `Int4MLP` over `QuantLinear`s read from the checkpoint;
embeddings, norms and the head are the checkpoint's (merged) tensors. Nothing else changes, so the
model is an ordinary transformers model: `model(ids)`, `model.generate(...)`, pipelines.
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch
from torch import nn

from fq_core.adapters import get_adapter
from fq_core.adapters.base import DecoderAdapter
from fq_core.checkpoint import Checkpoint, CheckpointConfig, load_checkpoint, read_config
from fq_core.errors import ConfigError
from fq_core.flat import model_from_hf_config
from fq_core.quant import NO_QUANT
from fq_kernels.quant_linear import QuantLinear
from fq_kernels.runtime.attention import Int4Attention
from fq_kernels.runtime.kv_cache import KVQuant
from fq_kernels.runtime.mlp import Activation, Int4MLP


def load_int4_model(
    checkpoint_dir: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    kv_bits: int | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The checkpoint as a runnable model with int4 weights, int4 activations and maybe an int4 KV cache.

    kv_bits: None keeps the checkpoint's KV cache quantisation; 16 keeps keys and values in full
        precision even when the checkpoint quantises them (to measure what KV4 costs); 4 asserts the
        checkpoint was calibrated with KV4 (the cache's clipping factors are learned, not defaults).
    dtype: of activations, embeddings and norms; default float16 on CUDA, float32 elsewhere (as
        `fq eval`, so the real model is compared with the fake-quant one at the same precision).

    The model's `fq_quant` is the checkpoint's `QuantConfig` as run (KV16 when kv_bits=16).
    """
    config = read_config(checkpoint_dir)
    check_supported(config, kv_bits)
    checkpoint = load_checkpoint(checkpoint_dir, expected_model=config.model.geometry(), device=device)
    return int4_model(checkpoint, device, kv_bits, dtype)


def int4_model(
    checkpoint: Checkpoint,
    device: torch.device | str = "cpu",
    kv_bits: int | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """`load_int4_model` of a checkpoint already in memory (`load_checkpoint`'s, or the config and
    tensors of `fq_core.flat.checkpoint_from_model`, as the end-to-end benchmark builds them)."""
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    config = checkpoint.config
    check_supported(config, kv_bits)
    checkpoint = Checkpoint(config, {name: t.to(device) for name, t in checkpoint.tensors.items()})
    with torch.device("meta"):
        model = model_from_hf_config(config.model.hf_config, dtype)
    quantise_kv = config.quant.key.enabled and kv_bits != 16
    adapter = get_adapter(model)
    names = adapter.names
    swiglu = getattr(model.config, "hidden_act", None) in SILU_NAMES
    for index, layer in enumerate(adapter.decoder_layers(model)):
        attention = getattr(layer, names.attention)
        setattr(layer, names.attention, _attention(attention, adapter, checkpoint, index, quantise_kv, dtype))
        mlp = getattr(layer, names.mlp)
        setattr(layer, names.mlp, _mlp(mlp.act_fn, checkpoint, index, swiglu))
    _load_base_tensors(model, checkpoint, dtype, device)
    kv = {} if quantise_kv else {"key": NO_QUANT, "value": NO_QUANT}
    model.fq_quant = replace(config.quant, **kv)  # what it runs (the fields of a FlatConfig's specs)
    return model.eval()


def check_supported(config: CheckpointConfig, kv_bits: int | None) -> None:
    """What the kernels run: W4 sym per channel, A4 sym or asym per token, and KV16 or KV4 asym per group."""
    w, a, k, v = config.quant.weight, config.quant.act, config.quant.key, config.quant.value
    w4 = w.bits == 4 and w.symmetric and w.granularity == "channel"
    a4 = a.bits == 4 and a.granularity == "token" and a.dynamic
    if not (w4 and a4):
        raise ConfigError(
            f"the int4 kernels run W4A4 checkpoints (4-bit symmetric weights per channel, 4-bit dynamic "
            f"activations per token); this one has weights {w.to_dict()} and activations {a.to_dict()}: "
            "evaluate it with fq eval (fake quantisation)"
        )
    if kv_bits not in (None, 4, 16):
        raise ConfigError(f"kv_bits must be 4, 16 or None (the checkpoint's), got {kv_bits}")
    kv4 = k.bits == 4 and not k.symmetric and k.granularity == "group" and k == v
    if kv_bits == 4 and not kv4:
        raise ConfigError(
            "kv_bits=4 needs a checkpoint calibrated with a 4-bit KV cache (fq calib --bits w4a4kv4): "
            "the cache's clipping factors are learned"
        )
    if kv_bits is None and (k.enabled or v.enabled) and not kv4:
        raise ConfigError(
            f"the int4 KV cache is asymmetric per group, keys and values alike; this checkpoint has keys "
            f"{k.to_dict()} and values {v.to_dict()}: pass kv_bits=16 for a full-precision cache"
        )


def _attention(
    attention: nn.Module,
    adapter: DecoderAdapter,
    checkpoint: Checkpoint,
    index: int,
    quantise_kv: bool,
    dtype: torch.dtype,
) -> Int4Attention:
    prefix, tensors = f"layers.{index}.", checkpoint.tensors
    qkv = [f"{prefix}self_attn.{name}_proj" for name in "qkv"]
    key_transform = kv_quant = None
    if quantise_kv:
        kv_quant = KVQuant(
            group_size=checkpoint.config.quant.key.group_size,
            key_clip=_clip(tensors, f"{prefix}k_cache"),
            value_clip=_clip(tensors, f"{prefix}v_cache"),
        )
        if f"{prefix}k_cache.matrix" in tensors:
            # in the activations' dtype, as rope_map applies them: not a cast per layer and step
            key_transform = tuple(
                tensors[f"{prefix}k_cache.{name}"].to(dtype) for name in ("matrix", "matrix_inv")
            )
    return Int4Attention(
        attention,
        adapter,
        QuantLinear.from_checkpoint(checkpoint, qkv),
        QuantLinear.from_checkpoint(checkpoint, f"{prefix}self_attn.o_proj"),
        key_transform,
        kv_quant,
    )


SILU_NAMES = ("silu", "swish")
"""`hidden_act` values whose gated MLP is SwiGLU: a prompt's gate|up GEMM applies the activation."""


def _mlp(act_fn: Activation, checkpoint: Checkpoint, index: int, swiglu: bool) -> Int4MLP:
    prefix = f"layers.{index}.mlp."
    names = [f"{prefix}gate_proj", f"{prefix}up_proj"]
    gate_up = QuantLinear.from_checkpoint(checkpoint, names)
    return Int4MLP(act_fn, gate_up, QuantLinear.from_checkpoint(checkpoint, f"{prefix}down_proj"), swiglu)


def _clip(tensors: dict[str, torch.Tensor], site: str) -> torch.Tensor:
    return torch.cat([tensors[f"{site}.clip_max"], tensors[f"{site}.clip_min"]]).float()


def _load_base_tensors(
    model: nn.Module, checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device
) -> None:
    """Embeddings, norms and head into the meta skeleton; then rebuild what is computed, not stored.

    With 4-bit linears the checkpoint's only `.weight` tensors are exactly these base tensors
    (docs/checkpoint-schema.md), named relative to the decoder (`model.` in a `*ForCausalLM`).
    """
    base = getattr(model, "model", model)
    weights = {
        name: nn.Parameter(t.to(dtype), requires_grad=False)
        for name, t in checkpoint.tensors.items()
        if name.endswith(".weight")
    }
    head = weights.pop("lm_head.weight", None)
    unexpected = base.load_state_dict(weights, strict=False, assign=True).unexpected_keys
    if unexpected:
        raise RuntimeError(f"checkpoint tensors with no place in the model: {unexpected}")
    if head is None:
        model.tie_weights()
    else:
        model.get_output_embeddings().weight = head
    rotary = base.rotary_emb  # inv_freq is computed from the config, never stored
    base.rotary_emb = type(rotary)(config=rotary.config).to(device)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"the int4 model still has unallocated tensors {left}")
