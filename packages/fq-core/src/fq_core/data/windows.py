"""Cutting a tokenised corpus into an evaluation tail and calibration windows.

The split is on token ids, fixed and seed-free: the evaluation tail is the last
`n_eval_windows * seqlen` tokens, calibration draws from everything before it, so calibration
never sees an evaluation token. Windows are drawn as the reference does (python `random` seeded
with `seed`, one `randint(0, len - seqlen - 1)` start per sample), so the same seed gives the
reference's windows.
"""

from __future__ import annotations

import random

import torch

from fq_core.errors import DataError


def _flat(ids: torch.Tensor) -> torch.Tensor:
    if ids.dim() == 2 and ids.shape[0] == 1:
        return ids[0]
    if ids.dim() != 1:
        raise ValueError(f"token ids must be shaped [N] or [1, N], not {list(ids.shape)}")
    return ids


def split_calibration_eval(
    ids: torch.Tensor, n_eval_windows: int = 16, seqlen: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration ids, evaluation ids), both [N]: the tail is the last n_eval_windows * seqlen tokens."""
    ids = _flat(ids)
    n_eval = n_eval_windows * seqlen
    if n_eval < 1:
        raise ValueError("n_eval_windows and seqlen must be positive")
    if ids.numel() < n_eval + seqlen + 1:
        raise DataError(
            f"the corpus has {ids.numel()} tokens, too few for {n_eval_windows} evaluation windows of "
            f"{seqlen} plus one calibration window: use fewer windows or a shorter seqlen"
        )
    return ids[:-n_eval], ids[-n_eval:]


def calibration_windows(ids: torch.Tensor, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """[nsamples, seqlen] windows of `ids` at random starts, drawn as the reference draws them.

    A private `random.Random(seed)` gives the same starts as the reference's `random.seed(seed)`
    without touching the global generator.
    """
    ids = _flat(ids)
    if ids.numel() < seqlen + 1:
        raise DataError(f"{ids.numel()} calibration tokens are too few for windows of {seqlen}")
    rng = random.Random(seed)
    starts = [rng.randint(0, ids.numel() - seqlen - 1) for _ in range(nsamples)]
    return torch.stack([ids[s : s + seqlen] for s in starts]) if starts else ids.new_empty(0, seqlen)
