"""How well a tensor quantises: per-channel magnitude, flatness, relative error.

A per-token (activation) or per-output-channel (weight) quantiser gives all input channels of a row
one step size, set by the largest of them. One outlier channel therefore coarsens every other
channel of its row; the flatter the per-channel magnitudes, the smaller the rounding error.
"""

from __future__ import annotations

import torch


def channel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """max |x| of every channel of the last dim, over all rows.

    For activations [tokens, n] that is per input channel over tokens; for a weight [out, n] per
    input channel over output rows, so both profiles index the same channels of a site.
    """
    return x.detach().reshape(-1, x.shape[-1]).abs().amax(0)


def flatness(magnitude: torch.Tensor) -> float:
    """max / mean of per-channel magnitudes: 1 when every channel is as large as the largest, up to n
    for a single non-zero channel among n. An all-zero profile counts as flat (1)."""
    mean = magnitude.double().mean()
    return float(magnitude.double().max() / mean) if mean > 0 else 1.0


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over rows of ||approx_row - exact_row||^2 / ||exact_row||^2 (an all-zero row counts its
    plain squared error, 0 when reproduced).

    Rows are tokens (activations, outputs) or output channels (weights). Per row, because the few
    tokens with massive activations would dominate one ratio over the whole tensor, and hide the
    error of every other token.
    """
    exact64 = exact.double().reshape(-1, exact.shape[-1])
    error = (approx.double().reshape(exact64.shape) - exact64).pow(2).sum(1)
    energy = exact64.pow(2).sum(1)
    return float(torch.where(energy > 0, error / energy.where(energy > 0, 1.0), error).mean())
