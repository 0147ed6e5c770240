import numpy
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


def test_copying_score_against_eigenvalues_and_known_circuits():
    from minilib.icl import copying_score

    g = torch.Generator().manual_seed(0)
    eye = torch.eye(6, dtype=torch.float64)
    assert copying_score(eye).item() == pytest.approx(1.0, abs=1e-12)
    assert copying_score(-2 * eye).item() == pytest.approx(-1.0, abs=1e-12)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert abs(copying_score(a - a.T).item()) < 1e-12           # antisymmetric: eigenvalues on the imaginary axis
    circuits = torch.randn(3, 5, 5, generator=g, dtype=torch.float64)
    got = copying_score(circuits)
    for h in range(3):
        eig = numpy.linalg.eigvals(circuits[h].numpy())          # an independent eigen-solver
        assert got[h].item() == pytest.approx(numpy.trace(circuits[h].numpy()) / numpy.abs(eig).sum(), rel=1e-10)
    with pytest.raises(ValueError, match="circuit"):
        copying_score(torch.zeros(3, 4))


@settings(max_examples=30, deadline=None)
@given(T=st.integers(4, 24), min_len=st.integers(1, 12), seed=st.integers(0, 100))
def test_repeated_segments_hold_one_repeat_of_varying_length(T, min_len, seed):
    from minilib.icl import repeated_segments

    if 2 * min_len > T:
        with pytest.raises(ValueError, match="min_len"):
            repeated_segments(2, seq_len=T, vocab_size=50, min_len=min_len, generator=torch.Generator())
        return
    x = repeated_segments(16, seq_len=T, vocab_size=1000, min_len=min_len, generator=torch.Generator().manual_seed(seed))
    assert x.shape == (16, T) and x.dtype == torch.int64
    for row in x.tolist():   # some length L >= min_len and start p with row[p + L + i] == row[p + i] for all i < L
        assert any(all(row[p + L + i] == row[p + i] for i in range(L))
                   for L in range(min_len, T // 2 + 1) for p in range(T - 2 * L + 1))


def test_repeated_segments_vary_the_distance_between_copies():
    from minilib.icl import repeated_segments

    x = repeated_segments(400, seq_len=32, vocab_size=10**6, min_len=8, generator=torch.Generator().manual_seed(0))
    # with 10^6 tokens, a token that occurs twice marks the copy distance of its row
    distances = set()
    for row in x.tolist():
        first = {}
        for t, tok in enumerate(row):
            if tok in first:
                distances.add(t - first[tok])
                break
            first[tok] = t
    assert distances == set(range(8, 17))
    with pytest.raises(TypeError, match="generator"):
        repeated_segments(2, seq_len=8, vocab_size=5, min_len=2, generator=None)


def test_trigram_background_is_followed_outside_the_copies():
    from minilib.icl import repeated_segments

    V = 50
    table = torch.randint(0, V, (V, V), generator=torch.Generator().manual_seed(1))
    x = repeated_segments(300, seq_len=32, vocab_size=V, min_len=4, follow=0.8, trigram=table,
                          generator=torch.Generator().manual_seed(2))
    follows = (x[:, 2:] == table[x[:, :-2], x[:, 1:-1]]).float().mean().item()
    # the background follows the table at 0.8 + 0.2 / V of its positions; the two copies (on average 20 of the 32
    # positions) and the positions just after them at chance, 1 / V
    assert 0.15 < follows < 0.45
    plain = repeated_segments(300, seq_len=32, vocab_size=V, min_len=4, generator=torch.Generator().manual_seed(2))
    assert (plain[:, 2:] == table[plain[:, :-2], plain[:, 1:-1]]).float().mean().item() < 0.05
    with pytest.raises(ValueError, match="trigram"):
        repeated_segments(2, seq_len=8, vocab_size=5, min_len=2, trigram=table, generator=torch.Generator())


def test_attention_only_model_adds_only_attention():
    import minilib  # noqa: F401  (registers ffn="none")
    from minilib.icl import NoFeedForward
    from minilib.models import TransformerConfig, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(vocab_size=10, d_model=16, n_layers=2, n_heads=2, max_len=8, ffn="none"))
    block = model.blocks[0]
    assert isinstance(block.ffn, NoFeedForward)
    h = torch.randn(2, 5, 16)
    torch.testing.assert_close(block(h), h + block.mixer(block.norm1(h)))
    assert not any("ffn" in name for name, _ in model.named_parameters())
