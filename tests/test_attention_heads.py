"""Chapter 02 head layouts and the KV cache: MQA, cross-layer ``kv=``, Mixture-of-Head attention and stochastic
KV routing, each against an independent reference (explicit loops, torch SDPA in fp64, closed forms).
GQA against torch's ``enable_gqa`` SDPA is in tests/test_attention.py and tests/test_attention_variants.py."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

from minilib.attention import (KVCache, MixtureOfHeadAttention, MultiHeadAttention, attend, grouped_attention,
                               kv_cache_bytes)
from minilib.models import TransformerLM
from minilib.positional import rope
from tests.test_attention import attention_shapes

f64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


# ---------------------------------------------------------------------------------------------------------
# MQA and the kv= keyword
# ---------------------------------------------------------------------------------------------------------

def test_mqa_equals_mha_with_its_one_key_value_head_repeated():
    torch.manual_seed(0)
    mqa = MultiHeadAttention(24, 4, n_kv_heads=1, rope=True).double()
    mha = MultiHeadAttention(24, 4, rope=True).double()
    with torch.no_grad():
        mha.wq.weight.copy_(mqa.wq.weight)
        mha.wo.weight.copy_(mqa.wo.weight)
        mha.wk.weight.copy_(mqa.wk.weight.repeat(4, 1))  # every head's key projection is the single one
        mha.wv.weight.copy_(mqa.wv.weight.repeat(4, 1))
    x = randn(2, 9, 24)
    torch.testing.assert_close(mqa(x), mha(x), rtol=0, atol=1e-12)


def test_kv_keyword_attends_to_the_given_keys_with_its_own_queries():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, n_kv_heads=2, rope=True).double()
    x, B, T, S = randn(2, 3, 16), 2, 3, 8
    k, v = randn(B, 2, S, 4, seed=1), randn(B, 2, S, 4, seed=2)
    # reference: queries rotated to the last T of S positions, torch SDPA with bottom-right causal mask
    q = rope((x @ m.wq.weight.T).view(B, T, 4, 4).transpose(1, 2), torch.arange(S - T, S))
    keep = torch.ones(T, S, dtype=torch.bool).tril(S - T)
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    want = heads.transpose(1, 2).reshape(B, T, 16) @ m.wo.weight.T
    torch.testing.assert_close(m(x, kv=(k, v)), want, rtol=0, atol=1e-12)


def test_kv_keyword_rejects_a_cache_and_wrong_shapes():
    m = MultiHeadAttention(16, 4, n_kv_heads=2)
    x, k = torch.randn(1, 3, 16), torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="keeps no cache"):
        m(x, kv=(k, k), cache=KVCache())
    with pytest.raises(ValueError, match=r"kv must hold .*got k \(1, 4, 5, 4\)"):
        m(x, kv=(torch.randn(1, 4, 5, 4),) * 2)
    with pytest.raises(TypeError, match="kv must be a pair"):
        m(x, kv=k)


# ---------------------------------------------------------------------------------------------------------
# Mixture-of-Head attention
# ---------------------------------------------------------------------------------------------------------

def moh_loop(m: MixtureOfHeadAttention, x):
    """MoH token by token: one softmax attention per head, routing by sorting, weighted sum of W_O slices."""
    B, T, d = x.shape
    H, Hkv, D, G = m.n_heads, m.n_kv_heads, m.head_dim, m.n_heads // m.n_kv_heads
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


# ---------------------------------------------------------------------------------------------------------
# Sparse Query Attention: score FLOPs
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_q_heads", [8, 4, 2, 1])
def test_attention_matmul_flops_scale_with_query_heads(n_q_heads):
    B, T, D = 2, 32, 8
    q, k, v = randn(B, n_q_heads, T, D), randn(B, 1, T, D, seed=1), randn(B, 1, T, D, seed=2)
    with FlopCounterMode(display=False) as counter:
        attend(q, k, v, causal=True)
    assert counter.get_total_flops() == 2 * 2 * B * n_q_heads * T * T * D  # QK^T and AV, 2 FLOPs per multiply-add


# ---------------------------------------------------------------------------------------------------------
# Stochastic KV routing
# ---------------------------------------------------------------------------------------------------------

def lm(**kw):
    torch.manual_seed(0)
    return TransformerLM(13, 16, 4, 4, n_kv_heads=2, max_len=32, **kw).double()


def test_kv_route_p_zero_is_the_plain_model_exactly():
    plain, routed = lm(), lm(kv_route_p=0.0)
    idx = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    a = plain.train()(idx)
    state = torch.random.get_rng_state()
    torch.manual_seed(5)
    b = routed.train()(idx)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())  # p = 0 draws nothing


def test_training_with_p_one_equals_inference_sharing_every_layer():
    model = lm(kv_route_p=1.0)
    idx = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(1))
    trained_view = model.train()(idx)
    model.eval().share_kv_layers = {1, 2, 3}
    torch.testing.assert_close(model(idx), trained_view, rtol=0, atol=0)
    model.share_kv_layers = set()
    assert (model(idx) - trained_view).abs().max() > 1e-6


def test_routing_draws_each_layer_with_probability_p():
    model = lm(kv_route_p=0.3).train()
    torch.manual_seed(0)
    n = 4000
    counts = torch.zeros(4)
    for _ in range(n):
        for i in model.kv_sharing():
            counts[i] += 1
    assert counts[0] == 0
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert ((counts[1:] - 0.3 * n).abs() < 5 * sigma).all()
    model.eval().share_kv_layers = {2}
    assert model.kv_sharing() == {2}


def manual_shared_forward(model, idx, shared):
    """The LM's forward written out: a shared layer uses its own queries on the last owner layer's k, v."""
    T = idx.shape[1]
    pos = torch.arange(T)
    x = model.embed(idx)
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        h = blk.norm1(x)
        q = rope(split(h @ a.wq.weight.T, a.n_heads), pos)
        if i not in shared:
            k, v = rope(split(h @ a.wk.weight.T, a.n_kv_heads), pos), split(h @ a.wv.weight.T, a.n_kv_heads)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + heads.transpose(1, 2).reshape(x.shape) @ a.wo.weight.T
        x = x + blk.ffn(blk.norm2(x))
    return model.final_norm(x) @ model.embed.weight.T


def split(x, n):
    B, T, C = x.shape
    return x.view(B, T, n, C // n).transpose(1, 2)


@pytest.mark.parametrize("shared", [{1, 3}, {1, 2}, {2}])
def test_shared_layers_at_inference_equal_a_manual_computation(shared):
    model = lm(kv_route_p=0.5).eval()
    model.share_kv_layers = shared
    idx = torch.randint(0, 13, (2, 11), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(idx), manual_shared_forward(model, idx, shared), rtol=0, atol=1e-12)


def cache_bytes(caches):
    return sum(t.numel() * t.element_size() for c in caches if c.length for t in (c.k, c.v))


@pytest.mark.parametrize("shared", [{1, 3}, {1, 2}])
def test_cached_decoding_with_shared_layers_equals_full_forward_at_half_the_cache(shared):
    model = lm().eval()
    model.share_kv_layers = shared
    idx = torch.randint(0, 13, (2, 12), generator=torch.Generator().manual_seed(3))
    caches = model.new_caches()
    stepwise = torch.cat([model(idx[:, :6], caches=caches)] + [model(idx[:, t:t + 1], caches=caches)
                                                               for t in range(6, 12)], 1)
    torch.testing.assert_close(stepwise, model(idx), rtol=0, atol=1e-12)
    assert [c.length for c in caches] == [0 if i in shared else 12 for i in range(4)]
    full = kv_cache_bytes(n_layers=4, n_kv_heads=2, head_dim=4, seq_len=12, batch=2, dtype=f64)
    assert cache_bytes(caches) == full // 2 == kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=4, seq_len=12,
                                                              batch=2, dtype=f64)
    greedy = model.generate(idx[:, :4], 6, temperature=0)
    assert torch.equal(greedy, model.generate(idx[:, :4], 6, temperature=0, use_cache=False))


def test_kv_routing_rejects_bad_arguments():
    for p in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="kv_route_p"):
            lm(kv_route_p=p)
    model = lm()
    for layers in ({0}, {4}, {1.0}):
        with pytest.raises(ValueError, match="share_kv_layers"):
            model.share_kv_layers = layers
    model.eval()
    caches = model.new_caches()
    model(torch.zeros(1, 3, dtype=torch.long), caches=caches)
    model.share_kv_layers = {1}
    with pytest.raises(ValueError, match="another share_kv_layers"):
        model(torch.zeros(1, 1, dtype=torch.long), caches=caches)


@settings(max_examples=25, deadline=None)
@given(shape=attention_shapes(), causal=st.booleans())
def test_grouped_attention_equals_torch_sdpa_with_gqa(shape, causal):
    B, H, Hkv, T, S, D, Dv = shape
    q, k, v = randn(B, H, T, D), randn(B, Hkv, S, D, seed=1), randn(B, Hkv, S, Dv, seed=2)
    keep = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else None  # attention_shapes has S >= T
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    torch.testing.assert_close(grouped_attention(q, k, v, causal=causal), want, rtol=0, atol=1e-12)


def test_lm_accepts_a_mixture_of_head_attention_class():
    torch.manual_seed(0)
    model = TransformerLM(13, 16, 2, 4, max_len=32, attention=MixtureOfHeadAttention,
                          attn_kwargs=dict(top_k=3, n_shared=1)).double()
    assert all(isinstance(b.attn, MixtureOfHeadAttention) and b.attn.top_k == 3 for b in model.blocks)
    prompt = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.generate(prompt, 8, temperature=0), model.generate(prompt, 8, temperature=0, use_cache=False))
