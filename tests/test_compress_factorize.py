"""minilib.compress.factorize: SVD factors against the error Eckart-Young promises, the energy rank against a loop."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.compress import energy_rank, svd_factorize

f64 = torch.float64


@settings(max_examples=25, deadline=None)
@given(out=st.integers(1, 8), inp=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_svd_at_full_rank_is_exact_and_truncation_is_eckart_young(out, inp, seed):
    w = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=f64)
    A, B = svd_factorize(w, min(out, inp))
    torch.testing.assert_close(A @ B, w, rtol=1e-10, atol=1e-10)
    s = torch.linalg.svdvals(w)
    for r in range(1, min(out, inp) + 1):
        A, B = svd_factorize(w, r)
        assert A.shape == (out, r) and B.shape == (r, inp)
        err = (w - A @ B).pow(2).sum().item()
        assert err == pytest.approx(s[r:].pow(2).sum().item(), rel=1e-8, abs=1e-10)


def test_energy_rank_is_the_first_rank_reaching_the_fraction():
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=f64))  # energies 9, 4, 1, 0.25 of 14.25
    cumulative = [9 / 14.25, 13 / 14.25, 14 / 14.25, 1.0]
    for e in (0.1, 0.63, 0.64, 0.9, 0.95, 0.99, 1.0):
        assert energy_rank(w, e) == next(i + 1 for i, c in enumerate(cumulative) if c >= e - 1e-12)
    with pytest.raises(ValueError, match="energy"):
        energy_rank(w, 1.5)


def test_dense_sparse_factorize_gives_nm_factors_and_the_least_squares_dense_factor():
    from minilib.compress import dense_sparse_factorize

    w = torch.randn(24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    D, S = dense_sparse_factorize(w, 6, steps=50)
    assert D.shape == (24, 6) and S.shape == (6, 32)
    assert ((S.reshape(-1, 4) != 0).sum(-1) == 2).all()  # exactly two of every four entries of the sparse factor
    # D solves the normal equations D (S S^T) = W S^T for that S, solved independently
    torch.testing.assert_close(D, torch.linalg.solve(S @ S.T, S @ w.T).T, rtol=1e-8, atol=1e-10)


def test_dense_sparse_factorize_beats_svd_at_an_equal_budget_and_is_exact_when_dense():
    from minilib.compress import dense_sparse_factorize, svd_factorize

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # a flat spectrum
    A, B = svd_factorize(w, 16)  # 16 * (64 + 128) = 3072 values
    D, S = dense_sparse_factorize(w, 24)  # 24 * 64 + 24 * 128 / 2 = 3072 nonzeros
    assert D.numel() + (S != 0).sum().item() == A.numel() + B.numel()
    assert (w - D @ S).norm() < 0.95 * (w - A @ B).norm()
    D, S = dense_sparse_factorize(w.T, 64, n=4, m=4, steps=5)  # no sparsity, S square: D = W S^-1 reproduces W
    torch.testing.assert_close(D @ S, w.T, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="m=4"):
        dense_sparse_factorize(w[:, :30], 4)
    with pytest.raises(ValueError, match="rank"):
        dense_sparse_factorize(w, 65)
