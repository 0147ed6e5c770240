"""minilib.compress.fusion: Sinkhorn against the plain (non-log) matrix-scaling loop, alignment on a permuted copy."""
import pytest
import torch

from minilib.compress import align_units, sinkhorn

f64 = torch.float64


def test_sinkhorn_equals_plain_matrix_scaling_and_has_uniform_marginals():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(5, 7, generator=g, dtype=f64)
    plan = sinkhorn(cost, epsilon=0.3, n_iters=500)
    K = torch.exp(-cost / 0.3)  # the textbook iteration: u = a / (K v), v = b / (K^T u)
    u, v = torch.ones(5, dtype=f64), torch.ones(7, dtype=f64)
    for _ in range(500):
        u = (1 / 5) / (K @ v)
        v = (1 / 7) / (K.T @ u)
    torch.testing.assert_close(plan, u[:, None] * K * v[None, :], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(plan.sum(1), torch.full((5,), 1 / 5, dtype=f64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(plan.sum(0), torch.full((7,), 1 / 7, dtype=f64), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(cost, epsilon=0.0)


def test_align_units_recovers_the_permutation_of_a_noisy_copy():
    g = torch.Generator().manual_seed(1)
    features_a = torch.randn(12, 20, generator=g, dtype=f64)
    perm = torch.randperm(12, generator=g)
    features_b = features_a[perm] + 0.05 * torch.randn(12, 20, generator=g, dtype=f64)
    P = align_units(features_a, features_b, epsilon=0.01, n_iters=500)
    torch.testing.assert_close(P.sum(0), torch.ones(12, dtype=f64), rtol=1e-6, atol=1e-6)  # doubly stochastic
    assert P.argmax(1).tolist() == perm.argsort().tolist()  # unit i of A is unit perm^-1(i) of B
    assert (P @ features_b - features_a).norm() < 0.1 * (features_b - features_a).norm()
    with pytest.raises(ValueError, match="features_b"):
        align_units(features_a, features_b[:, :3])
