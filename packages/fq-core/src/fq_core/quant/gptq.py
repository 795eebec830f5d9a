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
        cols = slice(start, end)
        inner = _block_graph(w.shape[0], end - start, w.device, spec) if w.is_cuda else _column_loop
        q[:, cols], errors = inner(
            w[:, cols], scale_cols[:, cols], zero_cols[:, cols], h_inv[cols, cols], spec
        )
        w[:, end:] -= errors @ h_inv[cols, end:]
    return q.reshape(out_features, in_features)


def _column_loop(
    block: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, h_block: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ inside one block of columns: (integers, scaled errors); `block` is updated in place."""
    q = torch.empty_like(block)
    errors = torch.empty_like(block)
    for i in range(block.shape[1]):
        q_col = quantize(block[:, i : i + 1], scale[:, i : i + 1], zero[:, i : i + 1], spec)
        q[:, i : i + 1] = q_col
        err = (block[:, i : i + 1] - (q_col - zero[:, i : i + 1]) * scale[:, i : i + 1]) / h_block[i, i]
        block[:, i:] -= err @ h_block[i : i + 1, i:]
        errors[:, i : i + 1] = err
    return q, errors


class _ColumnLoopGraph:
    """`_column_loop` for one block shape captured as a CUDA graph.

    The loop is ~15 tiny kernels per column; launched from Python they cost ~6 s per 8B-shaped layer
    (39k columns), far more than the GPU work. One replay per block launches them all at once, with
    identical kernels, so the result is bit-for-bit the eager loop's.
    """

    def __init__(self, rows: int, width: int, device: torch.device, spec: QuantSpec) -> None:
        def buffer(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        self.block, self.scale, self.zero = buffer(rows, width), buffer(rows, width), buffer(rows, width)
        self.h_block = buffer(width, width)
        self.scale.fill_(1.0)
        self.h_block.diagonal().fill_(1.0)
        args = (self.block, self.scale, self.zero, self.h_block, spec)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
            _column_loop(*args)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.q, self.errors = _column_loop(*args)

    def __call__(
        self,
        block: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        h_block: torch.Tensor,
        spec: QuantSpec,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`_column_loop`'s signature (spec was fixed at capture); outputs valid until the next call."""
        for static, value in (
            (self.block, block),
            (self.scale, scale),
            (self.zero, zero),
            (self.h_block, h_block),
        ):
            static.copy_(value)
        self.graph.replay()
        return self.q, self.errors


_GRAPHS: dict[tuple[int, int, torch.device, QuantSpec], _ColumnLoopGraph] = {}


def _block_graph(rows: int, width: int, device: torch.device, spec: QuantSpec) -> _ColumnLoopGraph:
    """One captured loop per (rows, width, device, spec), reused by every layer of that shape."""
    key = (rows, width, device, spec)
    if key not in _GRAPHS:
        _GRAPHS[key] = _ColumnLoopGraph(rows, width, device, spec)
    return _GRAPHS[key]
