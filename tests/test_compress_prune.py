"""minilib.compress.prune: masks against loops that sort each group by hand, redundancy against a per-token loop."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.compress import magnitude_mask, nm_mask, sublayer_redundancy, wanda_mask

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


@SETTINGS
@given(rows=st.integers(1, 5), groups=st.integers(1, 5), nm=st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2), (3, 3)]),
       seed=st.integers(0, 10**6))
def test_nm_mask_keeps_the_n_largest_of_every_group(rows, groups, nm, seed):
    n, m = nm
    w = torch.randn(rows, groups * m, generator=torch.Generator().manual_seed(seed), dtype=f64)
    mask = nm_mask(w, n, m)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    for r in range(rows):
        for g in range(groups):
            vals = w[r, g * m:(g + 1) * m].abs().tolist()
            kept = sorted(range(m), key=lambda i: -vals[i])[:n]
            assert mask[r, g * m:(g + 1) * m].tolist() == [i in kept for i in range(m)]
    assert (mask.reshape(-1, m).sum(-1) == n).all()  # exactly n of every m: a valid 2:4 pattern


def test_nm_mask_ranks_by_a_given_score_and_names_bad_arguments():
    w = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert nm_mask(w, score=torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [[False, False, True, True]]
    with pytest.raises(ValueError, match="m=4"):
        nm_mask(torch.randn(2, 6))
    with pytest.raises(ValueError, match="n must be at most m"):
        nm_mask(torch.randn(2, 8), 5, 4)
    with pytest.raises(ValueError, match="score"):
        nm_mask(torch.randn(2, 8), score=torch.randn(8))


@SETTINGS
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=3), sparsity=st.floats(0, 1), seed=st.integers(0, 10**6))
def test_magnitude_mask_drops_the_smallest_fraction(shape, sparsity, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)
    mask = magnitude_mask(w, sparsity)
    n_drop = int(sparsity * w.numel())
    assert (~mask).sum().item() == n_drop
    if 0 < n_drop < w.numel():
        assert w[~mask].abs().max() <= w[mask].abs().min()


def test_wanda_mask_compares_weights_times_input_norms_within_each_row():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], dtype=f64)
    norms = torch.tensor([10.0, 1.0, 1.0, 0.1], dtype=f64)
    # scores: row 0 = 10, 2, 3, 0.4 ; row 1 = 40, 3, 2, 0.1
    assert wanda_mask(w, norms, 0.5).tolist() == [[True, False, True, False], [True, True, False, False]]
    assert magnitude_mask(w, 0.5).tolist() == [[False, False, True, True], [True, True, False, False]]
    with pytest.raises(ValueError, match="input_norms"):
        wanda_mask(w, norms[:3], 0.5)


def test_sublayer_redundancy_is_one_minus_the_mean_cosine():
    g = torch.Generator().manual_seed(0)
    x_in, x_out = torch.randn(2, 3, 5, generator=g, dtype=f64), torch.randn(2, 3, 5, generator=g, dtype=f64)
    cosines = [sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
               for u, v in zip(x_in.reshape(-1, 5).tolist(), x_out.reshape(-1, 5).tolist())]
    assert sublayer_redundancy(x_in, x_out).item() == pytest.approx(1 - sum(cosines) / len(cosines), rel=1e-12)
    assert sublayer_redundancy(x_in, 3 * x_in).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="x_out"):
        sublayer_redundancy(x_in, x_out[:, :2])


def test_output_aware_pruning_scores_by_output_norm_and_refits_by_least_squares():
    from minilib.compress import prune_output_aware

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(200, 6, generator=g, dtype=f64) @ torch.randn(6, 6, generator=g, dtype=f64)  # correlated units
    w_out = torch.randn(3, 6, generator=g, dtype=f64)
    norms = [math.sqrt(sum(v * v for v in hidden[:, j].tolist())) * math.sqrt(sum(v * v for v in w_out[:, j].tolist()))
             for j in range(6)]
    want_keep = sorted(sorted(range(6), key=lambda j: -norms[j])[:3])
    keep, plain = prune_output_aware(hidden, w_out, 3, reconstruct=False)
    assert keep.tolist() == want_keep and torch.equal(plain, w_out[:, keep])
    _, refit = prune_output_aware(hidden, w_out, 3)
    # the normal equations H_S^T H_S X = H_S^T Y, solved independently
    H_S, Y = hidden[:, keep], hidden @ w_out.T
    torch.testing.assert_close(refit.T, torch.linalg.solve(H_S.T @ H_S, H_S.T @ Y), rtol=1e-8, atol=1e-10)
    err = lambda w: (H_S @ w.T - Y).pow(2).sum().item()  # noqa: E731
    assert err(refit) < err(plain)
    _, full = prune_output_aware(hidden, w_out, 6)
    torch.testing.assert_close(full, w_out, rtol=1e-8, atol=1e-10)  # keeping every unit reconstructs exactly
    with pytest.raises(ValueError, match="n_keep"):
        prune_output_aware(hidden, w_out, 7)
