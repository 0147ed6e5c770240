"""minilib.sparse.selection: SEA, Landmark, TidalDecode and MoA masks against masks built by Python loops, attention
against torch SDPA with those masks (fp64), MoA's allocation against brute force, RuleAttention inside TransformerLM."""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.models import TransformerConfig, TransformerLM
from minilib.sparse import (RuleAttention, head_window_mask, landmark_attention, landmark_mask, moa_allocate,
                            rule_factory, sea_attention, sea_mask, tidal_decode, tidal_positions)
from tests.flash_reference import qkv, reference
from tests.models_support import assert_causal_lm, assert_learns_repeated_triples, seeded

FAST = settings(max_examples=25, deadline=None)


def ranked_keep(score, T, S, k_top, visible):
    """keep[t, s] for the k_top visible s of largest score(t, s), ranked by Python's sort."""
    keep = torch.zeros(T, S, dtype=torch.bool)
    for t in range(T):
        ranked = sorted((s for s in range(S) if visible(t, s)), key=lambda s: -score(t, s))
        keep[t, ranked[:k_top]] = True
    return keep


@FAST
@given(T=st.integers(1, 9), extra=st.integers(0, 4), k_top=st.integers(1, 10), seed=st.integers(0, 5))
def test_sea_keeps_the_top_of_the_elu_kernel_estimate(T, extra, k_top, seed):
    S = T + extra
    q, k, v = (x.detach() for x in qkv(1, 2, 1, T, S, 4, 3, seed=seed))
    phi = lambda x: torch.where(x > 0, x + 1, torch.exp(x))  # noqa: E731  elu(x) + 1
    keep = torch.stack([ranked_keep(lambda t, s: float(phi(q[0, h, t]) @ phi(k[0, 0, s])), T, S, k_top,
                                    lambda t, s: s <= S - T + t) for h in range(2)])[None]
    assert torch.equal(sea_mask(q, k, k_top=k_top), keep)
    torch.testing.assert_close(sea_attention(q, k, v, k_top=k_top), reference(q, k, v, mask=keep, causal=True),
                               rtol=0, atol=1e-12)


@FAST
@given(T=st.integers(1, 20), extra=st.integers(0, 6), b=st.integers(1, 6), k_blocks=st.integers(1, 4),
       seed=st.integers(0, 5))
