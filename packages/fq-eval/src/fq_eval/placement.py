"""Where `fq eval` runs a model: one device, or spread over several through accelerate's device map.

A model larger than one GPU is evaluated the transformers way: accelerate's `infer_auto_device_map`
assigns whole decoder layers to the GPUs (then the CPU, then the disk, when `max_memory` runs out)
and `dispatch_model` moves each layer's weights there and hooks its forward to move activations
along. The FP weights stay in CPU memory as the master copy every method is built from; each
method's model is dispatched in turn and released before the next.

One hook more than accelerate adds: outputs come back to the device of the inputs, so perplexity,
lm-eval and the latency loops see logits where they put the tokens, whatever GPU ran the last layer.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from fq_core.devices import resolve_device
from fq_core.errors import ConfigError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""accelerate's strategies: auto = balanced over the GPUs; balanced_low_0 keeps GPU 0 light (for
generation's logits); sequential fills GPU 0 first, then GPU 1, ..."""


@dataclass(frozen=True)
class Placement:
    """One device (`device_map` None), or an accelerate strategy with optional per-device limits."""

    device: torch.device
    device_map: str | None = None
    max_memory: dict[int | str, str] = field(default_factory=dict)

    @property
    def spread(self) -> bool:
        return self.device_map is not None

    @property
    def devices(self) -> list[torch.device]:
        """Every device a placed model may use: all visible GPUs when spread, else the one device."""
        if self.spread and torch.cuda.is_available():
            return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
        return [self.device]

    @property
    def build_device(self) -> torch.device:
        """Where methods are built: the device itself, or the CPU when they are dispatched after."""
        return torch.device("cpu") if self.spread else self.device


def parse_placement(device: torch.device, device_map: str | None, max_memory: str | None) -> Placement:
    """Placement from `--device`, `--device-map` and `--max-memory 0=70GiB,1=70GiB,cpu=200GiB`."""
    if device_map is None:
        if max_memory:
            raise ConfigError(
                "--max-memory limits a --device-map: pass --device-map auto (or another strategy)"
            )
        return Placement(device)
    if device_map not in STRATEGIES:
        raise ConfigError(f"--device-map {device_map!r} is unknown: use one of {', '.join(STRATEGIES)}")
    limits: dict[int | str, str] = {}
    for item in (max_memory or "").split(","):
        if not item.strip():
            continue
        name, sep, size = item.partition("=")
        name, size = name.strip(), size.strip()
        if not sep or not size or not (name.isdigit() or name in ("cpu", "disk")):
            raise ConfigError(
                f"--max-memory takes DEVICE=SIZE items (0=70GiB,1=70GiB,cpu=200GiB), got {item.strip()!r}"
            )
        limits[int(name) if name.isdigit() else name] = size
    gpus = [key for key in limits if isinstance(key, int)]
    if any(key >= torch.cuda.device_count() for key in gpus):
        raise ConfigError(
            f"--max-memory names GPU {max(gpus)}, but {torch.cuda.device_count()} GPUs are visible"
        )
    return Placement(resolve_device("auto"), device_map, limits)


def device_map_for(model: nn.Module, placement: Placement) -> dict[str, int | str]:
    """accelerate's map of `model` (module name -> GPU index, 'cpu' or 'disk'), whole decoder
    layers per device."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    dtype = next(model.parameters()).dtype
    limits = placement.max_memory or None
    if placement.device_map != "sequential":
        limits = get_balanced_memory(
            model,
            max_memory=limits,
            no_split_module_classes=no_split,
            dtype=dtype,
            low_zero=placement.device_map == "balanced_low_0",
        )
    return infer_auto_device_map(model, max_memory=limits, no_split_module_classes=no_split, dtype=dtype)


@contextmanager
def placed(model: nn.Module, placement: Placement, master: bool = False) -> Iterator[nn.Module]:
    """`model` ready to run: as it is on one device, else dispatched over the device map (a copy of
    it when it is the `master` FP model, which must stay whole on the CPU), released on exit."""
    if not placement.spread:
        yield model
        return
    from accelerate import dispatch_model
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module, remove_hook_from_submodules

    target = copy.deepcopy(model) if master else model
    device_map = device_map_for(target, placement)
    skip = getattr(target, "_skip_keys_device_placement", None)
    with tempfile.TemporaryDirectory(prefix="fq-eval-offload-") as offload_dir:
        dispatch_model(target, device_map, offload_dir=offload_dir, skip_keys=skip, force_hooks=True)
        # Outputs back on the inputs' device (the KV cache stays where each layer wrote it).
        add_hook_to_module(target, AlignDevicesHook(io_same_device=True, skip_keys=skip), append=True)
        target.fq_device_map = device_map
        try:
            yield target
        finally:
            remove_hook_from_submodules(target)  # the caller drops the model and frees its memory


def model_devices(model: nn.Module) -> list[torch.device]:
    """The devices a model computes on: the GPUs of its device map (the CPU when the map has none),
    else its one device. The first is where its inputs go and its outputs come back."""
    device_map = getattr(model, "fq_device_map", None)
    if device_map is None:
        return [next((p.device for p in model.parameters()), torch.device("cpu"))]
    gpus = sorted({where for where in device_map.values() if isinstance(where, int)})
    return [torch.device("cuda", index) for index in gpus] or [torch.device("cpu")]


def input_device(model: nn.Module) -> torch.device:
    return model_devices(model)[0]
