"""The transforms compared at a site, each a `KroneckerAffine`: X -> (X * d) @ kron(L, R) on the
activations and W -> (W / d) @ kron(L, R)^-T on the weights, so X W^T is the same under every one and
only how well the two sides quantise differs.

- none: identity factors, no scale: the FP model as it is;
- smooth: SmoothQuant's per-channel scale alone, d = max|W_j|^a / max|X_j|^a with a = 0.5, which
  moves activation outliers into the weight columns;
- hadamard: Hadamard(-like) factors of the site's sizes (QuaRot-style, as `fq eval --method
  hadamard` builds them), which spread every outlier over all channels;
- flatquant: the checkpoint's learned factors and per-channel scale (`fq_eval.inspect.learned`).
"""

from __future__ import annotations

import torch

from fq_core.transforms import FixedMatrix, KroneckerAffine, hadamard_like, smoothquant_scale
from fq_core.transforms.matrices import Factor

TRANSFORMS = ("none", "smooth", "hadamard", "flatquant")
LABELS = {
    "none": "FP (no transform)",
    "smooth": "per-channel scaling",
    "hadamard": "Hadamard",
    "flatquant": "FlatQuant",
}
SMOOTH_ALPHA = 0.5
"""SmoothQuant's default migration strength: the scale balances activation and weight maxima."""


def affine(left: Factor, right: Factor, scale: torch.Tensor | None = None) -> KroneckerAffine:
    """(x * scale) @ kron(left, right); without a scale just the Kronecker product."""
    transform = KroneckerAffine(left, right, channel_scale=scale is not None)
    if scale is not None:
        with torch.no_grad():
            transform.scale.copy_(scale)
    return transform.requires_grad_(False)


def _identity(n: int) -> FixedMatrix:
    eye = torch.eye(n, dtype=torch.float64)
    return FixedMatrix(eye, eye)


def _hadamard(n: int, generator: torch.Generator) -> FixedMatrix:
    h = hadamard_like(n, generator)
    return FixedMatrix(h, h.T)  # orthogonal: the inverse is exact without a solve


def compared_transforms(
    learned: KroneckerAffine,
    act_magnitude: torch.Tensor,
    weight_magnitude: torch.Tensor,
    generator: torch.Generator,
) -> dict[str, KroneckerAffine]:
    """The four transforms of a site whose checkpoint transform is `learned` (its sizes are reused).

    act_magnitude / weight_magnitude: the site's FP per-channel maxima, for the SmoothQuant scale.
    """
    n1, n2 = learned.left.size, learned.right.size
    scale = smoothquant_scale(weight_magnitude.float(), act_magnitude.float(), SMOOTH_ALPHA)
    return {
        "none": affine(_identity(n1), _identity(n2)),
        "smooth": affine(_identity(n1), _identity(n2), scale),
        "hadamard": affine(_hadamard(n1, generator), _hadamard(n2, generator)),
        "flatquant": learned,
    }
