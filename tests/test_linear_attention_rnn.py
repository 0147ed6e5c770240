"""Attention as an RNN: the prefix scan equals causal softmax attention; streaming holds a constant state."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.attention import sdpa
from minilib.linear_attention import aaren_combine, attention_rnn_step, attention_scan
from minilib.scan import SCAN_METHODS, ScanCounter


def inputs(B, H, L, D, Dv, seed):
    g = torch.Generator().manual_seed(seed)
    q = 3 * torch.randn(B, H, D, generator=g, dtype=torch.float64)  # large scores: the running max matters
    k = torch.randn(B, H, L, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, L, Dv, generator=g, dtype=torch.float64)
    return q, k, v


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 40), H=st.integers(1, 3), D=st.integers(1, 6), Dv=st.integers(1, 4),
       method=st.sampled_from(SCAN_METHODS), seed=st.integers(0, 10_000))
def test_scan_equals_causal_sdpa_with_the_query_repeated(L, H, D, Dv, method, seed):
    q, k, v = inputs(2, H, L, D, Dv, seed)
    want = sdpa(q[:, :, None].expand(2, H, L, D), k, v, causal=True)
    torch.testing.assert_close(attention_scan(q, k, v, method=method), want, rtol=0, atol=1e-12)


def test_fp32_scan_matches_sdpa_to_1e6():
    q, k, v = (x.float() for x in inputs(1, 2, 300, 8, 8, seed=1))
    want = sdpa(q[:, :, None].expand(1, 2, 300, 8), k, v, causal=True)
    torch.testing.assert_close(attention_scan(q, k, v), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("L", [1, 2, 7, 64, 100])
def test_blelloch_depth_is_logarithmic(L):
    counter = ScanCounter()
    attention_scan(*inputs(1, 1, L, 2, 2, seed=0), counter=counter)
    assert counter.depth <= 2 * math.ceil(math.log2(L)) if L > 1 else counter.depth == 0
    assert counter.work <= 2 * L


def test_combine_is_associative_and_merges_two_softmaxes():
    q, k, v = inputs(1, 1, 6, 3, 2, seed=3)
    s = (k @ q[..., None]).squeeze(-1)
    parts = [(s[..., i:j].max(-1).values, (s[..., i:j] - s[..., i:j].max(-1, keepdim=True).values).exp().sum(-1),
              ((s[..., i:j] - s[..., i:j].max(-1, keepdim=True).values).exp()[..., None] * v[:, :, i:j]).sum(2))
             for i, j in ((0, 2), (2, 3), (3, 6))]
    left = aaren_combine(aaren_combine(parts[0], parts[1]), parts[2])
    right = aaren_combine(parts[0], aaren_combine(parts[1], parts[2]))
    for x, y in zip(left, right):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    torch.testing.assert_close(left[2] / left[1][..., None], torch.softmax(s, -1) @ v[0, 0], rtol=0, atol=1e-12)


def test_streaming_in_pieces_equals_the_last_scan_output_with_a_constant_state():
    q, k, v = inputs(2, 3, 50, 4, 5, seed=4)
    scan = attention_scan(q, k, v, scale=0.3)
    state, sizes = None, []
    for start, stop in ((0, 1), (1, 17), (17, 50)):
        out, state = attention_rnn_step(q, k[:, :, start:stop], v[:, :, start:stop], state, scale=0.3)
        torch.testing.assert_close(out, scan[:, :, stop - 1], rtol=0, atol=1e-12)
        sizes.append(sum(x.numel() for x in state))
    assert sizes == [2 * 3 * (2 + 5)] * 3


def test_bad_inputs_raise():
    q, k, v = inputs(1, 2, 5, 3, 2, seed=0)
    with pytest.raises(ValueError, match="q"):
        attention_scan(q[:, :1], k, v)
    with pytest.raises(ValueError, match="q"):
        attention_scan(q[..., None], k, v)
    with pytest.raises(ValueError, match="k"):
        attention_rnn_step(q, k[:, :, :0], v[:, :, :0])
