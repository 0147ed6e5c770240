import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.icl import induction_head_patterns, prefix_matching_score


def _repeated(L, V, seed):
    segment = torch.randperm(V, generator=torch.Generator().manual_seed(seed))[:L]
    return torch.cat([segment, segment])


def _score_by_loops(attn, tokens):
    T = len(tokens)
    L = T // 2
    return sum(attn[t, s].item() for t in range(L, T) for s in range(1, t + 1) if tokens[s - 1] == tokens[t]) / L


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 8), seed=st.integers(0, 100))
def test_score_equals_the_loop_definition(L, seed):
    tokens = torch.randint(0, 4, (2 * L,), generator=torch.Generator().manual_seed(seed))  # repeats inside the segment too
    logits = torch.randn(3, 2 * L, 2 * L, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    attn = torch.softmax(logits.masked_fill(torch.ones(2 * L, 2 * L, dtype=torch.bool).triu(1), float("-inf")), -1)
    got = prefix_matching_score(attn, tokens)
    for h in range(3):
        assert abs(got[h].item() - _score_by_loops(attn[h], tokens.tolist())) < 1e-12


def test_constructed_circuit_scores_one_and_the_previous_token_head_zero():
    tokens = _repeated(10, 50, 0)
    patterns = induction_head_patterns(tokens)
    score = prefix_matching_score(patterns, tokens)
    assert score[1].item() == 1.0 and score[0].item() == 0.0
    # the induction head copies the next token of the first copy: attention @ tokens predicts tokens[t + 1]
    predicted = patterns[1] @ tokens.double()
    assert predicted[10:-1].tolist() == tokens[11:].double().tolist()
    assert torch.allclose(patterns.sum(-1), torch.ones(2, 20, dtype=torch.float64))


def test_bad_input():
    tokens = _repeated(3, 10, 0)
    with pytest.raises(ValueError, match="attn"):
        prefix_matching_score(torch.zeros(2, 5, 5), tokens)
    with pytest.raises(ValueError, match="tokens"):
        prefix_matching_score(torch.zeros(5, 5), tokens[:5])
    with pytest.raises(ValueError, match="tokens"):
        induction_head_patterns(tokens[None])
