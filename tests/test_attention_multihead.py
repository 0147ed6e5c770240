"""minilib.attention.multihead: MultiHeadAttention against its forward spelled out with torch SDPA in fp64,
cached decoding against the full forward, MQA, cross-layer kv=, query-head reduction, gates, cross-attention
and the errors for arguments that do not go together."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from minilib.attention import KVCache, MultiHeadAttention, attend
from minilib.models import TransformerLM, set_rope_scaling
from minilib.positional import rope
from tests.attention_reference import randn
from tests.models_support import decode_in_pieces


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
    decoded = decode_in_pieces(lambda piece: m(piece, cache=cache), x, [4, 5])
    assert cache.length == 9 and cache.k.shape == (2, 2, 9, 4)
    torch.testing.assert_close(decoded, full, rtol=0, atol=1e-10)


def test_mha_rejects_bad_configuration():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        MultiHeadAttention(12, 4, n_kv_heads=3)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        MultiHeadAttention(8, 2)(torch.randn(8))


def test_cross_attention_rejects_mismatched_memory():
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="memory must share batch and d_model"):
        m(torch.randn(2, 3, 8), memory=torch.randn(1, 4, 8))


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


@pytest.mark.parametrize("n_q_heads", [8, 4, 2, 1])
def test_attention_matmul_flops_scale_with_query_heads(n_q_heads):
    B, T, D = 2, 32, 8
    q, k, v = randn(B, n_q_heads, T, D), randn(B, 1, T, D, seed=1), randn(B, 1, T, D, seed=2)
    with FlopCounterMode(display=False) as counter:
        attend(q, k, v, causal=True)
    assert counter.get_total_flops() == 2 * 2 * B * n_q_heads * T * T * D  # QK^T and AV, 2 FLOPs per multiply-add


def manual_mha(mha, x, *, causal=True):
    """The module's weights used by torch's own SDPA with enable_gqa, plus the optional sigmoid gate."""
    B, T, _ = x.shape
    Hq, Hkv, D = mha.n_heads, mha.n_kv_heads, mha.head_dim
    q = (x @ mha.wq.weight.T).view(B, T, Hq, D).transpose(1, 2)
    k = (x @ mha.wk.weight.T).view(B, T, Hkv, D).transpose(1, 2)
    v = (x @ mha.wv.weight.T).view(B, T, Hkv, D).transpose(1, 2)
    heads = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=Hq != Hkv)
    if mha.wg is not None:
        heads = heads * torch.sigmoid(x @ mha.wg.weight.T + mha.wg.bias).transpose(1, 2)[..., None]
    return heads.transpose(1, 2).reshape(B, T, Hq * D) @ mha.wo.weight.T


@pytest.mark.parametrize("n_q_heads, n_kv_heads, gate", [(None, None, False), (4, 1, False), (2, 2, True),
                                                         (2, 1, True), (1, 1, False)])
def test_query_head_reduction_and_gates_match_torch_sdpa(n_q_heads, n_kv_heads, gate):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, n_q_heads=n_q_heads, n_kv_heads=n_kv_heads, gate=gate).double()
    x = randn(2, 6, 32, seed=4)
    torch.testing.assert_close(mha(x), manual_mha(mha, x))
    Hq = n_q_heads or 4
    assert mha.wq.weight.shape == (Hq * 8, 32) and mha.wo.weight.shape == (32, Hq * 8)


def test_cached_decoding_equals_full_forward_for_every_variant():
    torch.manual_seed(1)
    x = randn(1, 7, 16, seed=5)
    for kwargs in (dict(n_q_heads=2, n_kv_heads=1), dict(score="sigmoid"), dict(score="softmax1", gate=True),
                   dict(score="clipped", score_kwargs=dict(zeta=1.0, gamma=-0.03))):
        mha = MultiHeadAttention(16, 4, rope=True, **kwargs).double()
        cache = KVCache()
        steps = torch.cat([mha(x[:, :3], cache=cache)] + [mha(x[:, t:t + 1], cache=cache) for t in range(3, 7)], dim=1)
        torch.testing.assert_close(steps, mha(x), msg=str(kwargs))


def test_bad_head_counts_are_named():
    with pytest.raises(ValueError, match="n_q_heads"):
        MultiHeadAttention(32, 4, n_q_heads=8)
    with pytest.raises(ValueError, match="n_kv_heads"):
        MultiHeadAttention(32, 4, n_q_heads=2, n_kv_heads=4)
    with pytest.raises(ValueError, match="score"):
        MultiHeadAttention(32, 4, score="relu")


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


def test_lm_forwards_attention_options_and_rope_scaling():
    torch.manual_seed(0)
    model = TransformerLM(11, 16, 2, 4, n_kv_heads=1, mixer_kwargs=dict(n_q_heads=2, gate=True)).double()
    assert model.n_heads == 2 and all(b.mixer.wg is not None for b in model.blocks)
    idx = torch.randint(0, 11, (2, 9))
    before = model(idx)
    set_rope_scaling(model, ("pi", 4.0))
    assert all(b.mixer.rope_scaling == ("pi", 4.0) for b in model.blocks)
    assert not torch.allclose(model(idx), before)
    set_rope_scaling(model, None)
    torch.testing.assert_close(model(idx), before)
    with pytest.raises(ValueError, match="RoPE"):
        set_rope_scaling(TransformerLM(11, 16, 1, 4, pos="alibi"), ("pi", 2.0))


def test_cross_attention_matches_torch_sdpa_over_all_of_memory():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, n_kv_heads=2, qk_norm=True).double()
    x, memory = randn(2, 3, 16), randn(2, 7, 16, seed=1)
    q = m.q_norm((x @ m.wq.weight.T).view(2, 3, 4, 4).transpose(1, 2))
    k = m.k_norm((memory @ m.wk.weight.T).view(2, 7, 2, 4).transpose(1, 2))
    v = (memory @ m.wv.weight.T).view(2, 7, 2, 4).transpose(1, 2)
    heads = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    want = heads.transpose(1, 2).reshape(2, 3, 16) @ m.wo.weight.T
    torch.testing.assert_close(m(x, memory=memory), want, rtol=0, atol=1e-12)
    assert torch.equal(m(x, memory=memory, causal=False), m(x, memory=memory))


@pytest.mark.parametrize("extra, name", [
    (dict(causal=True), "causal=True"), (dict(cache=KVCache()), "cache"), (dict(positions=torch.arange(3)), "positions"),
    (dict(bias=torch.zeros(4, 3, 5)), "bias"), (dict(kv=(torch.zeros(1, 4, 5, 2),) * 2), "kv"),
])
def test_cross_attention_rejects_what_it_would_ignore(extra, name):
    m = MultiHeadAttention(8, 4)
    with pytest.raises(ValueError, match=f"takes no {name}"):
        m(torch.randn(1, 3, 8), memory=torch.randn(1, 5, 8), **extra)


def test_kv_keyword_checks_the_values_too():
    m = MultiHeadAttention(16, 4, n_kv_heads=2)
    x, k = torch.randn(1, 3, 16), torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match=r"got k \(1, 2, 5, 4\), v \(1, 2, 6, 4\)"):
        m(x, kv=(k, torch.randn(1, 2, 6, 4)))
    with pytest.raises(ValueError, match=r"kv\[1\] must have 4 dimensions"):
        m(x, kv=(k, torch.randn(2, 5, 4)))
    with pytest.raises(TypeError, match=r"kv\[1\] must be a floating-point tensor"):
        m(x, kv=(k, torch.ones(1, 2, 5, 4, dtype=torch.long)))


@pytest.mark.parametrize("args, kwargs, error, name", [
    ((0, 2), {}, ValueError, "d_model"), ((8, True), {}, ValueError, "n_heads"), ((8, 0), {}, ValueError, "n_heads"),
    ((8, 2), dict(n_kv_heads=0), ValueError, "n_kv_heads"), ((8, 2), dict(n_q_heads=2.0), ValueError, "n_q_heads"),
    ((8, 2), dict(rope_base=0.0), ValueError, "rope_base"), ((8, 2), dict(rope_scaling=("yarn", 2.0)), ValueError, "scaling"),
    ((8, 2), dict(score_kwargs={"zeta": 1.0, "tau": 2.0}), TypeError, "score_kwargs"),
    ((8, 2), dict(score="relu"), ValueError, "score"),
])
def test_constructor_names_the_bad_argument(args, kwargs, error, name):
    with pytest.raises(error, match=name):
        MultiHeadAttention(*args, **kwargs)


def test_depth_attention_mixes_earlier_layers_values_per_position():
    """Depth-attention against a per-position loop over layers with an explicit softmax; no new parameters."""
    from minilib.attention import DepthMemory, sdpa
    torch.manual_seed(0)
    layers = [MultiHeadAttention(8, 2, depth_attention=True).double() for _ in range(3)]
    plain = MultiHeadAttention(8, 2)
    assert sum(p.numel() for p in layers[0].parameters()) == sum(p.numel() for p in plain.parameters())
    xs = [torch.randn(2, 5, 8, dtype=torch.float64) for _ in range(3)]
    depth = DepthMemory()
    outs = [layer(x, depth=depth) for layer, x in zip(layers, xs)]
    ks = [l.wk(x).view(2, 5, 2, 4) for l, x in zip(layers, xs)]
    vs = [l.wv(x).view(2, 5, 2, 4) for l, x in zip(layers, xs)]
    for i, (layer, x) in enumerate(zip(layers, xs)):
        q = layer.wq(x).view(2, 5, 2, 4)
        mixed = torch.empty_like(vs[i])
        for b in range(2):
            for t in range(5):
                for h in range(2):
                    scores = torch.stack([q[b, t, h] @ ks[j][b, t, h] for j in range(i + 1)]) / 2.0
                    w = torch.softmax(scores, dim=0)
                    mixed[b, t, h] = sum(w[j] * vs[j][b, t, h] for j in range(i + 1))
        expected = layer.wo(sdpa(q.transpose(1, 2), ks[i].transpose(1, 2), mixed.transpose(1, 2), causal=True)
                            .transpose(1, 2).reshape(2, 5, 8))
        torch.testing.assert_close(outs[i], expected)


@pytest.mark.parametrize("kind", ["static", "gated"])
def test_value_residual_adds_gated_first_layer_values(kind):
    from minilib.attention import DepthMemory, sdpa
    torch.manual_seed(1)
    first, second = (MultiHeadAttention(8, 2, value_residual=kind).double() for _ in range(2))
    x1, x2 = (torch.randn(1, 4, 8, dtype=torch.float64) for _ in range(2))
    depth = DepthMemory()
    plain_first = MultiHeadAttention(8, 2).double()
    plain_first.load_state_dict(first.state_dict(), strict=False)
    torch.testing.assert_close(first(x1, depth=depth), plain_first(x1))  # layer 1 is unchanged
    v1 = first.wv(x1).view(1, 4, 2, 4)
    g = second.value_scale if kind == "static" else torch.sigmoid(second.value_gate(x2))[..., None]
    v = second.wv(x2).view(1, 4, 2, 4) + g * v1
    q, k = (w(x2).view(1, 4, 2, 4).transpose(1, 2) for w in (second.wq, second.wk))
    expected = second.wo(sdpa(q, k, v.transpose(1, 2), causal=True).transpose(1, 2).reshape(1, 4, 8))
    torch.testing.assert_close(second(x2, depth=depth), expected)


def test_cross_layer_options_bad_arguments():
    with pytest.raises(ValueError, match="value_residual"):
        MultiHeadAttention(8, 2, value_residual="dynamic")
    with pytest.raises(TypeError, match="depth_attention"):
        MultiHeadAttention(8, 2, depth_attention="yes")
    with pytest.raises(ValueError, match="depth_attention"):
        MultiHeadAttention(8, 4, n_kv_heads=2, depth_attention=True)
    with pytest.raises(TypeError, match="depth"):
        MultiHeadAttention(8, 2, depth_attention=True)(torch.randn(1, 3, 8))
