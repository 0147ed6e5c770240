"""minilib.attention.scoring: every scoring rule against a loop over keys, and the properties chapter 02 relies
on (off-by-one softmax, clipped softmax and gates let a head attend nowhere; sigmoid attention's -log n_t bias),
each against a closed form."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import (attend, clipped_softmax, score_weights, sigmoid_attention, sigmoid_length_bias,
                               softmax_one)
from tests.attention_reference import attention_shapes, qkv, randn, torch_reference

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


def test_sigmoid_attention_matches_naive_loop():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 5, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 1, 5, 2, generator=g, dtype=torch.float64)
    got = sigmoid_attention(q, k, v, causal=True)
    want = torch.zeros(1, 2, 3, 2, dtype=torch.float64)
    for h in range(2):
        for t in range(3):
            for s in range(5):
                if s <= t + 2:
                    gate = 1 / (1 + math.exp(-(q[0, h, t] @ k[0, 0, s] / 2.0 - math.log(t + 3))))  # row t sees t + 3 keys
                    want[0, h, t] += gate * v[0, 0, s]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_clipped_softmax_reaches_exact_zero_and_one():
    x = torch.tensor([[10.0, 0.0, -10.0]])
    y = clipped_softmax(x, zeta=1.1, gamma=-0.1)
    assert y[0, 0] == 1.0 and y[0, 2] == 0.0
    torch.testing.assert_close(clipped_softmax(x), torch.softmax(x, -1))


@SETTINGS
@given(S=st.integers(1, 50), shift=st.floats(-30.0, 10.0), seed=st.integers(0, 10**6))
def test_off_by_one_softmax_mass_is_one_minus_the_null_share(S, shift, seed):
    s = randn(3, S, seed=seed) + shift
    mass = softmax_one(s).sum(-1)
    closed = torch.tensor([1 - 1 / (1 + sum(math.exp(v) for v in row)) for row in s.tolist()], dtype=f64)
    torch.testing.assert_close(mass, closed)
    assert torch.all(mass < 1)


def test_off_by_one_softmax_mass_vanishes_as_every_score_drops():
    s = randn(4, 16)
    masses = torch.stack([softmax_one(s - c).sum(-1) for c in (0.0, 5.0, 10.0, 20.0)])
    assert torch.all(masses[1:] < masses[:-1])
    assert masses[-1].max() < 16 * math.exp(-20 + s.max().item())


@SETTINGS
@given(S=st.integers(2, 64), gamma=st.floats(-0.2, -0.01), zeta=st.floats(1.0, 1.2), seed=st.integers(0, 10**6))
def test_clipped_rows_are_exactly_zero_when_no_probability_beats_the_threshold(S, gamma, zeta, seed):
    q, k = randn(1, 1, 4, 8, seed=seed), randn(1, 1, S, 8, seed=seed + 1)
    p = score_weights(q, k, score="softmax")
    w = score_weights(q, k, score="clipped", zeta=zeta, gamma=gamma)
    threshold = -gamma / (zeta - gamma)
    assert torch.equal(w == 0, p <= threshold)
    silent = (p <= threshold).all(-1)
    assert torch.equal(w.sum(-1)[silent], torch.zeros(int(silent.sum()), dtype=f64))
    torch.testing.assert_close(w[w > 0], ((zeta - gamma) * p[w > 0] + gamma).clamp(max=1.0))


def test_near_uniform_clipped_rows_attend_nowhere():
    q = torch.zeros(1, 1, 1, 4, dtype=f64)  # equal scores: softmax = 1/S everywhere
    k = randn(1, 1, 64, 4)
    w = score_weights(q, k, score="clipped", zeta=1.0, gamma=-0.03)
    assert torch.equal(w, torch.zeros_like(w))  # 1.03 / 64 - 0.03 < 0


@given(S=st.sampled_from([1, 7, 64, 300]))
@SETTINGS
def test_sigmoid_attention_at_zero_scores_has_the_closed_form_weights(S):
    q = torch.zeros(2, 3, 4, 5, dtype=f64)
    k, v = randn(2, 3, S, 5), randn(2, 3, S, 6, seed=1)
    total = v.sum(-2, keepdim=True).expand(2, 3, 4, 6)
    torch.testing.assert_close(sigmoid_attention(q, k, v), total / (1 + S))
    torch.testing.assert_close(sigmoid_attention(q, k, v, bias=0.0), total / 2)


def test_softmax_one_is_softmax_with_an_extra_zero_logit():
    x = randn(3, 4, 7) * 5
    padded = torch.cat([x, torch.zeros(3, 4, 1, dtype=f64)], dim=-1)
    torch.testing.assert_close(softmax_one(x), torch.softmax(padded, -1)[..., :-1])
    big = torch.tensor([[1e4, 1e4 - 1.0, -1e4]], dtype=f64)
    torch.testing.assert_close(softmax_one(big).sum(), torch.tensor(1.0, dtype=f64))
    masked = torch.full((2, 5), float("-inf"), dtype=f64)
    assert torch.equal(softmax_one(masked), torch.zeros(2, 5, dtype=f64))


@SETTINGS
@given(attention_shapes(), st.booleans())
def test_every_score_matches_a_loop_over_keys(shape, causal):
    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = qkv(B, H, Hkv, T, S, D, Dv)
    zeta, gamma = 1.05, -0.03
    expected = {name: torch.zeros(B, H, T, Dv, dtype=f64) for name in ("softmax", "softmax1", "sigmoid", "clipped")}
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            for t in range(T):
                keys = range(S - T + t + 1) if causal else range(S)
                s = torch.stack([q[b, h, t] @ k[b, g, j] / math.sqrt(D) for j in keys])
                vals = v[b, g, list(keys)]
                p = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
                expected["softmax"][b, h, t] = p @ vals
                expected["softmax1"][b, h, t] = (torch.exp(s) / (1 + torch.exp(s).sum())) @ vals
                expected["sigmoid"][b, h, t] = (1 / (1 + torch.exp(-(s - math.log(len(keys)))))) @ vals
                expected["clipped"][b, h, t] = torch.clamp((zeta - gamma) * p + gamma, 0, 1) @ vals
    for name, want in expected.items():
        got = attend(q, k, v, score=name, causal=causal, zeta=zeta, gamma=gamma)
        torch.testing.assert_close(got, want, msg=name)


def test_softmax_score_is_torch_sdpa_with_gqa():
    q, k, v = qkv(2, 8, 2, 5, 9, 4, 3, seed=3)
    bias = randn(8, 5, 9, seed=9)
    torch.testing.assert_close(attend(q, k, v, causal=True, bias=bias), torch_reference(q, k, v, causal=True, bias=bias))


def test_clipped_weights_reach_exact_zero_and_one():
    q, k, _ = qkv(1, 1, 1, 1, 4, 2, 1)
    q = q * 0 + torch.tensor([[[[40.0, 0.0]]]], dtype=f64)
    k = k * 0 + torch.tensor([[[[1.0, 0], [-1.0, 0], [-1.0, 0], [-1.0, 0]]]], dtype=f64)
    w = score_weights(q, k, score="clipped", zeta=1.1, gamma=-0.1)
    assert torch.equal(w, torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]], dtype=f64))


def test_masked_keys_get_zero_weight_in_every_score():
    q, k, _ = qkv(1, 2, 1, 4, 4, 3, 1)
    for score in ("softmax", "softmax1", "sigmoid", "clipped"):
        w = score_weights(q, k, score=score, causal=True, zeta=1.0, gamma=0.05)
        assert torch.equal(w.triu(1), torch.zeros_like(w)), score


@SETTINGS
@given(shape=attention_shapes(), causal=st.booleans())
def test_sigmoid_attention_and_the_sigmoid_score_are_one_definition(shape, causal):
    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = qkv(B, H, Hkv, T, S, D, Dv)
    torch.testing.assert_close(sigmoid_attention(q, k, v, causal=causal), attend(q, k, v, score="sigmoid", causal=causal),
                               rtol=0, atol=0)


@SETTINGS
@given(T=st.integers(0, 9), extra=st.integers(0, 5), causal=st.booleans())
def test_sigmoid_length_bias_is_minus_the_log_of_the_keys_each_row_sees(T, extra, causal):
    S = T + extra
    seen = torch.ones(T, S, dtype=f64).tril(S - T) if causal else torch.ones(T, S, dtype=f64)
    want = -seen.sum(-1, keepdim=True).clamp(min=1).log()
    torch.testing.assert_close(sigmoid_length_bias(T, S, causal=causal, dtype=f64), want, rtol=0, atol=1e-15)


def test_causal_sigmoid_attention_decodes_one_query_at_a_time_like_the_full_forward():
    q, k, v = randn(2, 4, 11, 6, seed=1), randn(2, 2, 11, 6, seed=2), randn(2, 2, 11, 5, seed=3)
    full = sigmoid_attention(q, k, v, causal=True)
    for t in range(11):
        step = sigmoid_attention(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], causal=True)
        torch.testing.assert_close(step[:, :, 0], full[:, :, t], rtol=0, atol=1e-14)
    # the paper's fixed scalar for a causal model of length n is an explicit bias
    fixed = sigmoid_attention(q, k, v, causal=True, bias=-math.log(11))
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    gate = torch.sigmoid(q @ kk.transpose(-2, -1) / math.sqrt(6) - math.log(11)) * torch.ones(11, 11, dtype=f64).tril()
    torch.testing.assert_close(fixed, gate @ vv, rtol=0, atol=1e-12)


def test_sigmoid_bias_rejects_bad_lengths():
    with pytest.raises(ValueError, match="S"):
        sigmoid_length_bias(2, -1)
    with pytest.raises(ValueError, match="T"):
        sigmoid_length_bias(True, 4)
