"""minilib.attention.dot_product: sdpa, attention_weights, causal_mask, grouped_attention and attention_entropy
against torch's own attention in fp64 and closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.attention import attention_entropy, attention_weights, causal_mask, grouped_attention, sdpa
from tests.attention_reference import attention_shapes, randn, torch_reference

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


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


@settings(max_examples=25, deadline=None)
@given(shape=attention_shapes(), causal=st.booleans())
def test_grouped_attention_equals_torch_sdpa_with_gqa(shape, causal):
    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = randn(B, H, T, D), randn(B, Hkv, S, D, seed=1), randn(B, Hkv, S, Dv, seed=2)
    keep = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else None  # attention_shapes has S >= T
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    torch.testing.assert_close(grouped_attention(q, k, v, causal=causal), want, rtol=0, atol=1e-12)


def test_attention_entropy_against_closed_forms():
    uniform = torch.full((1, 2, 3, 8), 1 / 8, dtype=f64)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((1, 2, 3), math.log(8), dtype=f64))
    one_hot = F.one_hot(torch.tensor([[[2, 0, 5]]]), 6).to(f64)
    assert torch.equal(attention_entropy(one_hot), torch.zeros(1, 1, 3, dtype=f64))
    p = torch.softmax(randn(2, 3, 4, 5), -1)
    loop = torch.tensor([[[-sum(float(x) * math.log(float(x)) for x in row) for row in head] for head in batch] for batch in p],
                        dtype=f64)
    torch.testing.assert_close(attention_entropy(p), loop)


def test_causal_mask_names_bad_lengths():
    with pytest.raises(ValueError, match="T"):
        causal_mask(-1)
    with pytest.raises(ValueError, match="S"):
        causal_mask(2, 1.5)
