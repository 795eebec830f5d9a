"""Calibrating one decoder layer: FlatQuant's local objective.

The fake-quant layer is trained to reproduce the full-precision layer's outputs on the cached
inputs (MSE, each step's loss divided by its own detached value, AdamW, cosine schedule), then
frozen: transforms materialised, channel scales merged into the norms / up_proj, weights
transformed in float64 and quantised. With several ranks each holds a shard of the windows and
every sum over samples is all-reduced (see `distributed`), so all ranks train the same layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from fq_calib.distributed import all_reduce_, mean_over_ranks, sum_over_ranks, world_size
from fq_calib.layer_io import batches, map_layer, mse
from fq_calib.recipe import CalibRecipe
from fq_calib.step import GraphedStep, forward_backward, graphs_apply
from fq_core.flat import FlatLinear, set_fp


@dataclass
class LayerStats:
    """What the JSON log records per layer. MSEs are measured on the probe batch (the first batch of
    windows; a full pass would cost an extra epoch's forward): mse_init with the untrained (random
    orthogonal, SmoothQuant-scaled) transforms, mse_final after freezing."""

    layer: int
    mse_init: float
    mse_final: float
    epoch_losses: list[float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flat_parts(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    return layer.self_attn, layer.mlp


def set_observing(layer: nn.Module, observing: bool) -> None:
    attention, mlp = flat_parts(layer)
    for site in (attention.attn_in, mlp.mlp_in, mlp.down_in):
        site.observing = observing


@torch.no_grad()
def init_channel_scales(layer: nn.Module, alpha: float) -> None:
    """SmoothQuant-style init from the activation maxima observed during the FP pass (over every
    rank's windows, as one process would have seen them all)."""
    attention, mlp = flat_parts(layer)
    for site in (attention.attn_in, mlp.mlp_in, mlp.down_in):
        all_reduce_(site.act_absmax, torch_dist.ReduceOp.MAX)
    attention.attn_in.init_channel_scale(attention.weight_absmax_for_scale(), alpha)
    gate_up, down = mlp.weight_absmax_for_scale()
    mlp.mlp_in.init_channel_scale(gate_up, alpha)
    mlp.down_in.init_channel_scale(down, alpha)


@torch.no_grad()
def collect_hessians(
    layer: nn.Module,
    inputs: torch.Tensor,
    layer_kwargs: dict[str, Any],
    device: torch.device,
    bs: int,
    amp: bool,
) -> None:
    """Give every quantised linear of the layer E[x x^T] of the inputs it really receives
    (transformed and fake-quantised), so that freezing rounds its weights with GPTQ."""
    sums: dict[FlatLinear, torch.Tensor] = {}
    counts: dict[FlatLinear, int] = {}

    def record(linear: FlatLinear, args: tuple[Any, ...]) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1])
        # The layer runs under bfloat16 autocast on CUDA: this product must not, or the sum loses
        # its low-order bits and stops being positive definite (GPTQ's Cholesky then fails).
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            sums[linear] = sums.get(linear, 0) + x.T @ x
        counts[linear] = counts.get(linear, 0) + x.shape[0]

    linears = [m for m in layer.modules() if isinstance(m, FlatLinear) and m.spec.enabled]
    hooks = [linear.register_forward_pre_hook(record) for linear in linears]
    try:
        map_layer(layer, inputs, layer_kwargs, device, bs, amp)
    finally:
        for hook in hooks:
            hook.remove()
    for linear in linears:  # summed over the ranks' shards before the mean
        linear.hessian = all_reduce_(sums[linear]) / int(sum_over_ranks(counts[linear]))


def optimizer_for(layer: nn.Module, recipe: CalibRecipe) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the layer's trainable parameters: clipping factors at lr * clip_lr_scale."""
    clip, rest = [], []
    for name, param in layer.named_parameters():
        if param.requires_grad:
            (clip if "clip" in name else rest).append(param)
    groups = [
        g
        for g in ({"params": rest, "lr": recipe.lr}, {"params": clip, "lr": recipe.lr * recipe.clip_lr_scale})
        if g["params"]
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    total = recipe.epochs * recipe.steps_per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=total, eta_min=recipe.lr * recipe.lr_min_ratio
    )
    return optimizer, schedule


def calibrate_layer(
    index: int,
    layer: nn.Module,
    inputs: torch.Tensor,
    layer_kwargs: dict[str, Any],
    recipe: CalibRecipe,
    device: torch.device,
    freeze: Callable[[nn.Module], None],
    on_epoch: Callable[[int, float], None] = lambda epoch, loss: None,
    fp_inputs: torch.Tensor | None = None,
    metric: torch.Tensor | None = None,
) -> tuple[LayerStats, torch.Tensor, torch.Tensor | None]:
    """Train and freeze one layer.

    inputs: what the quantised layer is trained on. With feed="fp" (the paper) these are the FP
    model's activations; with feed="quant" they are the previous frozen layers' quantised outputs
    and `fp_inputs` holds the FP activations, so the targets stay the FP model's own outputs and the
    layer learns to undo the error accumulated before it. With several ranks all these tensors, and
    the returned ones, are this rank's shard of the windows (`distributed.shard_rows`).
    metric: the factor of the output metric when recipe.loss is "lm-head" (`loss.output_metric`).
    Returns the stats, the targets (the next layer's FP inputs) and, with feed="quant", the frozen
    layer's outputs (the next layer's quantised inputs).
    """
    start = time.perf_counter()
    bs = recipe.batch_size // world_size()  # this rank's share of every batch
    probe = slice(0, bs)  # the first batch of windows (every rank holds a part of it)
    set_fp(layer, True)
    set_observing(layer, True)
    targets = map_layer(
        layer, inputs if fp_inputs is None else fp_inputs, layer_kwargs, device, bs, recipe.amp
    )
    set_observing(layer, False)
    set_fp(layer, False)
    if recipe.flat.channel_scale:
        init_channel_scales(layer, recipe.flat.diag_alpha)
    mse_init = mse(layer, inputs[probe], targets[probe], layer_kwargs, device, bs, recipe.amp)

    optimizer, schedule = optimizer_for(layer, recipe)
    step = forward_backward(layer, layer_kwargs, metric, device, recipe.amp)
    graphed = None
    if graphs_apply(device):
        step = graphed = GraphedStep(step, layer.parameters(), inputs[probe], targets[probe], device)
    epoch_losses = []
    layer.train()
    for epoch in range(recipe.epochs):
        total = torch.zeros((), dtype=torch.float64, device=device)  # read once per epoch: no stall per step
        for rows in batches(inputs.shape[0], bs):
            total += step(inputs[rows], targets[rows]).double() / world_size()
            optimizer.step()
            schedule.step()
        epoch_losses.append(total.item() / recipe.steps_per_epoch)
        on_epoch(epoch, epoch_losses[-1])
    if graphed is not None:
        graphed.release()
    for param in layer.parameters():
        param.grad = None
    layer.eval()
    if recipe.weight_rounding == "gptq":
        collect_hessians(layer, inputs, layer_kwargs, device, bs, recipe.amp)
    freeze(layer)
    if recipe.feed == "quant":
        outputs = map_layer(layer, inputs, layer_kwargs, device, bs, recipe.amp)
        mse_final = mean_over_ranks((outputs[probe] - targets[probe]).pow(2).mean().item())
    else:
        outputs = None
        mse_final = mse(layer, inputs[probe], targets[probe], layer_kwargs, device, bs, recipe.amp)
    stats = LayerStats(index, mse_init, mse_final, epoch_losses, time.perf_counter() - start)
    return stats, targets, outputs
