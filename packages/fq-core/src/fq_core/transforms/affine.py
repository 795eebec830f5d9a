"""`KroneckerAffine`: FlatQuant's transform of one linear-layer input, x -> (x * d) @ kron(L, R).

d is an optional per-channel scaling (SmoothQuant-style init), merged after calibration into the
preceding norm or linear, so at run time only the Kronecker product runs online. The weight side
gets the exact inverse, W -> (W / d) @ kron(L, R)^-T, so y = x W^T is unchanged in full precision.
"""

from __future__ import annotations

import torch
from torch import nn

from fq_core.transforms.kronecker import kron_apply
from fq_core.transforms.matrices import Factor, FixedMatrix, frozen


def smoothquant_scale(
    weight_absmax: torch.Tensor, act_absmax: torch.Tensor, alpha: float, eps: float = 1e-5
) -> torch.Tensor:
    """Per-channel scale s_j = max|W_j|^(1-alpha) / max|X_j|^alpha (multiplies activations).

    Large activation channels get s < 1 and their weight columns grow by 1/s, moving the
    outliers from the activations (hard, per-token) to the weights (easy, per-channel).
    """
    return (weight_absmax.pow(1 - alpha) / act_absmax.clamp(min=eps).pow(alpha)).clamp(min=eps)


class KroneckerAffine(nn.Module):
    def __init__(self, left: Factor, right: Factor, channel_scale: bool = False) -> None:
        super().__init__()
        self.left = left
        self.right = right
        size = left.size * right.size
        self.scale = nn.Parameter(torch.ones(size)) if channel_scale else None

    @property
    def size(self) -> int:
        return self.left.size * self.right.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Activation side: (x * d) @ kron(L, R)."""
        if self.scale is not None:
            x = x * self.scale.to(x.dtype)
        return kron_apply(x, self.left.matrix().to(x.dtype), self.right.matrix().to(x.dtype))

    def transform_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Weight side, on the input dim of W [out, in]: (W / d) @ kron(L, R)^-T (differentiable)."""
        dtype = self.left.matrix().dtype
        w = weight.to(dtype)
        if self.scale is not None:
            w = w / self.scale
        return kron_apply(w, self.left.inverse().T, self.right.inverse().T)

    def transform_weight_exact(self, weight: torch.Tensor) -> torch.Tensor:
        """`transform_weight` in float64 from exact inverses, for the final merge."""
        (_, left_inv), (_, right_inv) = self.left.exact(), self.right.exact()
        w = weight.double()
        if self.scale is not None:
            w = w / self.scale.double()
        return kron_apply(w, left_inv.T, right_inv.T)

    def freeze(self) -> None:
        """Materialise both factors; the channel scale stays until merged by the caller."""
        self.left = frozen(self.left)
        self.right = frozen(self.right)

    @property
    def frozen(self) -> bool:
        return isinstance(self.left, FixedMatrix) and isinstance(self.right, FixedMatrix)
