"""Perplexity over non-overlapping windows, computed exactly as the reference anchor does.

The reference (`ppl` in shared/tools/ref_anchor.py) averages transformers' `loss` per window, i.e.
the mean NLL of the window's seqlen-1 next-token predictions, then averages those means over the
windows and takes exp. Each window starts fresh (no context carried over) and the tokens past the
last whole window are dropped. We compute the same quantity from the logits ourselves, so that
batching windows changes nothing and any causal LM (or flat model) works.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from fq_core.errors import DataError
from fq_eval.placement import input_device


def windows(ids: torch.Tensor, seqlen: int) -> torch.Tensor:
    """[n, seqlen] non-overlapping windows of ids ([N] or [1, N]); the remainder is dropped."""
    ids = ids.reshape(-1)
    n = ids.numel() // seqlen
    if n == 0:
        raise DataError(f"{ids.numel()} tokens are fewer than one window of {seqlen}")
    return ids[: n * seqlen].reshape(n, seqlen)


def _progress() -> Progress:
    """A bar on stderr when it is a terminal; nothing in logs, pipes and tests."""
    return Progress(
        TextColumn("perplexity"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
        transient=True,
    )


@torch.no_grad()
def window_nlls(model: nn.Module, ids: torch.Tensor, seqlen: int, batch_size: int = 4) -> torch.Tensor:
    """Mean next-token NLL of each window, float64 [n_windows], on the CPU."""
    grid = windows(ids, seqlen)
    device = input_device(model)
    out = []
    with _progress() as progress:
        task = progress.add_task("windows", total=grid.shape[0])
        for batch in grid.split(batch_size):
            batch = batch.to(device)
            logits = model(batch, use_cache=False).logits[:, :-1].float()
            # Class dim last: the [B, V, T] layout takes a float32 path on CPU that is ~1e-4 off.
            nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="none")
            out.append(nll.view(batch.shape[0], -1).mean(dim=1).double().cpu())
            progress.advance(task, batch.shape[0])
    return torch.cat(out)


def perplexity(model: nn.Module, ids: torch.Tensor, seqlen: int, batch_size: int = 4) -> float:
    """exp(mean over windows of each window's mean NLL), windows of `seqlen` cut from `ids`."""
    return math.exp(window_nlls(model, ids, seqlen, batch_size).mean().item())
