"""Chapter 02, scoring functions: the properties the chapter relies on, each against a closed form.

Loops over keys for every score are in tests/test_attention_variants.py; here: off-by-one softmax, clipped
softmax and gates let a head attend (almost or exactly) nowhere, and sigmoid attention's default bias
-log S turns the n/2 output growth at zero scores into a bounded average."""
import math

import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import MultiHeadAttention, score_weights, sigmoid_attention, softmax_one

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


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


def test_a_closed_gate_silences_the_head_and_an_open_one_scales_it():
    torch.manual_seed(0)
    gated = MultiHeadAttention(16, 2, gate=True).double()
    plain = MultiHeadAttention(16, 2).double()
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("wg.")})
    x = randn(2, 5, 16)
    with torch.no_grad():
        gated.wg.weight.zero_()
        gated.wg.bias.copy_(torch.tensor([-60.0, 0.0]))  # head 1 closed, head 2 half open
        heads_only_second = plain.wo.weight.clone()
        heads_only_second[:, :8] = 0
        plain.wo.weight.copy_(0.5 * heads_only_second)
    torch.testing.assert_close(gated(x), plain(x), rtol=1e-12, atol=1e-12)


@given(S=st.sampled_from([1, 7, 64, 300]))
@SETTINGS
def test_sigmoid_attention_at_zero_scores_has_the_closed_form_weights(S):
    q = torch.zeros(2, 3, 4, 5, dtype=f64)
    k, v = randn(2, 3, S, 5), randn(2, 3, S, 6, seed=1)
    total = v.sum(-2, keepdim=True).expand(2, 3, 4, 6)
    torch.testing.assert_close(sigmoid_attention(q, k, v), total / (1 + S))
    torch.testing.assert_close(sigmoid_attention(q, k, v, bias=0.0), total / 2)
