"""Pooling, depthwise convolution, PoNet pooling and FFNified attention against loops written from the equations."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.mixers import (DepthwiseConvMixer, FFNifiedAttention, PoNetMixer, PoolMixer, depthwise_conv,
                            ffnified_attention, local_max_pool, ponet_mix, pool_mix, segment_max_pool)

f64 = torch.float64


def window(t, L, size, causal):
    """Positions of the window at t: the size positions ending at t, or centred (left size // 2), cut to [0, L)."""
    lo = t - size + 1 if causal else t - size // 2
    return [s for s in range(lo, lo + size) if 0 <= s < L]


def pool_loop(x, size, causal):
    out = torch.empty_like(x)
    for t in range(x.shape[1]):
        out[:, t] = x[:, window(t, x.shape[1], size, causal)].mean(1) - x[:, t]
    return out


def conv_loop(x, w, causal):
    B, L, C = x.shape
    K = w.shape[1]
    lo = K - 1 if causal else K // 2
    out = torch.zeros_like(x)
    for t in range(L):
        for j in range(K):
            s = t - lo + j
            if 0 <= s < L:
                out[:, t] += w[:, j] * x[:, s]
    return out


@settings(deadline=None, max_examples=30)
@given(L=st.integers(1, 13), size=st.integers(1, 6), causal=st.booleans())
def test_pool_and_conv_equal_their_loops(L, size, causal):
    x = torch.randn(2, L, 3, dtype=f64)
    torch.testing.assert_close(pool_mix(x, size, causal=causal), pool_loop(x, size, causal))
    w = torch.randn(3, size, dtype=f64)
    torch.testing.assert_close(depthwise_conv(x, w, causal=causal), conv_loop(x, w, causal))


def test_grid_pooling_averages_the_square_around_each_pixel():
    H, W = 3, 5
    x = torch.randn(2, H * W, 4, dtype=f64)
    want = torch.empty_like(x)
    for i in range(H):
        for j in range(W):
            nbrs = [a * W + b for a in range(i - 1, i + 2) for b in range(j - 1, j + 2) if 0 <= a < H and 0 <= b < W]
            want[:, i * W + j] = x[:, nbrs].mean(1) - x[:, i * W + j]
    torch.testing.assert_close(pool_mix(x, 3, grid=(H, W)), want)


def test_a_constant_sequence_pools_to_zero():
    # the defining property of avgpool(x) - x: nothing to mix, nothing added to the residual
    x = torch.ones(1, 9, 2, dtype=f64) * 3.0
    for causal in (False, True):
        assert pool_mix(x, 4, causal=causal).abs().max() == 0


@settings(deadline=None, max_examples=25)
@given(L=st.integers(1, 14), segment=st.integers(1, 6), window_=st.integers(1, 5), causal=st.booleans())
def test_ponet_pools_equal_their_loops(L, segment, window_, causal):
    q, g, s, l = torch.randn(4, 2, L, 3, dtype=f64)
    seg, loc, gbar = torch.empty_like(s), torch.empty_like(l), torch.empty_like(g)
    for t in range(L):
        start = t // segment * segment
        end = t + 1 if causal else min(L, start + segment)
        seg[:, t] = s[:, start:end].amax(1)
        loc[:, t] = l[:, window(t, L, window_, causal)].amax(1)
        gbar[:, t] = g[:, : t + 1].mean(1) if causal else g.mean(1)
    torch.testing.assert_close(segment_max_pool(s, segment, causal=causal), seg)
    torch.testing.assert_close(local_max_pool(l, window_, causal=causal), loc)
    torch.testing.assert_close(ponet_mix(q, g, s, l, segment=segment, window=window_, causal=causal),
                               q * gbar + seg + loc)


def test_ffnified_attention_is_conv_gelu_conv():
    x = torch.randn(2, 9, 3, dtype=f64)
    wk, wv = torch.randn(2, 3, 5, dtype=f64)
    for causal in (False, True):
        want = conv_loop(F.gelu(conv_loop(x, wk, causal)), wv, causal)
        torch.testing.assert_close(ffnified_attention(x, wk, wv, causal=causal), want)


@pytest.mark.parametrize("make", [lambda: PoolMixer(3), lambda: DepthwiseConvMixer(4, 3), lambda: PoNetMixer(4, segment=3),
                                  lambda: FFNifiedAttention(4, 5)])
def test_causal_modules_never_look_ahead(make):
    torch.manual_seed(0)
    mixer = make().double()
    x = torch.randn(2, 10, 4, dtype=f64)
    x2 = x.clone()
    x2[:, 6] += 1.0
    a, b = mixer(x), mixer(x2)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-6


@pytest.mark.parametrize("L", [1, 2, 7])
def test_window_caches_decode_one_token_at_a_time(L):
    torch.manual_seed(0)
    x = torch.randn(2, L, 4, dtype=f64)
    for mixer in (PoolMixer(4), DepthwiseConvMixer(4, 3), FFNifiedAttention(4, 3)):
        mixer = mixer.double()
        cache = mixer.new_cache()
        steps = torch.cat([mixer(x[:, t:t + 1], cache=cache) for t in range(L)], dim=1)
        torch.testing.assert_close(steps, mixer(x), rtol=1e-12, atol=1e-12)
        assert cache.length == L


def test_gradients_flow_through_the_pools_and_convolutions():
    x = torch.randn(1, 7, 2, dtype=f64, requires_grad=True)
    w = torch.randn(2, 3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: depthwise_conv(x, w, causal=True), (x, w))
    assert torch.autograd.gradcheck(lambda x: pool_mix(x, 3), (x,))


def test_bad_input_fails_clearly():
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        pool_mix(x[0])
    with pytest.raises(ValueError, match="pool_size"):
        pool_mix(x, 0)
    with pytest.raises(ValueError, match="grid"):
        pool_mix(x, 3, grid=(2, 2))
    with pytest.raises(ValueError, match="weight must be"):
        depthwise_conv(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="segment"):
        segment_max_pool(x, 0)
    with pytest.raises(ValueError, match="q, g, s, l must share"):
        ponet_mix(x, x, x, x[:, :4], segment=2)
    with pytest.raises(ValueError, match="pass cache=None"):
        PoolMixer(3, causal=False)(x, cache=object())
    with pytest.raises(ValueError, match="pass cache=None"):
        PoNetMixer(3)(x, cache=object())
