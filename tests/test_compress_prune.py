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


def _one_step_by_hand(w, b, teacher_w, x, y, *, lr, distill, decay, temperature):
    """One SGD step of adaptive sparse training on a linear classifier, written out with explicit gradients."""
    groups = w.abs().reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    for r, row in enumerate(groups.tolist()):
        for i in sorted(range(4), key=lambda i: -row[i])[:2]:
            keep[r, i] = True
    mask = keep.reshape(w.shape)
    logits = x @ (w * mask).T + b
    p = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(y, logits.shape[-1]).to(w.dtype)
    d_logits = (1 - distill) * (p - onehot) / len(x)
    p_s, p_t = torch.softmax(logits / temperature, -1), torch.softmax(x @ teacher_w.T / temperature, -1)
    d_logits = d_logits + distill * temperature * (p_s - p_t) / len(x)  # d/dz of tau^2 KL(p_t || p_s(z / tau))
    grad_w = d_logits.T @ x + decay * w * ~mask  # straight through the mask, decay on the pruned entries
    new_w = w - lr * grad_w
    return new_w * (new_w.abs().reshape(-1, 4).argsort(-1, descending=True).argsort(-1) < 2).reshape(w.shape), \
        b - lr * d_logits.sum(0)


@pytest.mark.parametrize("distill, decay, temperature", [(0.0, 0.0, 1.0), (0.5, 0.1, 1.0), (1.0, 0.0, 2.0)])
def test_ast_train_one_step_matches_the_hand_written_gradient(distill, decay, temperature):
    from minilib.compress import ast_train

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.nn.Linear(8, 5).double(), torch.nn.Linear(8, 5, bias=False).double()
    x, y = torch.randn(6, 8, generator=g, dtype=f64), torch.randint(5, (6,), generator=g)
    w0, b0 = student.weight.detach().clone(), student.bias.detach().clone()
    losses = ast_train(student, teacher, iter([(x, y)]), steps=1, optimizer=torch.optim.SGD(student.parameters(), lr=0.3),
                       distill=distill, decay=decay, temperature=temperature)
    want_w, want_b = _one_step_by_hand(w0, b0, teacher.weight.detach(), x, y, lr=0.3, distill=distill, decay=decay,
                                       temperature=temperature)
    torch.testing.assert_close(student.weight.detach(), want_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(student.bias.detach(), want_b, rtol=1e-10, atol=1e-12)
    assert len(losses) == 1 and (student.weight.reshape(-1, 4) != 0).sum(-1).le(2).all()


def test_ast_train_reselects_masks_and_recovers_a_pruned_model():
    from minilib.compress import ast_train

    g = torch.Generator().manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()
    x = torch.randn(256, 16, generator=g, dtype=f64)
    y = teacher(x).argmax(-1).detach()
    student = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()
    student.load_state_dict(teacher.state_dict())
    one_shot = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()
    one_shot.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for layer in (one_shot[0], one_shot[2]):
            layer.weight.mul_(nm_mask(layer.weight))
    first_mask = nm_mask(student[0].weight)
    losses = ast_train(student, teacher, iter([(x, y)] * 60), steps=60, lr=1e-2)
    ce = lambda mdl: torch.nn.functional.cross_entropy(mdl(x), y).item()  # noqa: E731
    assert ce(student) < ce(one_shot) and losses[-1] < losses[0]
    for layer in (student[0], student[2]):
        assert ((layer.weight.reshape(-1, 4) != 0).sum(-1) <= 2).all()  # the returned weights are 2:4 sparse
    assert not torch.equal(student[0].weight != 0, first_mask)  # the mask moved during training
    with pytest.raises(ValueError, match="m=4"):
        ast_train(torch.nn.Linear(6, 2), None, iter([]), steps=1)
    with pytest.raises(ValueError, match="distill"):
        ast_train(student, teacher, iter([]), steps=1, distill=1.5)
