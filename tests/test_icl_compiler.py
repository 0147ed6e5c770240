from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.icl import rasp
from minilib.icl.compiler import compile_program
from minilib.icl.rasp import EQ, LT, aggregate, indices, map_sop, select, selector_width, sequence_map, tokens

VOCAB, MAX_LEN = range(5), 9
SEQS = st.lists(st.integers(0, 4), min_size=1, max_size=MAX_LEN)
COMPILED = {name: compile_program(getattr(rasp, name)(), VOCAB, MAX_LEN)
            for name in ("histogram", "double_histogram", "reverse", "sort")}


def _plain_python(name, seq):
    counts = Counter(seq)
    return {"histogram": [counts[x] for x in seq], "reverse": seq[::-1], "sort": sorted(seq),
            "double_histogram": [sum(1 for c in counts.values() if c == counts[x]) for x in seq]}[name]


@settings(max_examples=60, deadline=None)
@given(SEQS)
def test_compiled_weights_reproduce_the_interpreter(seq):
    for name, compiled in COMPILED.items():
        got = compiled.run(seq).tolist()
        assert got == rasp.run(compiled.program, seq).tolist() == _plain_python(name, seq), name


@settings(max_examples=30, deadline=None)
@given(SEQS)
def test_every_block_is_one_hot_and_heads_attend_like_their_selectors(seq):
    compiled = COMPILED["reverse"]
    stream, patterns = compiled.forward(compiled.embed(seq))
    for name in compiled._block_of.values():
        block = stream[1:, compiled.layout[name]]
        assert torch.allclose(block.max(-1).values, torch.ones(len(seq), dtype=torch.float64), atol=1e-9)
        assert torch.allclose(block.sum(-1), torch.ones(len(seq), dtype=torch.float64), atol=1e-9)
    # the reverse head: query i attends to key n - 1 - i only (positions shifted by the BOS slot)
    attn = next(iter(patterns[-1].values()))[1:, 1:]
    n = len(seq)
    want = torch.zeros(n, n, dtype=torch.float64)
    want[torch.arange(n), n - 1 - torch.arange(n)] = 1.0
    assert torch.allclose(attn, want, atol=1e-12)
    # the length head: BOS and every key get 1 / (n + 1)
    length_attn = next(iter(patterns[0].values()))[1:]
    assert torch.allclose(length_attn, torch.full((n, n + 1), 1 / (n + 1), dtype=torch.float64), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(SEQS)
def test_a_composed_program_with_maps_and_empty_selections(seq):
    # two heads in one layer, a two-input map, a selector that can select nothing
    smaller = selector_width(select(tokens, tokens, LT))
    shifted = map_sop(lambda x: (x + 1) % 5, tokens)
    combined = sequence_map(lambda a, b: a * 10 + b, smaller, shifted)
    first = aggregate(select(indices, map_sop(lambda i: np.zeros_like(i), indices), EQ), tokens)
    program = sequence_map(lambda c, f: c + f, combined, first)
    compiled = compile_program(program, VOCAB, MAX_LEN)
    assert compiled.run(seq).tolist() == rasp.run(program, seq).tolist()
    want = [10 * sum(y < x for y in seq) + (x + 1) % 5 + seq[0] for x in seq]
    assert compiled.run(seq).tolist() == want


def test_widths_at_the_longest_input():
    compiled = compile_program(rasp.histogram(), [7], 16)
    assert compiled.run([7] * 16).tolist() == [16] * 16
    assert compiled.run([7]).tolist() == [1]


def test_layer_count_and_decode_of_an_intermediate():
    compiled = COMPILED["sort"]
    assert [(len(layer.heads), len(layer.mlps)) for layer in compiled.layers] == [(0, 1), (1, 1), (1, 0)]
    key = compiled.program.inputs[0].keys  # the selector of the final aggregate has the target positions as keys
    stream, _ = compiled.forward(compiled.embed([3, 1, 2]))
    assert compiled.decode(stream, key).tolist() == [2, 0, 1]


def test_bad_input():
    with pytest.raises(TypeError, match="program"):
        compile_program("sort", VOCAB, MAX_LEN)
    with pytest.raises(ValueError, match="vocab"):
        compile_program(rasp.sort(), ["a", "b"], MAX_LEN)
    with pytest.raises(ValueError, match="max_len"):
        compile_program(rasp.sort(), VOCAB, 0)
    with pytest.raises(ValueError, match="beta"):
        compile_program(rasp.sort(), VOCAB, 4, beta=-1.0)
    compiled = COMPILED["sort"]
    with pytest.raises(ValueError, match="sequence"):
        compiled.run(list(range(5)) * 2)
    with pytest.raises(ValueError, match="vocab"):
        compiled.run([1, 7])
    with pytest.raises(ValueError, match="sop"):
        compiled.decode(compiled.embed([1]), rasp.histogram())


@settings(max_examples=30, deadline=None)
@given(SEQS)
def test_bos_holds_no_value_and_every_output_block_is_one_hot(seq):
    # a value at BOS would let a query select BOS (the bug this guards against: sort's smallest token read BOS)
    for compiled in COMPILED.values():
        stream, _ = compiled.forward(compiled.embed(seq))
        for name, block in compiled.layout.items():
            if name not in ("one", "bos") and not name.endswith(":scratch"):
                assert stream[0, block].abs().max() < 1e-9, name
        out = compiled.block(stream)
        assert torch.allclose(out, torch.nn.functional.one_hot(out.argmax(-1), out.shape[-1]).double(), atol=1e-9)
