"""minilib.attention.mixture_of_heads: Mixture-of-Head attention against a per-token loop and closed forms."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import KVCache, MixtureOfHeadAttention, MultiHeadAttention
from minilib.models import TransformerLM
from tests.attention_reference import randn

f64 = torch.float64


def moh_loop(m: MixtureOfHeadAttention, x):
    """MoH token by token: one softmax attention per head, routing by sorting, weighted sum of W_O slices."""
    B, T, d = x.shape
    H, D, G = m.n_heads, m.head_dim, m.n_heads // m.n_kv_heads
    out = torch.zeros(B, T, d, dtype=x.dtype)
    for b in range(B):
        q, k, v = x[b] @ m.wq.weight.T, x[b] @ m.wk.weight.T, x[b] @ m.wv.weight.T
        for t in range(T):
            xt = x[b, t]
            logits = (m.router.weight @ xt).tolist()
            chosen = sorted(range(len(logits)), key=lambda i: -logits[i])[: m.top_k]
            probs = torch.softmax(torch.tensor(logits, dtype=x.dtype), 0)
            if m.renormalize:  # the released code's scaling: chosen weights sum to top_k
                probs = m.top_k * probs / sum(probs[i] for i in chosen)
            weights = [0.0] * H
            if m.n_shared:
                a1, a2 = torch.softmax(m.group_router.weight @ xt, 0) * (2 if m.renormalize else 1)
                shared = torch.softmax(m.shared_router.weight @ xt, 0) if m.n_shared > 1 else [1.0]
                for h in range(m.n_shared):
                    weights[h] = a1 * shared[h] * (m.n_shared if m.renormalize else 1)
            else:
                a2 = 1.0
            for i in chosen:
                weights[m.n_shared + i] = a2 * probs[i]
            for h in range(H):
                j = h // G  # key/value head
                qh, kh, vh = q[t, h * D:(h + 1) * D], k[: t + 1, j * D:(j + 1) * D], v[: t + 1, j * D:(j + 1) * D]
                head = torch.softmax(kh @ qh / math.sqrt(D), 0) @ vh
                out[b, t] += weights[h] * (m.wo.weight[:, h * D:(h + 1) * D] @ head)
    return out


@pytest.mark.parametrize("n_heads, top_k, n_shared, n_kv_heads, renormalize",
                         [(4, 2, 0, None, False), (6, 3, 2, None, False), (4, 1, 1, 2, False), (8, 6, 0, 2, False),
                          (4, 2, 0, None, True), (6, 3, 2, 3, True)])
def test_moh_matches_a_per_token_loop(n_heads, top_k, n_shared, n_kv_heads, renormalize):
    torch.manual_seed(0)
    m = MixtureOfHeadAttention(2 * n_heads * 2, n_heads, top_k=top_k, n_shared=n_shared, n_kv_heads=n_kv_heads,
                               renormalize=renormalize).double()
    with torch.no_grad():  # larger router weights, so that the routing differs from token to token
        m.router.weight.mul_(20)
    x = randn(2, 5, 4 * n_heads)
    torch.testing.assert_close(m(x), moh_loop(m, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_shared", [0, 2])
def test_moh_with_all_heads_and_a_zero_router_is_mha_with_uniform_weights(n_shared):
    """Zero router: shared heads weigh 1/(2 H_s) each, routed heads 1/(2 (H - H_s)) (1/H with no shared heads)."""
    H = 4
    torch.manual_seed(0)
    moh = MixtureOfHeadAttention(16, H, top_k=H - n_shared, n_shared=n_shared, rope=True).double()
    for r in (moh.router, moh.shared_router, moh.group_router):
        if r is not None:
            torch.nn.init.zeros_(r.weight)
    mha = MultiHeadAttention(16, H, rope=True).double()
    mha.load_state_dict({k: v for k, v in moh.state_dict().items() if "router" not in k})
    w = [1 / (2 * n_shared)] * n_shared + [1 / (2 * (H - n_shared))] * (H - n_shared) if n_shared else [1 / H] * H
    with torch.no_grad():
        mha.wo.weight.mul_(torch.tensor(w, dtype=f64).repeat_interleave(4))
    x = randn(2, 7, 16)
    torch.testing.assert_close(moh(x), mha(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_shared", [0, 1, 3])
def test_renormalized_moh_with_all_heads_and_a_zero_router_is_mha(n_shared):
    """The released code's scaling gives every head weight 1 under a uniform router: exactly MHA."""
    torch.manual_seed(0)
    moh = MixtureOfHeadAttention(16, 4, top_k=4 - n_shared, n_shared=n_shared, renormalize=True).double()
    for r in (moh.router, moh.shared_router, moh.group_router):
        if r is not None:
            torch.nn.init.zeros_(r.weight)
    mha = MultiHeadAttention(16, 4).double()
    mha.load_state_dict({k: v for k, v in moh.state_dict().items() if "router" not in k})
    x = randn(2, 7, 16)
    torch.testing.assert_close(moh(x), mha(x), rtol=0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n_heads=st.sampled_from([2, 4, 8]), data=st.data())
