"""Calibration windows from the embedded pydoc corpus (minus its evaluation tail) or a local text."""

from __future__ import annotations

from pathlib import Path

import torch

from fq_core.data import calibration_windows, pydoc_text, read_text, split_calibration_eval, tokenize
from fq_core.errors import DataError

PYDOC = "pydoc"
PYDOC_EVAL_WINDOWS, PYDOC_EVAL_SEQLEN = 16, 512
"""The pydoc evaluation tail (fq-eval's protocol); calibration never draws from it."""


def check_source(source: str) -> None:
    """Refuse a missing data file before anything is loaded."""
    if source != PYDOC and not Path(source).is_file():
        raise DataError(
            f"calibration data {source!r} is neither 'pydoc' nor a text file: pass an existing file"
        )


def calibration_tokens(tokenizer, source: str) -> torch.Tensor:
    """Token ids to draw windows from: pydoc without its eval tail, or all of a local text file."""
    check_source(source)
    if source == PYDOC:
        ids = tokenize(tokenizer, pydoc_text())
        return split_calibration_eval(ids, PYDOC_EVAL_WINDOWS, PYDOC_EVAL_SEQLEN)[0]
    return tokenize(tokenizer, read_text(Path(source))).reshape(-1)


def windows_for(tokenizer, source: str, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """[nsamples, seqlen] windows, refusing a corpus with fewer tokens than the windows cover."""
    ids = calibration_tokens(tokenizer, source)
    if ids.numel() < nsamples * seqlen:
        raise DataError(
            f"calibration data {source!r} has {ids.numel()} tokens, fewer than nsamples x seqlen = "
            f"{nsamples} x {seqlen} = {nsamples * seqlen}: lower --nsamples/--seqlen or give a larger text"
        )
    return calibration_windows(ids, nsamples, seqlen, seed)