def test_landmark_reads_its_block_and_the_top_earlier_blocks(T, extra, b, k_blocks, seed):
    S = T + extra
    q, k, v = (x.detach() for x in qkv(1, 1, 1, T, S, 4, 3, seed=seed))
    blocks = [list(range(j, min(j + b, S))) for j in range(0, S, b)]
    landmark = [k[0, 0, idx].mean(0) for idx in blocks]
    keep = torch.zeros(T, S, dtype=torch.bool)
    for t in range(T):
        p = S - T + t
        earlier = sorted(range(p // b), key=lambda j: -float(q[0, 0, t] @ landmark[j]))[:k_blocks]
        for j in earlier:
            keep[t, blocks[j]] = True
        keep[t, (p // b) * b: p + 1] = True
    assert torch.equal(landmark_mask(q, k, block_size=b, k_blocks=k_blocks)[0, 0], keep)
    torch.testing.assert_close(landmark_attention(q, k, v, block_size=b, k_blocks=k_blocks),
                               reference(q, k, v, mask=keep), rtol=0, atol=1e-12)


def test_landmark_reads_a_bounded_number_of_keys_and_every_block_is_full_attention():
    q, k, v = (x.detach() for x in qkv(1, 2, 2, 64, 64, 8, 8, seed=1))
    mask = landmark_mask(q, k, block_size=8, k_blocks=2)
    assert mask.sum(-1).max() <= 8 + 2 * 8
    torch.testing.assert_close(landmark_attention(q, k, v, block_size=8, k_blocks=8), reference(q, k, v, causal=True),
                               rtol=0, atol=1e-12)


@FAST
@given(T=st.integers(1, 10), k_top=st.integers(1, 12), seed=st.integers(0, 5))
def test_tidal_selection_is_the_top_of_the_head_summed_weights_and_reuse_attends_there(T, k_top, seed):
    q, k, v = (x.detach() for x in qkv(1, 4, 2, T, T, 4, 3, seed=seed))
    weights = torch.softmax((q @ k.repeat_interleave(2, 1).transpose(-1, -2) / 2).masked_fill(
        ~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), -1).sum(1)[0]
    keep = ranked_keep(lambda t, s: float(weights[t, s]), T, T, k_top, lambda t, s: s <= t)
    full, positions = tidal_decode(q, k, v, k_top=k_top)
    assert torch.equal(positions[0, 0], keep) and torch.equal(tidal_positions(q, k, k_top=k_top), positions)
    torch.testing.assert_close(full, reference(q, k, v, causal=True), rtol=0, atol=1e-12)
    q2, k2, v2 = (x.detach() for x in qkv(1, 4, 2, T, T, 4, 3, seed=seed + 10))
    out, same = tidal_decode(q2, k2, v2, k_top=k_top, positions=positions)
    assert same is positions
    torch.testing.assert_close(out, reference(q2, k2, v2, mask=keep), rtol=0, atol=1e-12)


def test_head_windows_are_each_heads_sliding_window():
    mask = head_window_mask(6, [1, 3, 6])
    t, s = torch.arange(6)[:, None], torch.arange(6)[None, :]
    for h, w in enumerate([1, 3, 6]):
        assert torch.equal(mask[h], (s <= t) & (s > t - w))


@pytest.mark.parametrize("seed", range(5))
def test_moa_allocation_is_the_brute_force_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    spans = [2, 4, 8, 16]
    loss = torch.rand(5, 4, generator=g, dtype=torch.float64).sort(dim=1, descending=True).values
    best = min((c for c in itertools.product(spans, repeat=5) if sum(c) <= 6 * 5),
               key=lambda c: sum(float(loss[h, spans.index(s)]) for h, s in enumerate(c)))
    chosen = moa_allocate(loss, spans, mean_span=6)
    assert sum(chosen) <= 30
    assert math.isclose(sum(float(loss[h, spans.index(s)]) for h, s in enumerate(chosen)),
                        sum(float(loss[h, spans.index(s)]) for h, s in enumerate(best)), abs_tol=1e-12)


def test_rule_attention_applies_its_rule_and_trains_in_transformer_lm():
    g = seeded(3)
    layer = RuleAttention(16, 4, n_kv_heads=2, rule=lambda q, k: head_window_mask(q.shape[2], [1, 2, 3, 9])).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    q, k, v = layer.project_qkv(x, torch.arange(9))
    heads = reference(q, k, v, mask=head_window_mask(9, [1, 2, 3, 9]), causal=True)
    torch.testing.assert_close(layer(x), layer.wo(heads.transpose(1, 2).reshape(2, 9, 16)), rtol=0, atol=1e-12)
    assert layer.new_cache() is None

    model = TransformerLM(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=4, max_len=64,
                                            mixer=rule_factory(lambda layer: (lambda q, k: sea_mask(q, k, k_top=4)) if layer else None)))
    assert_causal_lm(model, vocab_size=12, seq_len=10, changed=5)

    assert_learns_repeated_triples(model, g)


def test_bad_arguments_raise():
    q, k, v = (x.detach() for x in qkv(1, 1, 1, 6, 6, 4, 4))
    with pytest.raises(ValueError, match="k_top"):
        sea_mask(q, k, k_top=0)
    with pytest.raises(ValueError, match="k_blocks"):
        landmark_mask(q, k, block_size=2, k_blocks=0)
    with pytest.raises(ValueError, match="landmarks"):
        landmark_mask(q, k, block_size=2, k_blocks=1, landmarks=torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="positions"):
        tidal_decode(q, k, v, k_top=2, positions=torch.ones(1, 1, 6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="windows"):
        head_window_mask(4, [])
    with pytest.raises(ValueError, match="mean_span"):
        moa_allocate(torch.zeros(2, 2), [4, 8], mean_span=2)
    with pytest.raises(ValueError, match="loss_increase"):
        moa_allocate(torch.zeros(2, 3), [4, 8], mean_span=4)
    with pytest.raises(TypeError, match="rule"):
        RuleAttention(8, 2, rule=3)
    with pytest.raises(ValueError, match="cache"):
        RuleAttention(8, 2)(torch.zeros(1, 2, 8), cache=object())
