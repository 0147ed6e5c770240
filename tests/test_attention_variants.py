"""Chapter 02 core: scoring functions, entropy, cache bytes, query-head reduction, gates and RoPE scaling,
each against an independent reference (torch built-ins in fp64, explicit loops, closed forms)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.attention import (KVCache, MultiHeadAttention, attend, attention_entropy, kv_cache_bytes, score_weights,
                               softmax_one)
from minilib.models import TransformerLM, set_rope_scaling
from minilib.positional import rope, rope_angles
from tests.test_attention import attention_shapes, torch_reference

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def qkv(B, H, Hkv, T, S, D, Dv, seed=0):
    return randn(B, H, T, D, seed=seed), randn(B, Hkv, S, D, seed=seed + 1), randn(B, Hkv, S, Dv, seed=seed + 2)


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


def test_attention_entropy_against_closed_forms():
    uniform = torch.full((1, 2, 3, 8), 1 / 8, dtype=f64)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((1, 2, 3), math.log(8), dtype=f64))
    one_hot = F.one_hot(torch.tensor([[[2, 0, 5]]]), 6).to(f64)
    assert torch.equal(attention_entropy(one_hot), torch.zeros(1, 1, 3, dtype=f64))
    p = torch.softmax(randn(2, 3, 4, 5), -1)
    loop = torch.tensor([[[-sum(float(x) * math.log(float(x)) for x in row) for row in head] for head in batch] for batch in p],
                        dtype=f64)
    torch.testing.assert_close(attention_entropy(p), loop)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kv_cache_bytes_counts_the_tensors_a_real_cache_holds(dtype):
    n_layers, n_kv, D, S, B = 3, 2, 8, 11, 2
    caches = [KVCache() for _ in range(n_layers)]
    for cache in caches:
        for _ in range(S):
            cache.append(torch.zeros(B, n_kv, 1, D, dtype=dtype), torch.zeros(B, n_kv, 1, D, dtype=dtype))
    held = sum(c.k.nbytes + c.v.nbytes for c in caches)
    assert kv_cache_bytes(n_layers=n_layers, n_kv_heads=n_kv, head_dim=D, seq_len=S, batch=B, dtype=dtype) == held


def test_kv_cache_bytes_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_kv_heads"):
        kv_cache_bytes(n_layers=1, n_kv_heads=-1, head_dim=4, seq_len=3)
    with pytest.raises(TypeError, match="dtype"):
        kv_cache_bytes(n_layers=1, n_kv_heads=1, head_dim=4, seq_len=3, dtype="fp16")


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


def plain_rotation(x, angles):
    """RoPE written as explicit 2x2 rotations of the interleaved pairs, from given angles (T, D/2)."""
    out = x.clone()
    for i in range(x.shape[-1] // 2):
        c, s = torch.cos(angles[:, i]), torch.sin(angles[:, i])
        out[..., 2 * i] = c * x[..., 2 * i] - s * x[..., 2 * i + 1]
        out[..., 2 * i + 1] = s * x[..., 2 * i] + c * x[..., 2 * i + 1]
    return out


@pytest.mark.parametrize("scaling", [("pi", 1.0), ("ntk", 1.0), ("dynamic", 64)])
def test_rope_scaling_reduces_to_plain_rope(scaling):
    x, positions = randn(2, 10, 8), torch.arange(10)
    torch.testing.assert_close(rope(x, positions, scaling=scaling), rope(x, positions))


@given(s=st.floats(1.0, 16.0), D=st.sampled_from([4, 8, 16, 64]))
@SETTINGS
def test_rope_scaling_frequencies_closed_form(s, D):
    positions = torch.arange(1, 50, 7)
    theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=f64) / D)
    pi = rope_angles(positions, D, scaling=("pi", s))
    torch.testing.assert_close(pi, positions.to(f64)[:, None] / s * theta)
    ntk = rope_angles(positions, D, scaling=("ntk", s)) / positions.to(f64)[:, None]
    torch.testing.assert_close(ntk[:, 0], torch.ones(len(positions), dtype=f64))  # fastest pair untouched
    torch.testing.assert_close(ntk[:, -1], torch.full((len(positions),), theta[-1].item() / s, dtype=f64))


def test_dynamic_scaling_switches_on_past_the_training_length():
    x = randn(1, 100, 8)
    positions = torch.arange(100)
    got = rope(x, positions, scaling=("dynamic", 50))
    want = plain_rotation(x, rope_angles(positions, 8, base=10000.0 * 2.0 ** (8 / 6)))
    torch.testing.assert_close(got, want)


def test_rope_scaling_rejects_unknown_methods():
    with pytest.raises(ValueError, match="scaling"):
        rope(randn(1, 3, 4), torch.arange(3), scaling=("yarn", 2.0))
    with pytest.raises(ValueError, match="scaling"):
        rope(randn(1, 3, 4), torch.arange(3), scaling=("pi", 0.0))


def test_lm_forwards_attention_options_and_rope_scaling():
    torch.manual_seed(0)
    model = TransformerLM(11, 16, 2, 4, n_kv_heads=1, attn_kwargs=dict(n_q_heads=2, gate=True)).double()
    assert model.n_heads == 2 and all(b.attn.wg is not None for b in model.blocks)
    idx = torch.randint(0, 11, (2, 9))
    before = model(idx)
    set_rope_scaling(model, ("pi", 4.0))
    assert all(b.attn.rope_scaling == ("pi", 4.0) for b in model.blocks)
    assert not torch.allclose(model(idx), before)
    set_rope_scaling(model, None)
    torch.testing.assert_close(model(idx), before)
    with pytest.raises(ValueError, match="RoPE"):
        set_rope_scaling(TransformerLM(11, 16, 1, 4, pos="alibi"), ("pi", 2.0))
