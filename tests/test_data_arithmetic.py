import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.data import arith_tasks


def _evaluate(tokens, p):
    """Plain-Python left-to-right evaluation of the expression tokens (digits and operator ids)."""
    value = tokens[0]
    for op, a in zip(tokens[1::2], tokens[2::2]):
        value = (value * a if op == p + 1 else value + a) % p
    return value


@settings(max_examples=25, deadline=None)
@given(k=st.integers(2, 7), p=st.integers(2, 11), cot=st.booleans(), seed=st.integers(0, 100))
def test_answers_and_steps_match_plain_python(k, p, cot, seed):
    batch = arith_tasks(6, n_operands=k, modulus=p, cot=cot, generator=torch.Generator().manual_seed(seed))
    length = 2 * k + (k - 1 if cot else 1)
    assert batch.inputs.shape == (6, length - 1)
    z = torch.cat([batch.inputs, batch.targets[:, -1:]], 1).tolist()
    for row, mask in zip(z, batch.mask.tolist()):
        expr = row[: 2 * k - 1]
        assert row[2 * k - 1] == p + 2
        assert row[-1] == _evaluate(expr, p)
        if cot:
            assert row[2 * k:] == [_evaluate(expr[: 2 * j + 1], p) for j in range(1, k)]
        # exactly the tokens after "=" are targets that count
        assert mask == [False] * (2 * k - 1) + [True] * (length - 2 * k)
    assert int(batch.inputs.max()) <= p + 2


def test_both_operators_occur():
    batch = arith_tasks(200, n_operands=4, cot=False, generator=torch.Generator().manual_seed(0))
    ops = batch.inputs[:, 1:6:2]
    assert (ops == 7).any() and (ops == 8).any()


def test_bad_input():
    g = torch.Generator()
    with pytest.raises(ValueError, match="n_operands"):
        arith_tasks(2, n_operands=1, cot=True, generator=g)
    with pytest.raises(ValueError, match="modulus"):
        arith_tasks(2, n_operands=3, cot=True, generator=g, modulus=1)
    with pytest.raises(TypeError, match="cot"):
        arith_tasks(2, n_operands=3, cot="yes", generator=g)
    with pytest.raises(TypeError, match="generator"):
        arith_tasks(2, n_operands=3, cot=True, generator=None)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 14), seed=st.integers(0, 1000), merged=st.booleans())
def test_letter_counting_counts_and_its_tokens_spell_the_string(n, seed, merged):
    from minilib.data import MERGED_PIECES, letter_counting

    batch = letter_counting(5, n_chars=n, generator=torch.Generator().manual_seed(seed), merged=merged)
    z = torch.cat([batch.inputs, batch.targets[:, -1:]], 1)
    assert z.shape == (5, n + 2) and batch.mask.sum().item() == 5 and batch.mask[:, n].all()
    for row in z.tolist():
        pieces = [MERGED_PIECES[t] for t in row[:n] if t != 8]
        text = "".join(pieces)
        assert len(text) == n and row[n] == 9
        assert row[n + 1] - 10 == text.count("a")
        if not merged:
            assert all(len(p) == 1 for p in pieces)
        else:  # greedy longest match: no piece could have been longer
            assert len(pieces) <= n and all(p + text_next[:1] not in MERGED_PIECES
                                            for p, text_next in zip(pieces, ["".join(pieces[i + 1:]) for i in range(len(pieces))])
                                            if text_next)


def test_letter_counting_bad_input():
    from minilib.data import letter_counting

    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="n_chars"):
        letter_counting(2, n_chars=0, generator=g, merged=True)
    with pytest.raises(TypeError, match="merged"):
        letter_counting(2, n_chars=3, generator=g, merged="yes")
