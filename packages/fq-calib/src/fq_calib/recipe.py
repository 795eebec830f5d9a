"""`CalibRecipe`: every switch of a calibration run, with the paper's defaults and named presets.

`paper` is the reference code's recipe (128 x 2048 windows, 15 epochs, batch 4, AdamW lr 5e-3 and
10x for clipping factors, cosine to lr * 1e-3, FP outputs fed forward). `best` keeps that budget and
adds the levers our ablation kept (docs/benchmarks/accuracy.md); `quickstart` is `best` shrunk so
the embedded model calibrates in minutes on two CPU cores. Bit-width presets change only the
quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fq_core.errors import ConfigError
from fq_core.flat import FlatConfig
from fq_core.quant import NO_QUANT, QuantSpec

FeedForward = Literal["fp", "quant"]
WeightRounding = Literal["rtn", "gptq"]
LayerLoss = Literal["mse", "lm-head"]


@dataclass(frozen=True)
class CalibRecipe:
    """One calibration run.

    flat: what is quantised and how (bits, lwc/lac, channel scaling, parametrisation).
    nsamples x seqlen: calibration windows; epochs over them per layer, in batches of batch_size.
    lr: AdamW learning rate of transforms and channel scales; clip_lr_scale multiplies it for the
        clipping factors; the cosine schedule ends at lr * lr_min_ratio.
    weight_decay: AdamW's (the reference keeps torch's default 0.01).
    feed: which activations each layer is trained on: "fp" (the reference: the FP model's) or
        "quant" (the frozen quantised layers' outputs, while the targets stay the FP model's, so
        each layer learns to correct the error accumulated before it).
    amp: autocast the layer forward in bfloat16 on CUDA (transforms stay float32); CPU runs float32.
    weight_rounding: "rtn" rounds the merged weights to nearest; "gptq" runs GPTQ on them with the
        layer's real (transformed, quantised) inputs.
    loss: "mse" (the reference: every hidden direction counts the same) or "lm-head" (the output
        error measured half plainly, half through the LM head, `fq_calib.loss.output_metric`).
    """

    flat: FlatConfig = field(default_factory=FlatConfig)
    nsamples: int = 128
    seqlen: int = 2048
    epochs: int = 15
    batch_size: int = 4
    lr: float = 5e-3
    clip_lr_scale: float = 10.0
    lr_min_ratio: float = 1e-3
    weight_decay: float = 0.01
    feed: FeedForward = "fp"
    amp: bool = True
    weight_rounding: WeightRounding = "rtn"
    loss: LayerLoss = "mse"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.flat.method != "flatquant":
            raise ConfigError(
                f"calibration trains FlatQuant transforms; method {self.flat.method!r} needs none"
            )
        for name in ("nsamples", "seqlen", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.nsamples % self.batch_size:
            raise ConfigError(
                f"nsamples ({self.nsamples}) must be a multiple of batch_size ({self.batch_size})"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.feed not in ("fp", "quant"):
            raise ConfigError(f"feed must be 'fp' or 'quant', got {self.feed!r}")
        if self.weight_rounding not in ("rtn", "gptq"):
            raise ConfigError(f"weight_rounding must be 'rtn' or 'gptq', got {self.weight_rounding!r}")
        if self.loss not in ("mse", "lm-head"):
            raise ConfigError(f"loss must be 'mse' or 'lm-head', got {self.loss!r}")

    @property
    def steps_per_epoch(self) -> int:
        return self.nsamples // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "flat"}
        return {"flat": self.flat.to_dict(), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibRecipe:
        # runs recorded before the loss lever existed used the plain MSE
        return cls(**{"loss": "mse", **data, "flat": FlatConfig.from_dict(data["flat"])})


KV4 = QuantSpec(4, symmetric=False, granularity="group", group_size=128)

BITS_PRESETS: dict[str, dict[str, QuantSpec]] = {
    "w4a4": {"weight": QuantSpec(4, True, "channel"), "act": QuantSpec(4, True, "token")},
    "w4a4kv4": {
        "weight": QuantSpec(4, True, "channel"),
        "act": QuantSpec(4, True, "token"),
        "key": KV4,
        "value": KV4,
    },
    "w4a16": {"weight": QuantSpec(4, True, "channel"), "act": NO_QUANT},
    "w8a8": {"weight": QuantSpec(8, True, "channel"), "act": QuantSpec(8, True, "token")},
}

BEST: dict[str, Any] = {"batch_size": 1, "feed": "quant", "asym_act": True, "weight_rounding": "gptq"}
"""The levers that beat the paper's recipe at equal budget (docs/benchmarks/accuracy.md): one
window per step (4x the optimiser steps for the same compute), each layer trained on the quantised
stream against the FP targets, asymmetric per-token activations, GPTQ rounding of the merged
weights."""

RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # the reference code's recipe, bit for bit
    "best": BEST,  # the paper's budget with our levers
    # Small enough for 2 CPU cores in a few minutes on the embedded 135M model.
    "quickstart": {**BEST, "nsamples": 16, "seqlen": 512, "epochs": 2},
}


def preset(recipe: str = "paper", bits: str = "w4a4", **overrides: Any) -> CalibRecipe:
    """A recipe from a recipe preset and a bit-width preset, then explicit overrides (which may
    replace the preset's quantisers too, e.g. `act=QuantSpec(4, symmetric=False, granularity="token")`).

    `asym_act` (a preset lever, or an override) makes the activation quantiser asymmetric at
    whatever bit width the bits preset or an `act` override gives it.
    """
    if recipe not in RECIPE_PRESETS:
        raise ConfigError(f"unknown recipe {recipe!r}: use one of {', '.join(RECIPE_PRESETS)}")
    if bits not in BITS_PRESETS:
        raise ConfigError(f"unknown bits preset {bits!r}: use one of {', '.join(BITS_PRESETS)}")
    settings = {**RECIPE_PRESETS[recipe], **overrides}
    asym_act = settings.pop("asym_act", False)
    flat_overrides = {
        k: settings.pop(k) for k in list(settings) if k in FlatConfig.__dataclass_fields__ and k != "seed"
    }
    if "seed" in settings:  # one seed for the windows and the transforms' random init
        flat_overrides["seed"] = settings["seed"]
    specs = {**BITS_PRESETS[bits], **flat_overrides}
    if asym_act and specs["act"].enabled:
        specs["act"] = replace(specs["act"], symmetric=False)
    return CalibRecipe(flat=replace(FlatConfig(), **specs), **settings)
