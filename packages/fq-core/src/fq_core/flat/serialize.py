"""Frozen flat model <-> checkpoint directory (the schema in `fq_core.checkpoint`).

`save_quantized` writes what calibration produced: packed integer weights and scales, the online
transform matrices with their inverses, activation clipping factors, merged norms, and the rest of
the base model, so the directory alone rebuilds the model. `load_quantized` rebuilds the frozen
fake-quant model from it (the paper's evaluation path) and reproduces its logits exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fq_core.adapters import get_adapter
from fq_core.checkpoint import (
    CheckpointConfig,
    LayerTransforms,
    ModelGeometry,
    QuantConfig,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from fq_core.errors import ConfigError
from fq_core.flat.attention import FlatAttention
from fq_core.flat.config import FlatConfig
from fq_core.flat.linear import FlatLinear
from fq_core.flat.mlp import FlatMLP
from fq_core.flat.model import attach_flat_modules
from fq_core.quant.pack import pack_int4, unpack_int4
from fq_core.quant.quantizers import ActivationQuantizer
from fq_core.quant.spec import QuantSpec
from fq_core.transforms.affine import KroneckerAffine
from fq_core.transforms.matrices import FixedMatrix


def _linears(attention: FlatAttention, mlp: FlatMLP) -> dict[str, FlatLinear]:
    return {
        "self_attn.q_proj": attention.q_proj,
        "self_attn.k_proj": attention.k_proj,
        "self_attn.v_proj": attention.v_proj,
        "self_attn.o_proj": attention.o_proj,
        "mlp.gate_proj": mlp.gate_proj,
        "mlp.up_proj": mlp.up_proj,
        "mlp.down_proj": mlp.down_proj,
    }


def _act_quantizers(attention: FlatAttention, mlp: FlatMLP) -> dict[str, ActivationQuantizer]:
    return {
        "attn_in": attention.attn_in.quant,
        "o_in": attention.o_in.quant,
        "mlp_in": mlp.mlp_in.quant,
        "down_in": mlp.down_in.quant,
        "k_cache": attention.k_cache.quant,
        "v_cache": attention.v_cache.quant,
    }


def _norms(layer: nn.Module, names: Any, qk_norm: bool) -> dict[str, nn.Module]:
    norms = {
        "input_layernorm": getattr(layer, names.input_norm),
        "post_attention_layernorm": getattr(layer, names.post_attention_norm),
    }
    if qk_norm:
        attention = getattr(layer, names.attention)
        norms["self_attn.q_norm"], norms["self_attn.k_norm"] = attention.q_norm, attention.k_norm
    return norms


def _kron_sites(attention: FlatAttention, mlp: FlatMLP) -> dict[str, KroneckerAffine | None]:
    return {
        "attn_in": attention.attn_in.transform,
        "mlp_in": mlp.mlp_in.transform,
        "down_in": mlp.down_in.transform,
    }


def _fixed(factor: Any, where: str) -> FixedMatrix:
    if not isinstance(factor, FixedMatrix):
        raise ConfigError(
            f"{where} is not frozen: calibrate the model (or freeze_layer every layer) before saving"
        )
    return factor


def checkpoint_from_model(
    model: nn.Module, options: dict[str, Any] | None = None
) -> tuple[CheckpointConfig, dict[str, torch.Tensor]]:
    """The checkpoint config and tensors of a frozen flat model."""
    flat_config: FlatConfig | None = getattr(model, "flat_config", None)
    if flat_config is None:
        raise ConfigError("the model has no flat modules: run fq_core.flat.quantize_ (and calibration) first")
    if not flat_config.act.dynamic:
        raise ConfigError(
            "static activation quantisation cannot be saved in schema v1: use dynamic activations"
        )
    geometry = get_adapter(model).geometry(model.config)
    tensors: dict[str, torch.Tensor] = {
        "embed_tokens.weight": model.get_input_embeddings().weight,
        "norm.weight": getattr(model, "model", model).norm.weight,
    }
    if not geometry["tie_word_embeddings"]:
        tensors["lm_head.weight"] = model.get_output_embeddings().weight
    layer_transforms = []
    for i in range(geometry["num_layers"]):
        layer_dict, transforms = layer_tensors(model, i)
        tensors.update(layer_dict)
        if transforms is not None:
            layer_transforms.append(transforms)
    config = CheckpointConfig(
        method=flat_config.method,
        quant=QuantConfig(flat_config.weight, flat_config.act, *_kv_specs(model)),
        model=ModelGeometry(**geometry, hf_config=json.loads(model.config.to_json_string(use_diff=False))),
        layers=tuple(layer_transforms) if flat_config.has_transforms else None,
        options={**flat_config.to_dict(), **(options or {})},
    )
    return config, {name: t.detach().contiguous() for name, t in tensors.items()}


def _kv_specs(model: nn.Module) -> tuple[QuantSpec, QuantSpec]:
    """The KV specs as the attention modules apply them (group sizes capped at head_dim)."""
    adapter = get_adapter(model)
    attention = getattr(adapter.decoder_layers(model)[0], adapter.names.attention)
    return attention.k_cache.quant.spec, attention.v_cache.quant.spec


def layer_tensors(model: nn.Module, index: int) -> tuple[dict[str, torch.Tensor], LayerTransforms | None]:
    """The checkpoint tensors of one frozen decoder layer (names `layers.{index}.*`) and its factor sizes.

    Calibration writes these per layer as it goes, so a killed run can resume.
    """
    adapter = get_adapter(model)
    names, qk_norm = adapter.names, adapter.qk_norm
    layer = adapter.decoder_layers(model)[index]
    attention, mlp = getattr(layer, names.attention), getattr(layer, names.mlp)
    if not (attention.frozen and mlp.frozen):
        raise ConfigError(
            f"layer {index} is not frozen: finish its calibration (or freeze_layer it) before saving"
        )
    prefix = f"layers.{index}."
    tensors: dict[str, torch.Tensor] = {}
    for name, norm in _norms(layer, names, qk_norm).items():
        tensors[f"{prefix}{name}.weight"] = norm.weight
    for name, linear in _linears(attention, mlp).items():
        tensors.update(_linear_tensors(f"{prefix}{name}.", linear))
    for site, quantizer in _act_quantizers(attention, mlp).items():
        if quantizer.spec.enabled:
            clip = quantizer.clip_factors() or (torch.ones(1), torch.ones(1))
            tensors[f"{prefix}{site}.clip_max"] = clip[0].detach().float().reshape(1)
            tensors[f"{prefix}{site}.clip_min"] = clip[1].detach().float().reshape(1)
    transforms = None
    if attention.attn_in.transform is not None:
        transforms = _transform_tensors(prefix, attention, mlp, tensors)
    return {name: t.detach().contiguous() for name, t in tensors.items()}, transforms


def _linear_tensors(prefix: str, linear: FlatLinear) -> dict[str, torch.Tensor]:
    spec = linear.spec
    out: dict[str, torch.Tensor] = {}
    if spec.enabled:
        out[prefix + "qweight"] = pack_int4(linear.qweight) if spec.bits == 4 else linear.qweight
        out[prefix + "scale"] = linear.scale.float()
        if not spec.symmetric:
            out[prefix + "zero"] = linear.zero.to(torch.uint8)
    else:
        out[prefix + "weight"] = linear.weight
    if linear.bias is not None:
        out[prefix + "bias"] = linear.bias
    return out


def _transform_tensors(
    prefix: str, attention: FlatAttention, mlp: FlatMLP, tensors: dict[str, torch.Tensor]
) -> LayerTransforms:
    sizes: dict[str, tuple[int, int]] = {}
    for site, transform in _kron_sites(attention, mlp).items():
        left, right = _fixed(transform.left, prefix + site), _fixed(transform.right, prefix + site)
        if transform.scale is not None:
            raise ConfigError(f"{prefix}{site} still has an unmerged channel scale: freeze the layer first")
        tensors[f"{prefix}{site}.left"], tensors[f"{prefix}{site}.left_inv"] = left.matrix(), left.inverse()
        tensors[f"{prefix}{site}.right"], tensors[f"{prefix}{site}.right_inv"] = (
            right.matrix(),
            right.inverse(),
        )
        sizes[site] = (left.size, right.size)
    heads, v_out = _fixed(attention.o_in.heads, prefix + "o_in"), _fixed(attention.v_out, prefix + "v_out")
    tensors[prefix + "o_in.heads"], tensors[prefix + "o_in.heads_inv"] = heads.matrix(), heads.inverse()
    tensors[prefix + "v_out.matrix"], tensors[prefix + "v_out.matrix_inv"] = v_out.matrix(), v_out.inverse()
    k_size = None
    if attention.k_cache.factor is not None:
        k = _fixed(attention.k_cache.factor, prefix + "k_cache")
        tensors[prefix + "k_cache.matrix"], tensors[prefix + "k_cache.matrix_inv"] = k.matrix(), k.inverse()
        k_size = k.size
    return LayerTransforms(
        attn_in=sizes["attn_in"],
        o_in=(heads.size, v_out.size),
        mlp_in=sizes["mlp_in"],
        down_in=sizes["down_in"],
        k_cache=k_size,
    )


def save_quantized(
    model: nn.Module,
    path: str | Path,
    options: dict[str, Any] | None = None,
    producers: dict[str, str] | None = None,
) -> CheckpointConfig:
    """Write a frozen flat model as a checkpoint directory (atomically)."""
    config, tensors = checkpoint_from_model(model, options)
    if producers:
        config = CheckpointConfig(**{**config.__dict__, "producers": {**config.producers, **producers}})
    return save_checkpoint(path, config, tensors)


@torch.no_grad()
def load_quantized(
    path: str | Path, model: nn.Module | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> nn.Module:
    """Rebuild the frozen fake-quant model of a checkpoint.

    model: the base model to put it into (its geometry must match the checkpoint's, or a
    ModelMismatchError names the first difference); by default the architecture is rebuilt from the
    stored HF config, since the checkpoint holds every tensor.
    """
    if model is None:
        model = model_from_hf_config(read_config(path).model.hf_config, dtype)
    geometry = get_adapter(model).geometry(model.config)
    checkpoint = load_checkpoint(path, expected_model=geometry, device=device)
    config, tensors = checkpoint.config, checkpoint.tensors
    model.to(device)
    flat_config = FlatConfig(
        method="rtn" if config.method == "rtn" else "flatquant",
        weight=config.quant.weight,
        act=config.quant.act,
        key=config.quant.key,
        value=config.quant.value,
        lwc=False,
        lac=False,
        channel_scale=False,
    )
    attach_flat_modules(model, flat_config)
    model.flat_config = FlatConfig(**{**flat_config.__dict__, "method": config.method})

    def copy(dst: torch.Tensor, name: str) -> None:
        dst.copy_(tensors[name].to(dst.dtype))

    copy(model.get_input_embeddings().weight, "embed_tokens.weight")
    copy(getattr(model, "model", model).norm.weight, "norm.weight")
    if not geometry["tie_word_embeddings"]:
        copy(model.get_output_embeddings().weight, "lm_head.weight")
    for i in range(geometry["num_layers"]):
        load_layer(model, i, tensors)
    return model.to(device)


@torch.no_grad()
def load_layer(model: nn.Module, index: int, tensors: dict[str, torch.Tensor]) -> None:
    """Install a frozen layer from its checkpoint tensors (the inverse of `layer_tensors`)."""
    adapter = get_adapter(model)
    prefix = f"layers.{index}."
    layer = adapter.decoder_layers(model)[index]
    attention, mlp = getattr(layer, adapter.names.attention), getattr(layer, adapter.names.mlp)
    for name, norm in _norms(layer, adapter.names, adapter.qk_norm).items():
        norm.weight.copy_(tensors[f"{prefix}{name}.weight"].to(norm.weight.dtype))
    for name, linear in _linears(attention, mlp).items():
        _load_linear(linear, f"{prefix}{name}.", tensors)
    for site, quantizer in _act_quantizers(attention, mlp).items():
        if quantizer.spec.enabled:
            quantizer.set_clip_factors(
                tensors[f"{prefix}{site}.clip_max"], tensors[f"{prefix}{site}.clip_min"]
            )
    if prefix + "attn_in.left" in tensors:
        _load_transforms(prefix, attention, mlp, tensors)
    attention.frozen = mlp.frozen = True


def _fixed_from(tensors: dict[str, torch.Tensor], matrix: str, inverse: str) -> FixedMatrix:
    return FixedMatrix(tensors[matrix], tensors[inverse])


def _load_transforms(
    prefix: str, attention: FlatAttention, mlp: FlatMLP, tensors: dict[str, torch.Tensor]
) -> None:
    for site, owner in (("attn_in", attention.attn_in), ("mlp_in", mlp.mlp_in), ("down_in", mlp.down_in)):
        p = prefix + site
        owner.transform = KroneckerAffine(
            _fixed_from(tensors, p + ".left", p + ".left_inv"),
            _fixed_from(tensors, p + ".right", p + ".right_inv"),
        )
    attention.o_in.heads = _fixed_from(tensors, prefix + "o_in.heads", prefix + "o_in.heads_inv")
    attention.v_out = _fixed_from(tensors, prefix + "v_out.matrix", prefix + "v_out.matrix_inv")
    if prefix + "k_cache.matrix" in tensors:
        attention.k_cache.factor = _fixed_from(
            tensors, prefix + "k_cache.matrix", prefix + "k_cache.matrix_inv"
        )


def _load_linear(linear: FlatLinear, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    spec, dtype = linear.spec, linear.weight.dtype
    if spec.enabled:
        q = tensors[prefix + "qweight"]
        if spec.bits == 4:
            q = unpack_int4(q, signed=spec.symmetric)
            q = q if spec.symmetric else q.to(torch.uint8)
        linear.register_buffer("qweight", q)
        linear.register_buffer("scale", tensors[prefix + "scale"].float())
        zero = tensors.get(prefix + "zero")
        linear.register_buffer("zero", torch.zeros_like(linear.scale) if zero is None else zero.float())
        linear.weight = linear.dequantized().to(dtype)
    else:
        linear.weight = tensors[prefix + "weight"].to(dtype)
    if prefix + "bias" in tensors:
        linear.bias = tensors[prefix + "bias"].to(dtype)
    linear.frozen = True


def model_from_hf_config(hf_config: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    """The base architecture of a checkpoint's `model.hf_config`, randomly initialised, in eval mode.

    Built under `torch.device("meta")` it allocates nothing: the int4 runtime (fq-kernels) does that
    and fills in only the modules it keeps.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(hf_config)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
