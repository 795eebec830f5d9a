"""Kronecker-factored application of a transform: x @ kron(A, B) without building kron(A, B).

A token x of size n = n1 * n2 is viewed row-major as an n1 x n2 matrix X; then
`x @ kron(A, B) == vec(A^T X B)`. That costs O(n (n1 + n2)) instead of O(n^2) and is what the
online kernel computes per token.
"""

from __future__ import annotations

import math

import torch


def kron_factors(n: int) -> tuple[int, int]:
    """Factor sizes (n1, n2), n1 * n2 == n, n1 <= n2, n1 the largest divisor not above sqrt(n).

    Examples: 576 -> (24, 24), 1536 -> (32, 48), 4096 -> (64, 64), 11008 -> (86, 128),
    14336 -> (112, 128). Balanced factors minimise the online cost n1 + n2.
    """
    if n < 1:
        raise ValueError(f"cannot factor size {n}")
    n1 = math.isqrt(n)
    while n % n1:
        n1 -= 1
    return n1, n // n1


def kron_apply(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`x @ kron(left, right)` over the last dim of `x` (size left.shape[0] * right.shape[0])."""
    n1, n2 = left.shape[0], right.shape[0]
    shape = x.shape
    xm = x.reshape(-1, n1, n2)
    out = torch.matmul(left.transpose(0, 1), torch.matmul(xm, right))
    return out.reshape(shape)


def apply_left(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """`x @ kron(left, I)`: mixes the n1 blocks of x (the heads-side half of the o_proj transform)."""
    n1 = left.shape[0]
    shape = x.shape
    out = torch.matmul(left.transpose(0, 1), x.reshape(-1, n1, shape[-1] // n1))
    return out.reshape(shape)


def apply_right(x: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`x @ kron(I, right)`: the same right factor applied to each block of x (per attention head)."""
    n2 = right.shape[0]
    shape = x.shape
    return torch.matmul(x.reshape(-1, n2), right).reshape(shape)
