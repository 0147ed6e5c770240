"""minilib.attention.calibration: ACT on attention rows against a loop over rows and keys written from the equation,
and calibrated_heads against the layer's output recomputed by hand."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import MultiHeadAttention, attention_calibration, calibrated_heads, causal_mask

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


def act_loop(A, alpha, beta):
    """ACT on one head's (T, S) weights, one row and one key at a time."""
    T, S = A.shape
    sinks = [s for s in range(1, S) if sum(A[t, s].item() for t in range(T)) / T > alpha / S]
    out = A.clone()
    for t in range(T):
        old = sum(A[t, s].item() for s in range(S))
        new = sum((beta if s in sinks else 1.0) * A[t, s].item() for s in range(S))
        for s in range(S):
            out[t, s] = (beta if s in sinks else 1.0) * A[t, s] * old / new if new > 0 else A[t, s]
    return out


def sink_weights(B, H, T, seed, strength):
    """Causal softmax rows with extra weight on a few keys, so that some keys are sinks and some are not."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, H, T, T, generator=g, dtype=f64)
    boosted = torch.randint(0, T, (3,), generator=g)
    scores[..., boosted] += strength
    return torch.softmax(scores.masked_fill(~causal_mask(T), float("-inf")), dim=-1)


@SETTINGS
@given(T=st.integers(2, 12), alpha=st.floats(0.5, 6.0), beta=st.floats(0.0, 1.0), strength=st.floats(0.0, 6.0),
       seed=st.integers(0, 10**6))
def test_act_matches_a_loop_over_rows_and_keys(T, alpha, beta, strength, seed):
    A = sink_weights(2, 3, T, seed, strength)
    got = attention_calibration(A, alpha=alpha, beta=beta)
    want = torch.stack([torch.stack([act_loop(A[b, h], alpha, beta) for h in range(3)]) for b in range(2)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.sum(-1), A.sum(-1), rtol=0, atol=1e-12)  # every row keeps its sum


def test_act_scales_a_strong_later_sink_and_never_the_first_key():
    A = torch.full((1, 1, 8, 8), 0.02, dtype=f64)
    A[..., 0] = 0.5   # the first-token sink: left alone
    A[..., 5] = 0.36  # a later sink: mean 0.36 > alpha / S = 0.25
    A = A / A.sum(-1, keepdim=True)
    out = attention_calibration(A, alpha=2.0, beta=0.5)
    c = 1.0 / (1.0 - 0.5 * A[..., 5])  # each row: old sum 1, new sum 1 - (1 - beta) * A_t5
    torch.testing.assert_close(out[..., 5], 0.5 * A[..., 5] * c, rtol=0, atol=1e-15)
    torch.testing.assert_close(out[..., 0], A[..., 0] * c, rtol=0, atol=1e-15)
    assert torch.equal(attention_calibration(A, alpha=2.0, beta=1.0), A)      # beta = 1: nothing changes
    assert torch.equal(attention_calibration(A, alpha=100.0, beta=0.5), A)    # no key above the threshold


def test_calibrated_heads_recomputes_the_chosen_heads_only():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, n_kv_heads=2, rope=True).double()
    x = torch.randn(2, 10, 16, dtype=f64)
    with torch.no_grad():
        q, k, v = m.project_qkv(x, torch.arange(10))
        w = m.weights(q, k)
        w_act = w.clone()
        for b in range(2):
            for h in (1, 3):
                w_act[b, h] = act_loop(w[b, h], 1.5, 0.3)
        want = m.combine(x, w_act @ v.repeat_interleave(2, dim=1))
        with calibrated_heads({m: [1, 3]}, alpha=1.5, beta=0.3):
            got = m(x)
        after = m(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(after, m.combine(x, w @ v.repeat_interleave(2, dim=1)), rtol=0, atol=1e-12)  # hooks gone


def test_calibration_rejects_bad_arguments():
    A = torch.full((4, 4), 0.25)
    with pytest.raises(ValueError, match="alpha"):
        attention_calibration(A, alpha=0.0)
    with pytest.raises(ValueError, match="beta"):
        attention_calibration(A, beta=1.5)
    with pytest.raises(ValueError, match=r"weights must have shape \(\.\.\., T, S\)"):
        attention_calibration(torch.ones(4))
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"heads must be ints in \[0, 2\)"):
        with calibrated_heads({m: [2]}):
            pass
    with pytest.raises(TypeError, match="MultiHeadAttention"):
        with calibrated_heads({torch.nn.Linear(2, 2): [0]}):
            pass
    with calibrated_heads({m: [0]}), pytest.raises(ValueError, match="cache"):
        m(torch.randn(1, 3, 8), cache=m.new_cache())
