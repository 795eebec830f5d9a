"""GPTQ: quantise a weight column by column, correcting the not-yet-quantised columns for the
error made so far, weighted by the input's second moment H = E[x x^T] (Frantar et al., 2022).

FlatQuant applies it to the *transformed* weights, on the quantised-and-transformed activations the
layer really sees. Scales and zeros are fixed beforehand from the (clipped) weight, per channel or
per group, so the result plugs into the same integer format as round-to-nearest.
"""

from __future__ import annotations

import torch

from fq_core.quant.functional import quantize
from fq_core.quant.spec import QuantSpec


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    spec: QuantSpec,
    block_size: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """Integer values (float tensor, shaped like `weight` [out, in]) chosen by GPTQ.

    scale / zero: [out, groups] (groups = 1 per channel), as the round-to-nearest quantiser gives.
    hessian: [in, in], proportional to sum of x x^T over calibration tokens.
    """
    w = weight.detach().double().clone()
    out_features, in_features = w.shape
    group = in_features // scale.shape[1]
    scale_cols = scale.double().repeat_interleave(group, dim=1)
    zero_cols = zero.double().repeat_interleave(group, dim=1)

    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * torch.diag(h).mean())
    # Upper Cholesky factor of H^-1: row i holds the error-propagation weights of column i.
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    q = torch.zeros_like(w)
    for start in range(0, in_features, block_size):
        end = min(start + block_size, in_features)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        h_block = h_inv[start:end, start:end]
        for i in range(end - start):
            col = start + i
            sc, zc = scale_cols[:, col : col + 1], zero_cols[:, col : col + 1]
            q_col = quantize(block[:, i : i + 1], sc, zc, spec)
            q[:, col : col + 1] = q_col
            err = (block[:, i : i + 1] - (q_col - zc) * sc) / h_block[i, i]
            block[:, i:] -= err @ h_block[i : i + 1, i:]
            errors[:, i : i + 1] = err
        w[:, end:] -= errors @ h_inv[start:end, end:]
    return q.reshape(out_features, in_features)