def test_moh_routes_each_token_to_shared_plus_top_k_heads(n_heads, data):
    n_shared = data.draw(st.integers(0, n_heads - 1))
    top_k = data.draw(st.integers(1, n_heads - n_shared))
    torch.manual_seed(0)
    m = MixtureOfHeadAttention(16, n_heads, top_k=top_k, n_shared=n_shared).double()
    x = randn(2, 6, 16, seed=data.draw(st.integers(0, 100)))
    gates, active = m.route(x)
    assert gates.shape == active.shape == (2, 6, n_heads)
    assert torch.equal(active.sum(-1), torch.full((2, 6), n_shared + top_k))
    assert torch.equal(gates == 0, ~active)
    # every chosen routed head outweighs every unchosen one (top-k of the router's softmax)
    routed = torch.softmax(x @ m.router.weight.T, -1)
    on = active[..., n_shared:]
    lowest_on = routed.masked_fill(~on, float("inf")).amin(-1)
    highest_off = routed.masked_fill(on, float("-inf")).amax(-1)
    assert (lowest_on >= highest_off).all()
    assert torch.all(gates.sum(-1) <= 1 + 1e-12)


def test_moh_cached_decoding_equals_full_forward_and_router_learns():
    torch.manual_seed(0)
    m = MixtureOfHeadAttention(16, 4, top_k=1, n_shared=2, n_kv_heads=2, rope=True).double()
    x = randn(1, 8, 16)
    cache = KVCache()
    stepwise = torch.cat([m(x[:, :5], cache=cache)] + [m(x[:, t:t + 1], cache=cache) for t in range(5, 8)], 1)
    torch.testing.assert_close(stepwise, m(x), rtol=0, atol=1e-12)
    m(x).square().sum().backward()
    assert all(r.weight.grad.abs().sum() > 0 for r in (m.router, m.shared_router, m.group_router))


def test_moh_rejects_bad_head_counts():
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfHeadAttention(16, 4, top_k=5)
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfHeadAttention(16, 4, top_k=3, n_shared=2)
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfHeadAttention(16, 4, top_k=0)
    with pytest.raises(ValueError, match="n_shared"):
        MixtureOfHeadAttention(16, 4, top_k=1, n_shared=4)


def test_lm_builds_mixture_of_head_attention_by_name():
    torch.manual_seed(0)
    model = TransformerLM(13, 16, 2, 4, max_len=32, mixer="moh", mixer_kwargs=dict(top_k=3, n_shared=1)).double()
    assert all(isinstance(b.mixer, MixtureOfHeadAttention) and b.mixer.top_k == 3 for b in model.blocks)
    prompt = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.generate(prompt, 8, temperature=0), model.generate(prompt, 8, temperature=0, use_cache=False))


@pytest.mark.parametrize("kwargs, name", [(dict(top_k=True), "top_k"), (dict(top_k=0), "top_k"),
                                          (dict(top_k=1, n_shared=-1), "n_shared"), (dict(top_k=1, n_shared=1.0), "n_shared")])
def test_moh_names_bad_router_sizes(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MixtureOfHeadAttention(16, 4, **kwargs)
