"""minilib.attention.urpe: urpe_attention against a naive loop in fp64, URPEAttention's relative tables, and the
constant-input limit of relative positions inside softmax."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import URPEAttention, sdpa, urpe_attention


def naive_urpe(q, k, v, c, bias, causal):
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    out = torch.zeros(B, H, T, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)
            ch = c if c.ndim == 1 else c[h]
            for t in range(T):
                tp = S - T + t
                keys = [s for s in range(S) if not causal or s <= tp]
                logits = [float(q[b, h, t] @ k[b, g, s]) / math.sqrt(D) + (0.0 if bias is None else float(bias[h, t, s]))
                          for s in keys]
                top = max(logits)
                weights = [math.exp(z - top) for z in logits]
                total = sum(weights)
                for s, w in zip(keys, weights):
                    coeff = ch[tp - s] if causal else ch[tp - s + S - 1]
                    out[b, h, t] += w / total * coeff * v[b, g, s]
    return out


@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 6), extra=st.integers(0, 3), heads=st.sampled_from([(2, 2), (4, 2), (3, 1)]),
       causal=st.booleans(), per_head=st.booleans(), with_bias=st.booleans(), seed=st.integers(0, 999))
def test_urpe_matches_naive_loop(T, extra, heads, causal, per_head, with_bias, seed):
    g = torch.Generator().manual_seed(seed)
    H, Hkv = heads
    S = T + extra
    q = torch.randn(2, H, T, 4, generator=g, dtype=torch.float64)
    k = torch.randn(2, Hkv, S, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, Hkv, S, 3, generator=g, dtype=torch.float64)
    n_c = S if causal else 2 * S - 1
    c = torch.randn((H, n_c) if per_head else (n_c,), generator=g, dtype=torch.float64)
    bias = torch.randn(H, T, S, generator=g, dtype=torch.float64) if with_bias else None
    got = urpe_attention(q, k, v, toeplitz=c, bias=bias, causal=causal)
    torch.testing.assert_close(got, naive_urpe(q, k, v, c, bias, causal), rtol=1e-10, atol=1e-12)


def test_all_ones_toeplitz_is_softmax_attention():
    q, k, v = (torch.randn(2, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(2, 5, 5, dtype=torch.float64)
    for causal in (False, True):
        ones = torch.ones(5 if causal else 9, dtype=torch.float64)
        torch.testing.assert_close(urpe_attention(q, k, v, toeplitz=ones, bias=bias, causal=causal),
                                   sdpa(q, k, v, bias=bias, causal=causal), rtol=0, atol=1e-12)


def test_module_uses_relative_tables_by_offset():
    torch.manual_seed(0)
    m = URPEAttention(6, 2, max_len=7).double()
    with torch.no_grad():
        m.rel_bias.normal_()
        m.toeplitz_c.normal_()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    T, centre = 4, 6
    with torch.no_grad():
        got = m(x)
        q, k, v = (p.view(2, T, 2, 3).transpose(1, 2) for p in m.wqkv(x).chunk(3, dim=-1))
        bias = torch.tensor([[[m.rel_bias[h, t - s + centre].item() for s in range(T)] for t in range(T)]
                             for h in range(2)], dtype=torch.float64)
        heads = naive_urpe(q, k, v, m.toeplitz_c[:, centre - (T - 1):centre + T], bias, causal=False)
        want = m.wo(heads.transpose(1, 2).reshape(2, T, 6))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_constant_input_gives_one_vector_without_urpe_and_not_with_it(causal):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, dtype=torch.float64).expand(3, 9, 8)
    rpe = URPEAttention(8, 2, max_len=12, urpe=False, causal=causal).double()
    urpe = URPEAttention(8, 2, max_len=12, causal=causal).double()
    with torch.no_grad():
        rpe.rel_bias.normal_(std=3.0)
        urpe.rel_bias.copy_(rpe.rel_bias)
        urpe.toeplitz_c.normal_()
    y = rpe(x)
    assert (y - y[:, :1]).abs().max() < 1e-12
    z = urpe(x)
    assert (z - z[:, :1]).abs().max() > 1e-2


def test_bad_inputs_raise():
    q = torch.randn(1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"toeplitz must have shape.*L=7.*\(5,\)"):
        urpe_attention(q, q, q, toeplitz=torch.ones(5))
    with pytest.raises(ValueError, match=r"toeplitz must have shape.*\(3, 7\)"):
        urpe_attention(q, q, q, toeplitz=torch.ones(3, 7))
    with pytest.raises(TypeError, match="toeplitz must be a torch.Tensor"):
        urpe_attention(q, q, q, toeplitz=[1.0] * 7)
    with pytest.raises(ValueError, match="max_len=3"):
        URPEAttention(4, 2, max_len=3)(torch.randn(1, 4, 4))
    with pytest.raises(ValueError, match="n_heads"):
        URPEAttention(5, 2, max_len=3)


@pytest.mark.parametrize("args, kwargs, name", [((0, 2), dict(max_len=4), "d_model"), ((4, True), dict(max_len=4), "n_heads"),
                                                ((4, 2), dict(max_len=0), "max_len")])
def test_module_names_bad_sizes(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        URPEAttention(*args, **kwargs)
