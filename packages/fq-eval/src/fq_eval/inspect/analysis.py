"""Sites x transforms -> statistics, and the run over some layers of a FlatQuant checkpoint.

Every transform is applied to the same FP activations X (real text through the unquantised model)
and the same FP weights W, and X' W'^T = X W^T for each, so the numbers differ only by how well X'
and W' survive the checkpoint's quantisers. Plain round-to-nearest is used throughout, without the
checkpoint's learned clipping: that isolates what the transform alone buys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fq_core.checkpoint import CheckpointConfig, read_config
from fq_core.data import calibration_windows, pydoc_text, split_calibration_eval, tokenize
from fq_core.errors import ConfigError
from fq_core.flat import load_quantized
from fq_core.models import load_model
from fq_core.quant.functional import fake_quant
from fq_core.quant.spec import QuantSpec
from fq_core.transforms import KroneckerAffine
from fq_eval.inspect.capture import SITES, capture_site_inputs, site_weight
from fq_eval.inspect.flatness import channel_magnitude, flatness, relative_error
from fq_eval.inspect.learned import learned_transforms
from fq_eval.inspect.transforms import compared_transforms
from fq_eval.ppl_data import PYDOC_SEQLEN, PYDOC_WINDOWS

WINDOW_SEED = 0
HADAMARD_SEED = 0
"""Seeds the odd factor of Hadamard-like matrices (sizes that are not powers of two)."""


@dataclass(frozen=True)
class Stats:
    """One transform at one site. Errors are relative, per row: mean of ||error||^2 / ||exact||^2."""

    act_magnitude: torch.Tensor
    """Per-channel max |X'| in channel order (what the plots sort and draw)."""
    weight_magnitude: torch.Tensor
    act_flatness: float
    weight_flatness: float
    act_error: float
    """Of quantising X' with the checkpoint's activation spec (per token)."""
    weight_error: float
    """Of quantising W' with the checkpoint's weight spec (per output channel)."""
    output_error: float
    """Of Q(X') Q(W')^T against X W^T: what the linears' outputs lose, comparable across transforms."""

    def numbers(self) -> dict[str, float]:
        return {
            "act_flatness": self.act_flatness,
            "weight_flatness": self.weight_flatness,
            "act_error": self.act_error,
            "weight_error": self.weight_error,
            "output_error": self.output_error,
        }


@dataclass(frozen=True)
class LayerReport:
    layer: int
    sites: dict[str, dict[str, Stats]]
    """site -> transform -> statistics."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "sites": {
                site: {name: stats.numbers() for name, stats in by_transform.items()}
                for site, by_transform in self.sites.items()
            },
        }


@torch.no_grad()
def site_stats(
    x: torch.Tensor,
    w: torch.Tensor,
    transforms: dict[str, KroneckerAffine],
    act_spec: QuantSpec,
    weight_spec: QuantSpec,
) -> dict[str, Stats]:
    """Statistics of every transform at one site with activations x [tokens, n] and weights w [out, n]."""
    exact = x @ w.T
    out = {}
    for name, transform in transforms.items():
        transform = transform.to(x.device)
        xt, wt = transform(x), transform.transform_weight_exact(w).to(x.dtype)
        xq, wq = fake_quant(xt, act_spec), fake_quant(wt, weight_spec)
        act_magnitude, weight_magnitude = channel_magnitude(xt), channel_magnitude(wt)
        out[name] = Stats(
            act_magnitude=act_magnitude.cpu(),
            weight_magnitude=weight_magnitude.cpu(),
            act_flatness=flatness(act_magnitude),
            weight_flatness=flatness(weight_magnitude),
            act_error=relative_error(xq, xt),
            weight_error=relative_error(wq, wt),
            output_error=relative_error(xq @ wq.T, exact),
        )
    return out


def plan_layers(checkpoint: Path, layer: int | None, all_layers: bool) -> tuple[CheckpointConfig, list[int]]:
    """The checkpoint's config and the layers to inspect, refusing bad requests before any loading."""
    if all_layers == (layer is not None):
        raise ConfigError("pass either --layer L or --all-layers")
    config = read_config(checkpoint)
    if config.method != "flatquant":
        raise ConfigError(
            f"{checkpoint} is a {config.method} checkpoint: fq inspect compares a flatquant checkpoint's "
            "learned transforms with FP, per-channel scaling and Hadamard; pass one written by fq calib"
        )
    count = config.model.num_layers
    if layer is not None and not 0 <= layer < count:
        raise ConfigError(
            f"--layer {layer} is out of range: {checkpoint} has {count} layers, pass 0..{count - 1}"
        )
    return config, list(range(count)) if all_layers else [layer]


def text_windows(tokenizer: Any, samples: int, seqlen: int) -> torch.Tensor:
    """[samples, seqlen] windows of the pydoc corpus's calibration part (never its evaluation tail)."""
    ids = split_calibration_eval(tokenize(tokenizer, pydoc_text()), PYDOC_WINDOWS, PYDOC_SEQLEN)[0]
    return calibration_windows(ids, samples, seqlen, WINDOW_SEED)


def inspect_checkpoint(
    checkpoint: Path,
    config: CheckpointConfig,
    layers: Sequence[int],
    model: str,
    samples: int,
    seqlen: int,
    device: torch.device,
    status: Callable[[str], None] = lambda message: None,
) -> list[LayerReport]:
    """Load the FP model and the checkpoint, capture the sites' inputs on text, and measure `layers`."""
    status(f"loading {model} and {checkpoint}")
    fp, tokenizer = load_model(model, device=device)
    flat = load_quantized(checkpoint, model=copy.deepcopy(fp), device=str(device))
    status(f"capturing activations on {samples} x {seqlen} tokens of pydoc text")
    inputs = capture_site_inputs(fp, text_windows(tokenizer, samples, seqlen), layers)
    reports = []
    for index in layers:
        status(f"layer {index}")
        learned = learned_transforms(flat, fp, index)
        generator = torch.Generator().manual_seed(HADAMARD_SEED)
        sites = {}
        for site in SITES:
            x, w = inputs[index].pop(site), site_weight(fp, index, site)
            transforms = compared_transforms(
                learned[site], channel_magnitude(x), channel_magnitude(w), generator
            )
            sites[site] = site_stats(x, w, transforms, config.quant.act, config.quant.weight)
        reports.append(LayerReport(index, sites))
    return reports
