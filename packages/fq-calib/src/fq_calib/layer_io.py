"""Running one decoder layer on cached inputs, in batches, with the kwargs the model gave it.

Calibration works layer by layer: the first layer's inputs are captured once (`capture_inputs`),
then each layer maps a cached [N, L, H] tensor to the next one. Cached tensors stay on the CPU when
they would not fit next to the layer on the accelerator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext, suppress
from typing import Any

import torch
from torch import nn

from fq_calib.distributed import mean_over_ranks
from fq_core.transforms import factor_cache


class _Captured(Exception):
    """Raised by the stand-in first layer to stop the model's forward once the input is recorded."""


class _Catcher(nn.Module):
    def __init__(self, layer: nn.Module, store: list[torch.Tensor], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.layer, self.store, self.kwargs = layer, store, kwargs

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.store.append(hidden_states.detach())
        if not self.kwargs:
            self.kwargs.update(kwargs)
        raise _Captured


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    layers: nn.ModuleList,
    windows: torch.Tensor,
    device: torch.device,
    storage: torch.device,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The first decoder layer's inputs for each window ([N, L, H] float32 on `storage`), and the
    keyword arguments (position embeddings, mask, ...) the model passes to every layer."""
    store: list[torch.Tensor] = []
    kwargs: dict[str, Any] = {}
    first = layers[0]
    layers[0] = _Catcher(first, store, kwargs)
    try:
        for window in windows:
            with suppress(_Captured):
                model(window.unsqueeze(0).to(device), use_cache=False)
    finally:
        layers[0] = first
    cache_keys = ("past_key_values", "past_key_value", "cache", "use_cache")
    layer_kwargs = {k: v for k, v in kwargs.items() if k not in cache_keys}
    inputs = torch.cat(store).to(storage, torch.float32)
    return inputs, layer_kwargs


def move(value: Any, device: torch.device) -> Any:
    """Move tensors (also inside tuples, e.g. position embeddings) to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(move(v, device) for v in value)
    return value


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when enabled; a no-op on CPU (calibration there runs float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def run_layer(layer: nn.Module, x: torch.Tensor, layer_kwargs: dict[str, Any]) -> torch.Tensor:
    out = layer(x, **layer_kwargs)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def map_layer(
    layer: nn.Module,
    inputs: torch.Tensor,
    layer_kwargs: dict[str, Any],
    device: torch.device,
    batch_size: int,
    amp: bool,
) -> torch.Tensor:
    """Outputs of `layer` for every cached input, stored where the inputs are (float32)."""
    outputs = torch.empty_like(inputs)
    with autocast(device, amp), factor_cache():
        for rows in batches(inputs.shape[0], batch_size):
            outputs[rows] = run_layer(layer, inputs[rows].to(device), layer_kwargs).float().to(outputs.device)
    return outputs


@torch.no_grad()
def mse(
    layer: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    layer_kwargs: dict[str, Any],
    device: torch.device,
    batch_size: int,
    amp: bool,
) -> float:
    """Mean squared error of the layer's outputs against the targets, over all samples (of every
    rank: each holds an equal share)."""
    total = 0.0
    with autocast(device, amp), factor_cache():
        for rows in batches(inputs.shape[0], batch_size):
            out = run_layer(layer, inputs[rows].to(device), layer_kwargs).float()
            total += (out - targets[rows].to(device)).pow(2).sum().item()
    return mean_over_ranks(total / targets.numel())
