"""Kronecker transforms: factor sizes, apply == materialised kron, exact inverses, baselines."""

import pytest
import torch

from fq_core.quant import QuantSpec, fake_quant
from fq_core.transforms import (
    DirectMatrix,
    FixedMatrix,
    KroneckerAffine,
    SVDMatrix,
    apply_left,
    apply_right,
    factor_cache,
    frozen,
    hadamard_like,
    kron_apply,
    kron_factors,
    random_orthogonal,
    smoothquant_scale,
    sylvester_hadamard,
)


@pytest.mark.parametrize(
    "n, expected",
    [
        (576, (24, 24)),
        (1536, (32, 48)),
        (4096, (64, 64)),
        (11008, (86, 128)),
        (14336, (112, 128)),
        (13, (1, 13)),
    ],
)
def test_factor_sizes_are_closest_to_sqrt(n, expected):
    assert kron_factors(n) == expected


def test_kron_apply_equals_materialised_kron():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(6, 6, generator=g, dtype=torch.float64),
        torch.randn(4, 4, generator=g, dtype=torch.float64),
    )
    x = torch.randn(2, 3, 24, generator=g, dtype=torch.float64)
    torch.testing.assert_close(kron_apply(x, a, b), x @ torch.kron(a, b), rtol=0, atol=1e-12)
    eye6, eye4 = torch.eye(6, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(apply_left(x, a), x @ torch.kron(a, eye4), rtol=0, atol=1e-12)
    torch.testing.assert_close(apply_right(x, b), x @ torch.kron(eye6, b), rtol=0, atol=1e-12)


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("singular") or name == "scale":
                param.copy_(torch.rand(param.shape, generator=g) * 1.5 + 0.5)
            else:
                param.add_(0.3 * torch.randn(param.shape, generator=g))


@pytest.mark.parametrize("cls", [SVDMatrix, DirectMatrix])
def test_inverse_is_exact(cls):
    factor = cls(24, torch.Generator().manual_seed(3))
    _perturb(factor)
    eye = torch.eye(24)
    torch.testing.assert_close(factor.matrix() @ factor.inverse(), eye, rtol=0, atol=1e-5)
    m64, inv64 = factor.exact()
    torch.testing.assert_close(m64 @ inv64, eye.double(), rtol=0, atol=1e-10)
    fixed = frozen(factor)
    torch.testing.assert_close(fixed.matrix(), factor.matrix().detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(fixed.exact()[0] @ fixed.exact()[1], eye.double(), rtol=0, atol=1e-10)


def test_svd_factor_starts_orthogonal_and_its_u_v_stay_orthogonal():
    factor = SVDMatrix(16, torch.Generator().manual_seed(0))
    m = factor.matrix()
    torch.testing.assert_close(m @ m.T, torch.eye(16), rtol=0, atol=1e-5)
    _perturb(factor)
    u = factor.u()
    torch.testing.assert_close(u @ u.T, torch.eye(16), rtol=0, atol=1e-5)


def test_random_orthogonal_is_orthogonal_and_seeded():
    q1 = random_orthogonal(10, torch.Generator().manual_seed(7))
    q2 = random_orthogonal(10, torch.Generator().manual_seed(7))
    assert torch.equal(q1, q2)
    torch.testing.assert_close(q1 @ q1.T, torch.eye(10, dtype=torch.float64), rtol=0, atol=1e-12)


def test_hadamard_matrices():
    h = sylvester_hadamard(8)
    torch.testing.assert_close(h.abs(), torch.full((8, 8), 8**-0.5, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(h @ h.T, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        sylvester_hadamard(12)
    for n in (12, 576, 9):
        m = hadamard_like(n, torch.Generator().manual_seed(0))
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-10)
    # powers of two: kron of the factors' Hadamards is the big Hadamard (so Kronecker sites lose nothing)
    torch.testing.assert_close(
        torch.kron(hadamard_like(8), hadamard_like(4)).abs(), sylvester_hadamard(32).abs()
    )


@pytest.mark.parametrize("parametrization", [SVDMatrix, DirectMatrix])
def test_affine_transform_keeps_the_linear_output_exact(parametrization):
    g = torch.Generator().manual_seed(1)
    t = KroneckerAffine(parametrization(4, g), parametrization(6, g), channel_scale=True)
    _perturb(t)
    x, w = torch.randn(5, 24, generator=g), torch.randn(7, 24, generator=g)
    torch.testing.assert_close(t(x) @ t.transform_weight(w).T, x @ w.T, rtol=1e-4, atol=1e-4)
    # float64 merge path, against a float64 materialised computation
    (l64, _), (r64, _) = t.left.exact(), t.right.exact()
    x64 = (x.double() * t.scale.double()) @ torch.kron(l64, r64)
    torch.testing.assert_close(
        x64 @ t.transform_weight_exact(w).T, x.double() @ w.double().T, rtol=0, atol=1e-10
    )


def test_gradients_reach_every_transform_parameter_through_fake_quant():
    g = torch.Generator().manual_seed(2)
    t = KroneckerAffine(SVDMatrix(4, g), SVDMatrix(4, g), channel_scale=True)
    _perturb(t)
    x, w = torch.randn(8, 16, generator=g), torch.randn(3, 16, generator=g)
    spec = QuantSpec(4, True, "token")
    y = fake_quant(t(x), spec) @ fake_quant(t.transform_weight(w), QuantSpec(4, True, "channel")).T
    (y - x @ w.T).pow(2).mean().backward()
    for name, param in t.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_fixed_matrix_defaults_to_exact_inverse():
    m = torch.tensor([[2.0, 1.0], [0.0, 4.0]])
    fixed = FixedMatrix(m)
    torch.testing.assert_close(fixed.inverse(), torch.tensor([[0.5, -0.125], [0.0, 0.25]]))


def test_smoothquant_scale_hand_computed():
    s = smoothquant_scale(torch.tensor([4.0, 1.0]), torch.tensor([16.0, 1.0]), alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([0.5, 1.0]))
    s3 = smoothquant_scale(torch.tensor([8.0]), torch.tensor([8.0]), alpha=0.3)
    torch.testing.assert_close(s3, torch.tensor([8.0**0.7 / 8.0**0.3]))


def test_factor_cache_reuses_within_the_block_and_matches_uncached():
    factor = SVDMatrix(6, torch.Generator().manual_seed(4))
    _perturb(factor)
    plain = factor.matrix(), factor.inverse()
    with factor_cache():
        first = factor.matrix()
        assert factor.matrix() is first  # computed once per block
        cached_inverse = factor.inverse()
        (first.sum() + cached_inverse.sum()).backward()  # gradients flow through cached tensors
    assert factor.matrix() is not factor.matrix()  # no caching outside a block
    torch.testing.assert_close(first, plain[0])
    torch.testing.assert_close(cached_inverse, plain[1])
    assert factor.singular.grad is not None and factor.u.skew.grad is not None
