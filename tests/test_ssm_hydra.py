"""minilib.ssm.hydra: the O(L) bidirectional mixer equals its quasiseparable matrix and a naive double sum (fp64)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.ssm import hydra, hydra_matrix


def params(Bt, L, H, N, seed):
    g = torch.Generator().manual_seed(seed)
    return (-torch.rand(Bt, L, H, dtype=torch.float64, generator=g),
            torch.randn(Bt, L, H, N, dtype=torch.float64, generator=g),
            torch.randn(Bt, L, H, N, dtype=torch.float64, generator=g))


def naive(x, fwd, bwd, D):
    """y_t = sum_{s<t} <C_{t-1}, B_s> prod_{r=s+1}^{t-1} a_r x_s + D x_t + sum_{s>t} <Cb_{t+1}, Bb_s> prod_{r=t+1}^{s-1} ab_r x_s."""
    Bt, L, H, P = x.shape
    y = D[:, None] * x
    for t in range(L):
        for s in range(L):
            if s < t:
                w = (fwd[2][:, t - 1] * fwd[1][:, s]).sum(-1) * torch.exp(fwd[0][:, s + 1:t].sum(1))
            elif s > t:
                w = (bwd[2][:, t + 1] * bwd[1][:, s]).sum(-1) * torch.exp(bwd[0][:, t + 1:s].sum(1))
            else:
                continue
            y[:, t] = y[:, t] + w[..., None] * x[:, s]
    return y


@settings(max_examples=15, deadline=None)
@given(L=st.integers(1, 20), chunk=st.integers(1, 25), seed=st.integers(0, 999))
def test_hydra_equals_its_matrix_and_the_double_sum(L, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, L, 3, 2, dtype=torch.float64, generator=g)
    fwd, bwd, D = params(2, L, 3, 4, seed), params(2, L, 3, 4, seed + 1), torch.randn(3, dtype=torch.float64, generator=g)
    y = hydra(x, fwd, bwd, D, chunk_size=chunk)
    torch.testing.assert_close(y, naive(x, fwd, bwd, D), rtol=0, atol=1e-10)
    M = hydra_matrix(fwd, bwd, D)
    torch.testing.assert_close(torch.einsum("bhts,bshp->bthp", M, x), y, rtol=0, atol=1e-10)


def test_quasiseparable_structure():
    """Off-diagonal blocks on either side have rank <= N; the diagonal is D; it sees both directions."""
    L, N = 24, 3
    fwd, bwd = params(1, L, 1, N, 0), params(1, L, 1, N, 1)
    M = hydra_matrix(fwd, bwd, torch.tensor([0.7], dtype=torch.float64))[0, 0]
    assert torch.linalg.matrix_rank(M[L // 2:, :L // 2]) <= N and torch.linalg.matrix_rank(M[:L // 2, L // 2:]) <= N
    torch.testing.assert_close(torch.diagonal(M), torch.full((L,), 0.7, dtype=torch.float64))
    assert M.triu(1).abs().sum() > 0 and M.tril(-1).abs().sum() > 0


def test_bad_diagonal():
    x = torch.randn(1, 5, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"D must be \(H,\) = \(3,\)"):
        hydra(x, params(1, 5, 3, 2, 0), params(1, 5, 3, 2, 1), torch.ones(2, dtype=torch.float64))
