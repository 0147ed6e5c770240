"""sdpa, attention_weights, MultiHeadAttention and KVCache against torch's own attention in fp64."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.attention import (KVCache, MultiHeadAttention, attention_weights, causal_mask, clipped_softmax,
                               merge_heads, sdpa, sigmoid_attention, split_heads)

SETTINGS = settings(max_examples=40, deadline=None)


def torch_reference(q, k, v, *, causal=False, mask=None, bias=None, scale=None):
    """torch SDPA with the same bottom-right causal convention, built from an explicit boolean mask."""
    T, S = q.shape[2], k.shape[2]
    keep = torch.ones(T, S, dtype=torch.bool)
    if causal:
        keep = torch.tril(torch.ones(T, S, dtype=torch.bool), diagonal=S - T)
    if mask is not None:
        keep = keep & mask
    attn_mask = torch.where(keep, 0.0, float("-inf")).to(q.dtype)
    if bias is not None:
        attn_mask = attn_mask + bias
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


@st.composite
def attention_shapes(draw):
    B = draw(st.integers(1, 2))
    Hkv = draw(st.integers(1, 3))
    H = Hkv * draw(st.integers(1, 3))
    T = draw(st.integers(1, 9))
    S = draw(st.integers(T, 12))
    D = draw(st.integers(1, 8))
    Dv = draw(st.integers(1, 8))
    return B, H, Hkv, T, S, D, Dv


@SETTINGS
@given(shapes=attention_shapes(), causal=st.booleans(), seed=st.integers(0, 2**16), use_mask=st.booleans(),
       use_bias=st.booleans())
def test_sdpa_matches_torch(shapes, causal, seed, use_mask, use_bias):
    B, H, Hkv, T, S, D, Dv = shapes
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, S, Dv, generator=g, dtype=torch.float64)
    mask = torch.rand(T, S, generator=g) > 0.3 if use_mask else None
    if mask is not None:
        mask[:, -1] = True  # torch's SDPA returns NaN for rows with no kept key; keep one so both are defined
    bias = torch.randn(H, T, S, generator=g, dtype=torch.float64) if use_bias else None
    got = sdpa(q, k, v, causal=causal, mask=mask, bias=bias)
    torch.testing.assert_close(got, torch_reference(q, k, v, causal=causal, mask=mask, bias=bias), rtol=0, atol=1e-10)


def test_scale_argument_is_used():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(sdpa(q, k, v, scale=0.3), torch_reference(q, k, v, scale=0.3), rtol=0, atol=1e-12)


def test_causal_mask_is_bottom_right():
    m = causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_fully_masked_row_gives_zeros():
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 2)
    mask = torch.tensor([[False, False, False], [True, True, True], [True, False, True]])
    out = sdpa(q, k, v, mask=mask)
    assert torch.all(out[0, 0, 0] == 0)
    assert torch.isfinite(out).all()
    w = attention_weights(q, k, mask=mask)
    torch.testing.assert_close(w.sum(-1)[0, 0], torch.tensor([0.0, 1.0, 1.0]))


def test_causal_queries_beyond_keys_are_zero():
    # T > S with causal: the first T - S queries see no key at all.
    q, k, v = torch.randn(1, 1, 4, 3), torch.randn(1, 1, 2, 3), torch.randn(1, 1, 2, 3)
    out = sdpa(q, k, v, causal=True)
    assert torch.all(out[0, 0, :2] == 0) and torch.isfinite(out).all()


def test_huge_logits_stay_finite():
    q = torch.full((1, 1, 3, 2), 1e4, dtype=torch.float64)
    k = torch.tensor([[[[1e4, 0.0], [-1e4, 0.0], [0.0, 1e4]]]], dtype=torch.float64)
    v = torch.randn(1, 1, 3, 2, dtype=torch.float64)
    out = sdpa(q, k, v)
    torch.testing.assert_close(out, torch_reference(q, k, v), rtol=0, atol=1e-10)


def test_sdpa_gradients_match_torch():
    g = torch.Generator().manual_seed(1)
    shapes = [(2, 4, 5, 3), (2, 2, 7, 3), (2, 2, 7, 2)]
    ours = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    ref = [t.detach().clone().requires_grad_() for t in ours]
    upstream = torch.randn(2, 4, 5, 2, generator=g, dtype=torch.float64)
    (sdpa(*ours, causal=True) * upstream).sum().backward()
    (torch_reference(*ref, causal=True) * upstream).sum().backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10)


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


@pytest.mark.parametrize("bad, message", [
    (dict(q=torch.randn(2, 3, 4)), "q must have 4 dimensions"),
    (dict(k=torch.randn(1, 2, 5, 3)), "share head_dim"),
    (dict(k=torch.randn(1, 3, 5, 4), v=torch.randn(1, 3, 5, 4)), "multiple of key/value heads"),
    (dict(v=torch.randn(1, 2, 6, 4)), "share heads and length"),
    (dict(q=torch.ones(1, 4, 2, 4, dtype=torch.long)), "floating-point"),
])
def test_bad_shapes_raise_named_errors(bad, message):
    args = dict(q=torch.randn(1, 4, 2, 4), k=torch.randn(1, 2, 5, 4), v=torch.randn(1, 2, 5, 4))
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=message):
        sdpa(args["q"], args["k"], args["v"])


def test_bad_mask_raises():
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(ValueError, match="mask of shape"):
        sdpa(q, q, q, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        sdpa(q, q, q, mask=torch.ones(2, 2))


def mha_reference(m: MultiHeadAttention, x):
    """The module's forward spelled out: per-head projections, torch SDPA, output projection."""
    B, T, _ = x.shape
    Dh = m.head_dim
    q = (x @ m.wq.weight.T).view(B, T, m.n_heads, Dh).transpose(1, 2)
    k = (x @ m.wk.weight.T).view(B, T, m.n_kv_heads, Dh).transpose(1, 2)
    v = (x @ m.wv.weight.T).view(B, T, m.n_kv_heads, Dh).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=m.n_kv_heads != m.n_heads)
    return out.transpose(1, 2).reshape(B, T, -1) @ m.wo.weight.T


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_mha_matches_explicit_reference(n_kv_heads):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, n_kv_heads=n_kv_heads).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x), mha_reference(m, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("rope, qk_norm", [(False, False), (True, False), (True, True)])
def test_mha_with_cache_equals_full_forward(rope, qk_norm):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, n_kv_heads=2, rope=rope, qk_norm=qk_norm).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full = m(x)
    cache = KVCache()
    pieces = [m(x[:, :4], cache=cache), m(x[:, 4:5], cache=cache), m(x[:, 5:], cache=cache)]
    assert cache.length == 9 and cache.k.shape == (2, 2, 9, 4)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-10)


def test_mha_rejects_bad_configuration():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        MultiHeadAttention(12, 4, n_kv_heads=3)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        MultiHeadAttention(8, 2)(torch.randn(8))


def test_split_and_merge_heads_follow_the_column_layout():
    x = torch.randn(2, 3, 12)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 3)
    for h in range(4):
        torch.testing.assert_close(heads[:, h], x[:, :, 3 * h:3 * h + 3], rtol=0, atol=0)
    torch.testing.assert_close(merge_heads(heads), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible by n_heads=5"):
        split_heads(x, 5)


def test_cross_attention_rejects_mismatched_memory():
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="memory must share batch and d_model"):
        m(torch.randn(2, 3, 8), memory=torch.randn(1, 4, 8))
