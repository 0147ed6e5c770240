import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.icl import ngram_transformer


def _table(n, V, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn((V,) * n, generator=g, dtype=torch.float64) * 2, -1)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 4), V=st.integers(2, 5), T=st.integers(0, 9), seed=st.integers(0, 50))
def test_hardmax_model_equals_the_table(n, V, T, seed):
    table = _table(n, V, seed)
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randint(0, V, (3, n - 1 + T), generator=g)
    out = ngram_transformer(table)(idx)
    for b in range(3):
        for t in range(n - 2, idx.shape[1]):
            history = tuple(idx[b, t - n + 2: t + 1].tolist())
            torch.testing.assert_close(out[b, t - n + 2], table[history], rtol=0, atol=1e-12)


def test_softmax_attention_approaches_hardmax_as_beta_grows():
    table = _table(3, 8, 0)
    model = ngram_transformer(table)
    idx = torch.randint(0, 8, (4, 16), generator=torch.Generator().manual_seed(0))
    errors = [(torch.softmax(model(idx, beta), -1) - table.exp()[idx[:, :-1], idx[:, 1:]]).abs().max().item()
              for beta in (1.0, 3.0, 10.0, 30.0)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-9
    att = model.attention(6)
    assert att.shape == (2, 6, 6) and (att[1, 3:].argmax(-1) == torch.arange(2, 5)).all()


def test_bad_input():
    with pytest.raises(ValueError, match="table"):
        ngram_transformer(torch.zeros(3, 4))
    model = ngram_transformer(_table(3, 4, 0))
    with pytest.raises(ValueError, match="idx"):
        model(torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="idx"):
        model(torch.full((2, 5), 4))
    with pytest.raises(ValueError, match="beta"):
        model(torch.zeros(2, 5, dtype=torch.long), beta=-1.0)
