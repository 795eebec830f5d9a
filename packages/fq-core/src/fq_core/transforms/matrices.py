"""Invertible matrix factors: learnable (SVD/Cayley or direct) and fixed.

Every factor answers `matrix()` and `inverse()`. FlatQuant needs the inverse of each learned
matrix to keep the layer's output exact in full precision, so the default parameterisation makes
it free and stable: M = U diag(s) V^T with U, V orthogonal, hence M^-1 = V diag(1/s) U^T.
U and V are a fixed random orthogonal base times the Cayley map of a learned skew matrix that
starts at zero, so training starts exactly at the random orthogonal init and stays orthogonal.
The "direct" option learns M itself and inverts it in float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch
from torch import nn

from fq_core.transforms.orthogonal import random_orthogonal

Parametrization = Literal["svd", "direct"]


_CACHE: ContextVar[dict[tuple[int, str], torch.Tensor] | None] = ContextVar("factor_cache", default=None)


@contextmanager
def factor_cache() -> Iterator[None]:
    """Compute each learnable factor's matrix and inverse once inside the block.

    One forward pass asks for the same factor many times (the activation side once, the weight
    side once per consumer linear); the Cayley solves dominate small layers. Parameters must not
    change inside the block: wrap one forward (and its backward), not an optimiser step.
    """
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def _cached(owner: object, kind: str, compute) -> torch.Tensor:
    cache = _CACHE.get()
    if cache is None:
        return compute()
    key = (id(owner), kind)
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def cayley(skew: torch.Tensor) -> torch.Tensor:
    """Orthogonal (I - S)^-1 (I + S) for skew-symmetric S.

    I - S is always invertible (its eigenvalues are 1 - i*lambda), so the solve skips
    `linalg.solve`'s singularity check: on CUDA that check reads a flag back to the host, and a
    training step with a dozen factors stalled the GPU a dozen times."""
    eye = torch.eye(skew.shape[0], dtype=skew.dtype, device=skew.device)
    return torch.linalg.solve_ex(eye - skew, eye + skew)[0]


class OrthogonalFactor(nn.Module):
    """base @ cayley(A - A^T): orthogonal for any A; equals `base` while A is zero."""

    def __init__(self, base: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("base", base.to(torch.float64))
        self.skew = nn.Parameter(torch.zeros(base.shape, dtype=torch.float32))

    def forward(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The orthogonal matrix, computed in `dtype` (float64 for exact merging)."""
        upper = self.skew.to(dtype).triu(1)
        return self.base.to(dtype) @ cayley(upper - upper.T)


class SVDMatrix(nn.Module):
    """M = U diag(s) V^T with orthogonal U, V and positive-by-init singular values s."""

    def __init__(self, n: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.u = OrthogonalFactor(random_orthogonal(n, generator))
        self.v = OrthogonalFactor(random_orthogonal(n, generator))
        self.singular = nn.Parameter(torch.ones(n))

    @property
    def size(self) -> int:
        return self.singular.shape[0]

    def _uv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _cached(self, "uv", lambda: (self.u(), self.v()))

    def matrix(self) -> torch.Tensor:
        def compute() -> torch.Tensor:
            u, v = self._uv()
            return (u * self.singular) @ v.T

        return _cached(self, "matrix", compute)

    def inverse(self) -> torch.Tensor:
        def compute() -> torch.Tensor:
            u, v = self._uv()
            return (v / self.singular) @ u.T

        return _cached(self, "inverse", compute)

    def exact(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(matrix, inverse) built in float64 from the learned parts, for merging into weights."""
        u, v, s = self.u(torch.float64), self.v(torch.float64), self.singular.double()
        return (u * s) @ v.T, (v / s) @ u.T


class DirectMatrix(nn.Module):
    """M learned as a plain matrix (random orthogonal init); its inverse is taken in float64."""

    def __init__(self, n: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(random_orthogonal(n, generator).to(torch.float32))

    @property
    def size(self) -> int:
        return self.weight.shape[0]

    def matrix(self) -> torch.Tensor:
        return self.weight

    def inverse(self) -> torch.Tensor:
        return _cached(self, "inverse", lambda: torch.linalg.inv(self.weight.double()).to(self.weight.dtype))

    def exact(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.weight.double()
        return m, torch.linalg.inv(m)


class FixedMatrix(nn.Module):
    """A frozen factor: the materialised result of calibration, a Hadamard matrix, or a loaded one.

    Holds float32 copies for online use and float64 copies for merging into weights.
    """

    def __init__(self, matrix: torch.Tensor, inverse: torch.Tensor | None = None) -> None:
        super().__init__()
        m64 = matrix.detach().double()
        inv64 = torch.linalg.inv(m64) if inverse is None else inverse.detach().double()
        self.register_buffer("_matrix", m64.float())
        self.register_buffer("_inverse", inv64.float())
        self._exact = (m64, inv64)

    @property
    def size(self) -> int:
        return self._matrix.shape[0]

    def matrix(self) -> torch.Tensor:
        return self._matrix

    def inverse(self) -> torch.Tensor:
        return self._inverse

    def exact(self) -> tuple[torch.Tensor, torch.Tensor]:
        m64, inv64 = self._exact
        return m64.to(self._matrix.device), inv64.to(self._matrix.device)


Factor = SVDMatrix | DirectMatrix | FixedMatrix


def learnable_factor(
    n: int, parametrization: Parametrization, generator: torch.Generator | None = None
) -> Factor:
    if parametrization == "svd":
        return SVDMatrix(n, generator)
    if parametrization == "direct":
        return DirectMatrix(n, generator)
    raise ValueError(f"unknown parametrization {parametrization!r}: use 'svd' or 'direct'")


def frozen(factor: Factor) -> FixedMatrix:
    """Materialise a factor (exact float64 inverse) so it no longer trains."""
    if isinstance(factor, FixedMatrix):
        return factor
    with torch.no_grad():
        matrix, inverse = factor.exact()
    return FixedMatrix(matrix, inverse)
