"""Resolving a user's `--device` option, shared by every command that runs a model."""

from __future__ import annotations

import torch

from fq_core.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when available, else the CPU; anything else must be a torch device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from error
