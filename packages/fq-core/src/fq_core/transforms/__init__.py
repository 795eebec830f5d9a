"""Transforms: Kronecker-factored learnable affine transforms, and fixed orthogonal baselines."""

from fq_core.transforms.affine import KroneckerAffine, smoothquant_scale
from fq_core.transforms.kronecker import apply_left, apply_right, kron_apply, kron_factors
from fq_core.transforms.matrices import (
    DirectMatrix,
    FixedMatrix,
    Parametrization,
    SVDMatrix,
    factor_cache,
    frozen,
    learnable_factor,
)
from fq_core.transforms.orthogonal import hadamard_like, random_orthogonal, sylvester_hadamard

__all__ = [
    "DirectMatrix",
    "FixedMatrix",
    "KroneckerAffine",
    "Parametrization",
    "SVDMatrix",
    "apply_left",
    "apply_right",
    "factor_cache",
    "frozen",
    "hadamard_like",
    "kron_apply",
    "kron_factors",
    "learnable_factor",
    "random_orthogonal",
    "smoothquant_scale",
    "sylvester_hadamard",
]
