"""One training step's forward and backward, eager or replayed from a CUDA graph.

At the `best` recipe's batch of one 512-token window an 8B-shaped layer's step is ~8 ms of GPU work
but ~49 ms of host time (H100, session 5): the transforms, the fake quantisers and their backward
are hundreds of small kernels launched one by one from Python. On a single CUDA device the forward
and backward are therefore captured once per layer into a CUDA graph and replayed per step: the
same kernels on the same static buffers, so a replay computes what the eager step computes. The
optimiser step stays eager (AdamW's multi-tensor kernels are a handful of launches), so the
learning-rate schedule keeps its plain Python floats.

`FQ_CUDA_GRAPHS=0` keeps the eager step. Several ranks stay eager too: their all-reduces sit
between the backward and the optimiser step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fq_calib.distributed import all_reduce_, all_reduce_gradients, world_size
from fq_calib.layer_io import autocast, run_layer
from fq_calib.loss import layer_loss
from fq_core.transforms import factor_cache

CUDA_GRAPHS = os.environ.get("FQ_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no")

WARMUP_STEPS = 2
"""Eager forward/backward passes on a side stream before the capture, as torch's CUDA-graph notes
ask: they compile the quantisers (first layer) and initialise the lazily created library state."""

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(inputs, targets) of one batch -> the batch's loss (detached, on the device), with every
trainable parameter's .grad set to the gradient of the step's normalised loss."""


def forward_backward(
    layer: nn.Module,
    layer_kwargs: dict[str, Any],
    metric: torch.Tensor | None,
    device: torch.device,
    amp: bool,
) -> Step:
    """The eager step: forward, loss, backward into freshly set gradients, gradients all-reduced."""

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        for param in layer.parameters():
            param.grad = None
        with factor_cache():  # each transform factor built once per step, not once per use
            with autocast(device, amp):
                out = run_layer(layer, inputs.to(device), layer_kwargs)
            loss = layer_loss(out, targets.to(device), metric)
            # The loss is divided by its own detached value. Over W ranks with equal shares that
            # value is the batch's mean loss = sum_over_ranks(loss) / W, and the summed gradients
            # of loss / sum_over_ranks(loss) equal one process's gradient of loss / loss.
            ranks_loss = all_reduce_(loss.detach().clone())
            (loss / ranks_loss).backward()
        all_reduce_gradients(layer.parameters())
        return ranks_loss

    return step


def graphs_apply(device: torch.device) -> bool:
    """Whether calibration on `device` replays a captured step (one CUDA device, not disabled)."""
    return CUDA_GRAPHS and device.type == "cuda" and world_size() == 1


class GraphedStep:
    """`forward_backward` captured once and replayed: inputs and targets are copied into static
    buffers, the replay writes the loss and every .grad in place (the gradients' storage belongs to
    the graph, so nothing may reset .grad between replays; `release` drops them with the graph)."""

    def __init__(
        self,
        eager: Step,
        params: Iterable[nn.Parameter],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        device: torch.device,
    ) -> None:
        """Capture `eager` on `device` for batches shaped like `inputs` / `targets`."""
        self.params = list(params)
        self.inputs = inputs.to(device, copy=True)
        self.targets = targets.to(device, copy=True)
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    eager(self.inputs, self.targets)
            torch.cuda.current_stream().wait_stream(side)
            for param in self.params:  # the capture's backward then allocates them in the graph's pool
                param.grad = None
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = eager(self.inputs, self.targets)

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.inputs.copy_(inputs, non_blocking=True)
        self.targets.copy_(targets, non_blocking=True)
        self.graph.replay()
        return self.loss

    def release(self) -> None:
        for param in self.params:
            param.grad = None
        del self.graph, self.loss, self.inputs, self.targets
