"""Fixed orthogonal matrices: Haar-random ones (FlatQuant's init) and Hadamard ones (QuaRot baseline)."""

from __future__ import annotations

import torch


def random_orthogonal(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-distributed random orthogonal matrix (float64): QR of a Gaussian with the signs fixed."""
    gauss = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).contiguous()


def sylvester_hadamard(n: int) -> torch.Tensor:
    """The n x n Sylvester Hadamard matrix scaled to be orthogonal (n a power of two), float64."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester construction needs a power of two, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h / h.shape[0] ** 0.5


def hadamard_like(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """An orthogonal matrix in the QuaRot spirit for any size n = 2^k * m (m odd), float64.

    For a power of two it is the Hadamard matrix. Otherwise kron(H_{2^k}, Q_m) with Q_m random
    orthogonal: we do not ship tables of special Hadamard sizes (12, 20, 172, ...), and for the
    odd factor a random rotation spreads outliers just as well.
    """
    pow2 = n & -n
    odd = n // pow2
    h = sylvester_hadamard(pow2)
    if odd == 1:
        return h
    return torch.kron(h.contiguous(), random_orthogonal(odd, generator))
