"""A flatquant checkpoint in the compressed-tensors layout (what llm-compressor writes, vLLM reads).

    OUT/
      config.json                        the base model's HF config + "quantization_config"
      model.safetensors                  HF names: embeddings, norms, head in float; per linear
                                         weight_packed (int32), weight_scale, weight_shape (+ bias)
      flatquant_config.json              the flatquant checkpoint config (schema v1), verbatim
      flatquant_transforms.safetensors   what compressed-tensors has no place for: the online
                                         transforms (and inverses) and the activation / KV clipping
                                         factors, under their flatquant names (docs/deploy.md)

A compressed-tensors reader gets the int4 weights and their scales; running the model as calibrated
also needs the second tensor set (docs/deploy.md says what a serving engine must add). Reading the
directory back with `load_compressed_tensors` gives the original checkpoint, tensor for tensor.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fq_core.checkpoint import (
    Checkpoint,
    CheckpointConfig,
    CheckpointCorruptError,
    CheckpointNotFoundError,
    QuantConfig,
    expected_tensors,
    linear_shapes,
    load_checkpoint,
)
from fq_core.checkpoint.checks import check_inventory
from fq_core.errors import ConfigError
from fq_core.quant import QuantSpec, pack_int4, unpack_int4
from fq_kernels.export.atomic import atomic_directory
from fq_kernels.export.int32_pack import pack_int32, unpack_int32

HF_CONFIG = "config.json"
MODEL_FILE = "model.safetensors"
FLATQUANT_CONFIG = "flatquant_config.json"
TRANSFORMS_FILE = "flatquant_transforms.safetensors"
FORMAT = "pack-quantized"


def export_compressed_tensors(checkpoint_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write `checkpoint_dir` (validated first) as a compressed-tensors directory `output`, atomically."""
    checkpoint = load_checkpoint(checkpoint_dir)
    config = checkpoint.config
    check_exportable(config)
    model_tensors, extra = _hf_tensors(checkpoint)
    hf_config = {**config.model.hf_config, "quantization_config": quantization_config(config.quant)}
    own = replace(config, files=(MODEL_FILE, TRANSFORMS_FILE))
    with atomic_directory(Path(output)) as tmp:
        save_file(model_tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        save_file(extra, str(tmp / TRANSFORMS_FILE), metadata={"format": "pt"})
        (tmp / HF_CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        (tmp / FLATQUANT_CONFIG).write_text(json.dumps(own.to_dict(), indent=2) + "\n", encoding="utf-8")
    return Path(output)


def check_exportable(config: CheckpointConfig) -> None:
    """pack-quantized holds symmetric int4 weights (zero points would need their own packing)."""
    w = config.quant.weight
    if not (w.bits == 4 and w.symmetric and w.granularity in ("channel", "group")):
        raise ConfigError(
            f"compressed-tensors export takes 4-bit symmetric weights (per channel or group); this "
            f"checkpoint has {w.to_dict()}"
        )


def _args(spec: QuantSpec, dynamic: bool) -> dict[str, Any] | None:
    """A QuantSpec as compressed-tensors' QuantizationArgs (None: not quantised).

    dynamic: scales computed per call (activations, KV) or stored (weights, whatever fq-core's
    spec says: its `dynamic` only means something for activations).
    """
    if not spec.enabled:
        return None
    return {
        "num_bits": spec.bits,
        "type": "int",
        "symmetric": spec.symmetric,
        "strategy": spec.granularity,
        "group_size": spec.group_size,
        "dynamic": dynamic,
    }


def quantization_config(quant: QuantConfig) -> dict[str, Any]:
    """config.json's "quantization_config": every decoder Linear is one scheme; the head is not quantised."""
    return {
        "quant_method": "compressed-tensors",
        "format": FORMAT,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": _args(quant.weight, dynamic=False),
                "input_activations": _args(quant.act, dynamic=quant.act.dynamic),
                "output_activations": None,
                "format": FORMAT,
            }
        },
        "ignore": ["lm_head"],
        "kv_cache_scheme": _args(quant.key, dynamic=quant.key.dynamic),  # keys and values alike
    }


def _hf_name(name: str) -> str:
    """flatquant names are relative to the decoder; a `*ForCausalLM` holds it as `model`."""
    return name if name == "lm_head.weight" else f"model.{name}"


def _linear_names(config: CheckpointConfig) -> dict[str, tuple[int, int]]:
    shapes = linear_shapes(config.model).items()
    return {f"layers.{i}.{name}": shape for i in range(config.model.num_layers) for name, shape in shapes}


def _hf_tensors(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model.safetensors, flatquant_transforms.safetensors) contents."""
    remaining = dict(checkpoint.tensors)
    model: dict[str, torch.Tensor] = {}
    for name, (out_features, in_features) in _linear_names(checkpoint.config).items():
        q = unpack_int4(remaining.pop(f"{name}.qweight"), signed=True)
        model[f"model.{name}.weight_packed"] = pack_int32(q)
        model[f"model.{name}.weight_scale"] = remaining.pop(f"{name}.scale")
        model[f"model.{name}.weight_shape"] = torch.tensor([out_features, in_features])
        if f"{name}.bias" in remaining:
            model[f"model.{name}.bias"] = remaining.pop(f"{name}.bias")
    for name in [n for n in remaining if n.endswith(".weight")]:  # embeddings, norms, head
        model[_hf_name(name)] = remaining.pop(name)
    return model, remaining


def load_compressed_tensors(path: str | os.PathLike[str]) -> Checkpoint:
    """Read an `export_compressed_tensors` directory back as the flatquant checkpoint it came from."""
    root = Path(path)
    for name in (FLATQUANT_CONFIG, MODEL_FILE, TRANSFORMS_FILE):
        if not (root / name).is_file():
            raise CheckpointNotFoundError(
                f"{root} has no {name}: not written by fq export --format compressed-tensors"
            )
    config = CheckpointConfig.from_dict(json.loads((root / FLATQUANT_CONFIG).read_text(encoding="utf-8")))
    try:
        stored = load_file(str(root / MODEL_FILE))
        tensors = load_file(str(root / TRANSFORMS_FILE))
    except SafetensorError as error:
        raise CheckpointCorruptError(f"{root}: unreadable safetensors file ({error})") from error
    where = f"compressed-tensors export {root}"

    def take(name: str) -> torch.Tensor:
        if name not in stored:
            raise CheckpointCorruptError(f"{where}: {MODEL_FILE} has no tensor {name!r}")
        return stored.pop(name)

    for name, (_, in_features) in _linear_names(config).items():
        prefix = f"model.{name}."
        tensors[f"{name}.qweight"] = pack_int4(unpack_int32(take(prefix + "weight_packed"), in_features))
        tensors[f"{name}.scale"] = take(prefix + "weight_scale")
        take(prefix + "weight_shape")
        if prefix + "bias" in stored:
            tensors[f"{name}.bias"] = take(prefix + "bias")
    tensors.update({name.removeprefix("model."): t for name, t in stored.items()})
    specs = expected_tensors(config)
    check_inventory(specs, {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}, where)
    return Checkpoint(config, {name: tensors[name] for name in specs})
