"""`calibrate(...)`: the whole layer-wise run, resumable, ending in a checkpoint directory.

One decoder layer is on the accelerator at a time; the cached activations live there too when they
fit, else on the CPU. After each layer its frozen tensors and stats are saved (see `state.py`), so
`calibrate(..., resume=True)` continues a killed run and yields the same checkpoint.

Called by every rank of a process group (`fq calib --ranks N`, torchrun), each rank calibrates on
its shard of the windows (see `distributed`) and rank 0 alone writes the run directory and the
checkpoint; the result equals one process's up to float rounding.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from fq_calib.distributed import check_batch_size, is_main, on_main, rank, shard_rows, world_size
from fq_calib.layer_io import capture_inputs, map_layer, move
from fq_calib.loss import output_metric
from fq_calib.recipe import CalibRecipe
from fq_calib.state import RunState, work_dir_for
from fq_calib.train import LayerStats, calibrate_layer
from fq_core.adapters import get_adapter
from fq_core.checkpoint import CheckpointConfig
from fq_core.devices import resolve_device
from fq_core.errors import ConfigError, DataError
from fq_core.flat import freeze_layer, layer_tensors, load_layer, quantize_, save_quantized, set_fp


def _storage_for(n_bytes: int, device: torch.device) -> torch.device:
    """Keep inputs and targets (3 tensors of n_bytes) on the accelerator only if they fit easily."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if 3 * n_bytes < 0.5 * free else torch.device("cpu")


def fingerprint(windows: torch.Tensor) -> str:
    return hashlib.sha256(windows.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def check_windows(windows: torch.Tensor, recipe: CalibRecipe) -> None:
    if tuple(windows.shape) != (recipe.nsamples, recipe.seqlen):
        raise DataError(
            f"got {tuple(windows.shape)} calibration windows; "
            f"the recipe needs {recipe.nsamples} x {recipe.seqlen}"
        )


def calibrate(
    model: nn.Module,
    windows: torch.Tensor,
    recipe: CalibRecipe,
    output: str | Path,
    source: str,
    data_source: str = "pydoc",
    resume: bool = False,
    device: torch.device | None = None,
    show_progress: bool = True,
) -> CheckpointConfig:
    """Calibrate `model` (in place) on `windows` [nsamples, seqlen] and write the checkpoint.

    source / data_source: how the model and the calibration text were named (recorded, and part of
    what a resume must match, with a fingerprint of the windows).
    """
    check_windows(windows, recipe)
    check_batch_size(recipe.batch_size, world_size())
    output = Path(output)
    if output.exists() and not resume:
        raise ConfigError(f"{output} already exists: choose another --output or delete it")
    device = device or resolve_device("auto")
    identity = {
        "recipe": recipe.to_dict(),
        "model": source,
        "source": data_source,
        "data": fingerprint(windows),
    }
    state = RunState.start(work_dir_for(output), identity, resume)

    quantize_(model, recipe.flat)  # seeded: a resumed run starts from the same random transforms
    layers = get_adapter(model).decoder_layers(model)
    base = getattr(model, "model", model)
    movable = [m for m in (base.embed_tokens, getattr(base, "rotary_emb", None)) if m is not None]
    for module in movable:
        module.to(device)
    shard = windows[shard_rows(recipe.nsamples, recipe.batch_size, rank(), world_size())]
    inputs, layer_kwargs = capture_inputs(model, layers, shard, device, torch.device("cpu"))
    for module in movable:
        module.to("cpu")
    inputs = inputs.to(_storage_for(inputs.numel() * 4, device))
    layer_kwargs = move(layer_kwargs, device)

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not (show_progress and is_main()),
        transient=True,
    ) as progress:
        layer_task = progress.add_task("layers", total=len(layers), completed=state.done)
        epoch_task = progress.add_task("epochs", total=recipe.epochs)
        fp_inputs = None if recipe.feed == "fp" else inputs  # the FP stream, when it differs
        metric = output_metric(model).to(device) if recipe.loss == "lm-head" else None
        for index, layer in enumerate(layers):
            if index < state.done:
                inputs, fp_inputs = _replay_layer(
                    model, index, layer, inputs, fp_inputs, layer_kwargs, recipe, device, state
                )
            else:
                progress.reset(epoch_task, description=f"layer {index}")

                def on_epoch(epoch: int, loss: float, index: int = index) -> None:
                    progress.update(
                        epoch_task, completed=epoch + 1, description=f"layer {index} loss {loss:.4f}"
                    )

                layer.to(device)
                stats, targets, outputs = calibrate_layer(
                    index,
                    layer,
                    inputs,
                    layer_kwargs,
                    recipe,
                    device,
                    lambda trained: freeze_layer(trained, model),
                    on_epoch,
                    fp_inputs,
                    metric,
                )
                inputs, fp_inputs = (targets, None) if outputs is None else (outputs, targets)
                layer.to("cpu")
                state.record_layer(index, layer_tensors(model, index)[0], stats.to_dict())
            progress.update(layer_task, completed=index + 1)

    producers = {"fq-calib": version("fq-calib")}
    options: dict[str, Any] = {
        "recipe": recipe.to_dict(),
        "source": source,
        "data": data_source,
        "calibration": state.layers,
    }

    def save() -> CheckpointConfig:
        config = save_quantized(model, output, options=options, producers=producers)
        shutil.rmtree(state.dir)
        return config

    return on_main(save)


def _outputs(
    layer: nn.Module, inputs: torch.Tensor, layer_kwargs: dict[str, Any], recipe: CalibRecipe, device
):
    return map_layer(layer, inputs, layer_kwargs, device, recipe.batch_size // world_size(), recipe.amp)


def _replay_layer(
    model: nn.Module,
    index: int,
    layer: nn.Module,
    inputs: torch.Tensor,
    fp_inputs: torch.Tensor | None,
    layer_kwargs: dict[str, Any],
    recipe: CalibRecipe,
    device: torch.device,
    state: RunState,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A layer finished before the resume: reproduce its outputs (the FP stream, and with
    feed="quant" the frozen layer's quantised stream) and install its saved state."""
    layer.to(device)
    set_fp(layer, True)
    fp_outputs = _outputs(layer, inputs if fp_inputs is None else fp_inputs, layer_kwargs, recipe, device)
    set_fp(layer, False)
    load_layer(model, index, state.load_layer(index))
    layer.to(device)
    quant_outputs = None if recipe.feed == "fp" else _outputs(layer, inputs, layer_kwargs, recipe, device)
    layer.to("cpu")
    return (fp_outputs, None) if quant_outputs is None else (quant_outputs, fp_outputs)


__all__ = ["LayerStats", "calibrate", "check_windows"]
