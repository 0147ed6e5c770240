"""minilib.sparse.merging: DMC's merged slots against a per-query loop, its attention against SDPA over explicit slot
lists (fp64), cached decoding equal to the full forward, training inside TransformerLM."""
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import MultiHeadAttention
from minilib.mixing import mixer_factory
from minilib.models import TransformerConfig, TransformerLM
from minilib.sparse import DMCAttention, DMCCache, dmc_attention, dmc_slots
from tests.flash_reference import qkv
from tests.models_support import assert_causal_lm, decode_in_pieces, assert_cached_decoding_matches_recomputing, assert_learns_repeated_triples, seeded

FAST = settings(max_examples=25, deadline=None)


def loop_dmc(q, k, v, w, rate):
    """Per query t: the weighted means of every finished earlier group and of its own group up to t; softmax."""
    B, H, T, D = q.shape
    group = H // k.shape[1]
    out = torch.zeros(B, H, T, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            kv = h // group
            for t in range(T):
                slots = [range(j * rate, j * rate + rate) for j in range(t // rate)] + [range(t // rate * rate, t + 1)]
                ks = torch.stack([sum(w[b, kv, s] * k[b, kv, s] for s in g) / sum(w[b, kv, s] for s in g) for g in slots])
                vs = torch.stack([sum(w[b, kv, s] * v[b, kv, s] for s in g) / sum(w[b, kv, s] for s in g) for g in slots])
                out[b, h, t] = torch.softmax(ks @ q[b, h, t] / math.sqrt(D), 0) @ vs
    return out


@FAST
@given(T=st.integers(1, 11), rate=st.integers(1, 5), seed=st.integers(0, 5))
def test_dmc_attention_equals_attention_over_the_merged_slots(T, rate, seed):
    q, k, v = (x.detach() for x in qkv(1, 2, 1, T, T, 4, 3, seed=seed))
    w = torch.rand(1, 1, T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    torch.testing.assert_close(dmc_attention(q, k, v, w, rate=rate), loop_dmc(q, k, v, w, rate), rtol=0, atol=1e-12)


def test_rate_one_is_causal_attention_and_slots_are_group_means():
    q, k, v = (x.detach() for x in qkv(2, 2, 2, 9, 9, 4, 4, seed=1))
    ones = torch.ones(2, 2, 9, dtype=torch.float64)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(dmc_attention(q, k, v, ones, rate=1), ref, rtol=0, atol=1e-12)
    k_bar, _ = dmc_slots(k, v, ones, rate=4)
    torch.testing.assert_close(k_bar[:, :, 7], k[:, :, 4:8].mean(2), rtol=0, atol=1e-12)
    torch.testing.assert_close(k_bar[:, :, 8], k[:, :, 8], rtol=0, atol=1e-12)


@pytest.mark.parametrize("rate", [1, 3, 4])
def test_cached_decoding_equals_the_full_forward_and_holds_a_quarter_of_the_slots(rate):
    seeded(rate)
    config = SimpleNamespace(d_model=16, n_heads=4, n_kv_heads=2, pos="rope", max_len=32, mixer_kwargs=dict(rate=rate))
    mixer = mixer_factory("dmc")(config, 0).double()
    torch.nn.init.normal_(mixer.importance.weight)  # importance that varies by position
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    cache = mixer.new_cache()
    torch.testing.assert_close(decode_in_pieces(lambda piece: mixer(piece, cache=cache), x, [1, 5, 6, 10]), mixer(x),
                               rtol=0, atol=1e-12)
    assert cache.size == math.ceil(13 / rate) and cache.length == 13


def test_retrofits_attention_weights_and_trains_in_transformer_lm():
    g = seeded(4)
    attention = MultiHeadAttention(16, 4, rope=True)
    dmc = DMCAttention(16, 4, rope=True, rate=1)
    missing = dmc.load_state_dict(attention.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["importance.bias", "importance.weight"]
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(dmc(x), attention(x), rtol=1e-5, atol=1e-6)  # rate 1 merges nothing

    model = TransformerLM(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=4, max_len=64, mixer="dmc",
                                            mixer_kwargs=dict(rate=2)))
    assert_causal_lm(model, vocab_size=12, seq_len=10, changed=5)

    assert_learns_repeated_triples(model, g)
    assert_cached_decoding_matches_recomputing(model, 12)


def test_bad_arguments_raise():
    q, k, v = (x.detach() for x in qkv(1, 1, 1, 6, 6, 4, 4))
    with pytest.raises(ValueError, match="rate"):
        dmc_attention(q, k, v, torch.ones(1, 1, 6, dtype=torch.float64), rate=0)
    with pytest.raises(ValueError, match="importance"):
        dmc_slots(k, v, torch.ones(1, 1, 5, dtype=torch.float64), rate=2)
    with pytest.raises(ValueError, match="rate"):
        DMCCache(0)
    with pytest.raises(TypeError, match="cache"):
        DMCAttention(8, 2)(torch.zeros(1, 2, 8), cache=object())
