"""The methods `fq eval` compares, each built from the same FP model.

- fp: the model as loaded (float16 on CUDA like the reference, float32 on the CPU);
- rtn: plain round-to-nearest, weights per output channel, activations per token, no transform;
- hadamard: QuaRot-style fixed Hadamard(-like) rotations at FlatQuant's places, then RTN;
- flatquant: a calibrated checkpoint from fq-calib (`load_quantized`), with the bits it was made for;
  with `real`, the same checkpoint on fq-kernels' int4 kernels (`fq eval --real`) instead.

Quantised methods work on a deep copy, so the FP model stays intact for the next method.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fq_core.errors import ConfigError
from fq_core.flat import FlatConfig, load_quantized, quantize_
from fq_core.quant import NO_QUANT, QuantSpec

METHODS = ("fp", "rtn", "hadamard", "flatquant")
METHOD_ALIASES = {"fp16": "fp", "fp32": "fp", "bf16": "fp", "quarot": "hadamard"}
FP_LABELS = {torch.float16: "FP16", torch.bfloat16: "BF16", torch.float32: "FP32"}
"""The FP row says what it really ran in: float32 on the CPU even when asked for as fp16."""
KV_GROUP = 128
"""KV quantisation group (asymmetric, capped at head_dim), as the reference's KV4."""


@dataclass(frozen=True)
class Bits:
    """Bit widths of weights, activations and the KV cache (16 = not quantised)."""

    w: int = 4
    a: int = 4
    kv: int = 16

    def specs(self) -> dict[str, QuantSpec]:
        """QuantSpecs as the paper's W4A4KV4: sym per-channel W, sym per-token A, asym group-128 KV."""
        kv = QuantSpec(self.kv, False, "group", KV_GROUP) if self.kv < 16 else NO_QUANT
        return {
            "weight": QuantSpec(self.w, True, "channel") if self.w < 16 else NO_QUANT,
            "act": QuantSpec(self.a, True, "token") if self.a < 16 else NO_QUANT,
            "key": kv,
            "value": kv,
        }


def parse_methods(spec: str, with_checkpoint: bool) -> list[str]:
    """Method names from "fp16,rtn,...": aliases resolved, fp first, flatquant only with a checkpoint."""
    names = []
    for raw in spec.split(","):
        raw = raw.strip().lower()
        if not raw:
            continue
        name = METHOD_ALIASES.get(raw, raw)
        if name not in METHODS:
            raise ConfigError(f"unknown method {raw!r}: use any of {', '.join(METHODS)} (fp16 = fp)")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("--method names no method")
    if "flatquant" in names and not with_checkpoint:
        raise ConfigError("method flatquant evaluates a calibrated checkpoint: pass --checkpoint DIR")
    return sorted(names, key=METHODS.index)


def flat_config(method: str, bits: Bits) -> FlatConfig:
    return FlatConfig(method=method, **bits.specs())  # type: ignore[arg-type]


def bits_of(model: nn.Module) -> dict[str, int]:
    """{"w", "a", "k", "v"} bits of a flat or int4 model (16 everywhere for a plain one)."""
    config = getattr(model, "flat_config", None) or getattr(model, "fq_quant", None)
    if config is None:
        return {"w": 16, "a": 16, "k": 16, "v": 16}
    return {"w": config.weight.bits, "a": config.act.bits, "k": config.key.bits, "v": config.value.bits}


def bits_label(bits: dict[str, int]) -> str:
    """W4A4KV16-style label; the KV part as K4V8 when keys and values differ."""
    kv = f"KV{bits['k']}" if bits["k"] == bits["v"] else f"K{bits['k']}V{bits['v']}"
    return f"W{bits['w']}A{bits['a']}{kv}"


def build(
    method: str,
    fp_model: nn.Module,
    bits: Bits,
    checkpoint: Path | None,
    device: torch.device,
    real: bool = False,
) -> nn.Module:
    """The model of `method`: the FP model itself for fp, else a quantised deep copy of it (or, for
    flatquant with `real`, the checkpoint's int4 model, which needs no FP weights)."""
    if method == "fp":
        return fp_model
    if method == "flatquant":
        assert checkpoint is not None
        if real:
            return int4_model(checkpoint, device, next(fp_model.parameters()).dtype)
        return load_quantized(checkpoint, model=copy.deepcopy(fp_model), device=str(device)).eval()
    model = copy.deepcopy(fp_model)
    quantize_(model, flat_config(method, bits))
    return model.eval()


def int4_model(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The checkpoint on fq-kernels' int4 GEMMs and KV cache; fq-kernels is an optional dependency."""
    try:
        from fq_kernels.runtime import load_int4_model
    except ImportError as error:
        raise ConfigError(
            "--real runs the checkpoint on fq-kernels' int4 kernels: pip install fq-eval[kernels]"
        ) from error
    return load_int4_model(checkpoint, device=device, dtype=dtype)


def describe(method: str, model: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    """Row header facts: method, its bits and label (marked when int4 kernels ran it), compute dtype."""
    bits = bits_of(model)
    real = getattr(model, "fq_quant", None) is not None
    label = FP_LABELS.get(dtype, "FP") if method == "fp" else bits_label(bits) + (" int4" if real else "")
    return {
        "method": method,
        "bits": bits,
        "label": label,
        "real": real,
        "dtype": str(dtype).removeprefix("torch."),
    }
