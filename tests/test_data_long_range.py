"""minilib.data.long_range: mini-LRA tasks. ListOps answers against an independent recursive evaluator of the
printed expression; retrieval rows related exactly when the label says so; the needle's value is the answer; marked
parity against a loop over the tokens."""
import statistics

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.data import LISTOPS_TOKENS, lra_listops, lra_retrieval, marked_parity, needle_retrieval

FAST = settings(max_examples=25, deadline=None)


def evaluate(words: list[str]) -> int:
    """Recursive descent over the printed tokens, Python's statistics.median_low for MED."""
    def parse(i):
        if words[i].isdigit():
            return int(words[i]), i + 1
        op, args, i = words[i], [], i + 1
        while words[i] != "]":
            value, i = parse(i)
            args.append(value)
        f = {"[MAX": max, "[MIN": min, "[MED": statistics.median_low, "[SM": lambda a: sum(a) % 10}[op]
        return f(args), i + 1

    value, end = parse(0)
    assert end == len(words)
    return value


@FAST
@given(B=st.integers(1, 6), L=st.integers(2, 200), depth=st.integers(1, 5), args=st.integers(2, 6), seed=st.integers(0, 99))
def test_listops_answers_are_the_values_of_the_expressions(B, L, depth, args, seed):
    batch = lra_listops(B, seq_len=L, max_depth=depth, max_args=args, generator=torch.Generator().manual_seed(seed))
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (B, L)
    assert batch.mask[:, -1].all() and batch.mask.sum() == B
    for row, answer in zip(batch.inputs.tolist(), batch.targets[:, -1].tolist()):
        words = [LISTOPS_TOKENS[t] for t in row]
        assert words[-1] == "="
        expr = [w for w in words[:-1] if w != "<pad>"]
        assert evaluate(expr) == answer
    torch.testing.assert_close(batch.targets[:, :-1], batch.inputs[:, 1:])


def test_listops_is_nested_and_uses_every_class_at_l_512():
    batch = lra_listops(200, seq_len=512, generator=torch.Generator().manual_seed(0))
    assert set(batch.targets[:, -1].tolist()) == set(range(10))
    assert (batch.inputs == LISTOPS_TOKENS.index("]")).sum(1).float().mean() > 3  # several operators per row


@FAST
@given(B=st.integers(2, 8), half=st.integers(1, 60), change=st.sampled_from([0.0, 0.1, 0.3]), seed=st.integers(0, 99))
def test_retrieval_documents_match_when_related(B, half, change, seed):
    V = 16
    batch = lra_retrieval(B, seq_len=2 * half + 2, vocab_size=V, change=change, generator=torch.Generator().manual_seed(seed))
    x, label = batch.inputs, batch.targets[:, -1]
    assert set(label.tolist()) <= {V + 2, V + 3} and (x[:, half] == V).all() and (x[:, -1] == V + 1).all()
    first, second = x[:, :half], x[:, half + 1:-1]
    for f, s, y in zip(first, second, label):
        if y == V + 3 and change == 0.0:
            assert torch.equal(f, s)


def test_retrieval_related_pairs_agree_far_more_than_unrelated():
    V, h = 16, 255
    batch = lra_retrieval(400, seq_len=2 * h + 2, vocab_size=V, generator=torch.Generator().manual_seed(1))
    same = (batch.inputs[:, :h] == batch.inputs[:, h + 1:-1]).float().mean(1)
    related = batch.targets[:, -1] == V + 3
    # related: 90% kept plus 1/16 of the redrawn 10%; unrelated: 1/16
    assert abs(same[related].mean() - (0.9 + 0.1 / V)) < 0.01
    assert abs(same[~related].mean() - 1 / V) < 0.01


@FAST
@given(B=st.integers(1, 8), L=st.integers(8, 300), dist=st.integers(1, 5), seed=st.integers(0, 99))
def test_needle_answer_is_the_value_after_the_marker(B, L, dist, seed):
    F, V = 8, 8
    batch = needle_retrieval(B, seq_len=L, n_values=V, n_filler=F, min_distance=dist,
                             generator=torch.Generator().manual_seed(seed))
    for row, answer in zip(batch.inputs.tolist(), batch.targets[:, -1].tolist()):
        assert row.count(F + V) == 1 and row[-1] == F + V + 1
        p = row.index(F + V) + 1
        assert row[p] == answer and F <= answer < F + V and L - 1 - p >= dist


@FAST
@given(B=st.integers(1, 8), L=st.integers(2, 200), m=st.integers(1, 8), seed=st.integers(0, 99))
def test_marked_parity_answer_counts_the_marked_ones(B, L, m, seed):
    m = min(m, L - 1)
    batch = marked_parity(B, seq_len=L, n_marked=m, generator=torch.Generator().manual_seed(seed))
    assert batch.inputs.shape == (B, L) and batch.mask[:, -1].all() and batch.mask.sum() == B
    for row, answer in zip(batch.inputs.tolist(), batch.targets[:, -1].tolist()):
        assert row[-1] == 4 and all(0 <= t <= 3 for t in row[:-1])
        marked_ones, n = 0, 0
        for t in row[:-1]:
            if t in (2, 3):
                n += 1
                marked_ones += t == 3
        assert n == m and answer == (6 if marked_ones % 2 else 5)


def test_marked_parity_labels_are_balanced_and_marks_spread_over_the_row():
    batch = marked_parity(4000, seq_len=64, n_marked=3, generator=torch.Generator().manual_seed(0))
    assert abs((batch.targets[:, -1] == 6).double().mean().item() - 0.5) < 0.03
    per_position = (batch.inputs[:, :-1] >= 2).double().mean(0)
    assert abs(per_position.mean().item() - 3 / 63) < 1e-12 and per_position.min() > 0.02  # uniform: 3/63 = 0.048


def test_bad_arguments_raise():
    g = torch.Generator()
    with pytest.raises(ValueError, match="seq_len"):
        lra_listops(2, seq_len=1, generator=g)
    with pytest.raises(ValueError, match="max_args"):
        lra_listops(2, seq_len=10, max_args=1, generator=g)
    with pytest.raises(ValueError, match="seq_len"):
        lra_retrieval(2, seq_len=9, generator=g)
    with pytest.raises(ValueError, match="change"):
        lra_retrieval(2, seq_len=10, change=1.0, generator=g)
    with pytest.raises(ValueError, match="seq_len"):
        needle_retrieval(2, seq_len=4, min_distance=2, generator=g)
    with pytest.raises(TypeError, match="generator"):
        needle_retrieval(2, seq_len=10, generator=0)
    with pytest.raises(ValueError, match="n_marked"):
        marked_parity(2, seq_len=4, n_marked=4, generator=g)
    with pytest.raises(ValueError, match="seq_len"):
        marked_parity(2, seq_len=1, n_marked=1, generator=g)
