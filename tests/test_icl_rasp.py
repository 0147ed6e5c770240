from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilib.icl import rasp
from minilib.icl.rasp import (EQ, LT, TRUE, aggregate, attention_layers, double_histogram, dyck1, histogram, indices, map_sop, reverse,
                              run, select, selector_width, sequence_map, sort, tokens)

SEQS = st.lists(st.integers(0, 6), min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(SEQS)
def test_programs_match_plain_python(seq):
    assert run(histogram(), seq).tolist() == [seq.count(x) for x in seq]
    assert run(reverse(), seq).tolist() == seq[::-1]
    assert run(sort(), seq).tolist() == sorted(seq)
    counts = Counter(seq)
    assert run(double_histogram(), seq).tolist() == [sum(1 for c in counts.values() if c == counts[x]) for x in seq]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=14))
def test_dyck1_matches_a_counter(seq):
    depth, ok, want = 0, True, []
    for x in seq:
        depth += 1 if x == 1 else -1
        ok = ok and depth >= 0
        want.append(int(ok and depth == 0))
    assert run(dyck1(), seq).tolist() == want


def test_primitives():
    seq = [4, 2, 4, 7]
    sel = select(tokens, tokens, LT)
    # query q selects keys k with key < query
    assert run(selector_width(sel), seq).tolist() == [1, 0, 1, 3]
    assert run(aggregate(sel, indices), seq).tolist() == [1.0, 0.0, 1.0, 1.0]   # mean of positions 0, 1, 2; nothing selected -> 0
    assert run(map_sop(lambda x: x + 1, tokens), seq).tolist() == [5, 3, 5, 8]
    assert run(sequence_map(lambda x, i: x * i, tokens, indices), seq).tolist() == [0, 2, 8, 21]
    assert run(selector_width(select(indices, indices, TRUE)), seq).tolist() == [4] * 4
    assert run(selector_width(select(tokens, indices, EQ)), [0, 0, 1]).tolist() == [2, 1, 0]


def test_attention_layers_read_from_the_graph():
    assert attention_layers(histogram()) == [1]
    assert attention_layers(reverse()) == [1, 1]
    assert attention_layers(sort()) == [1, 1]
    assert attention_layers(dyck1()) == [1, 1]
    assert attention_layers(double_histogram()) == [2, 1]
    assert attention_layers(map_sop(abs, tokens)) == []
    # two independent heads in layer 1, then one in layer 2
    a = selector_width(select(tokens, tokens, EQ))
    b = aggregate(select(indices, indices, TRUE), tokens)
    c = aggregate(select(a, b, LT), tokens)
    assert attention_layers(c) == [2, 1]


def test_bad_input():
    with pytest.raises(TypeError, match="keys"):
        select([1, 2], tokens, EQ)
    with pytest.raises(TypeError, match="selector"):
        aggregate(tokens, tokens)
    with pytest.raises(TypeError, match="fn"):
        map_sop(3, tokens)
    with pytest.raises(ValueError, match="sequence"):
        run(tokens, np.zeros((2, 2)))
    assert rasp.__all__
