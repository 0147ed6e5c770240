"""minilib.attention.convolutional: RelConvAttention against its equation written as loops in fp64."""
import math

import pytest
import torch

from minilib.attention import RelConvAttention

f64 = torch.float64


def rcmha_loop(m: RelConvAttention, x, causal=True):
    """Projection, causal depthwise convolution tap by tap, scores with the clipped-distance bias, softmax, output."""
    B, T, C = x.shape
    H, D, K = m.n_heads, m.head_dim, m.kernel
    d_max = m.rel_bias.shape[1] - 1
    convolved = []
    for proj, conv in zip((m.wq, m.wk, m.wv), m.convs):
        p = x @ proj.weight.T
        out = torch.zeros_like(p)
        for t in range(T):
            out[:, t] = conv.bias
            for j in range(K):  # tap j reads position t - j; Conv1d's kernel is stored oldest tap first
                if t - j >= 0:
                    out[:, t] += conv.weight[:, 0, K - 1 - j] * p[:, t - j]
        convolved.append(out.view(B, T, H, D))
    q, k, v = convolved
    heads = torch.zeros(B, T, H, D, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                keys = [s for s in range(T) if not causal or s <= t]
                logits = torch.stack([q[b, t, h] @ k[b, s, h] / math.sqrt(D) + m.rel_bias[h, min(abs(t - s), d_max)]
                                      for s in keys])
                for w, s in zip(torch.softmax(logits, 0), keys):
                    heads[b, t, h] += w * v[b, s, h]
    return heads.reshape(B, T, C) @ m.wo.weight.T


@pytest.mark.parametrize("kernel, max_distance, causal", [(3, 16, True), (2, 3, True), (4, 2, False), (1, 1, True)])
def test_rcmha_matches_a_loop(kernel, max_distance, causal):
    torch.manual_seed(0)
    m = RelConvAttention(12, 3, kernel=kernel, max_distance=max_distance).double()
    with torch.no_grad():
        m.rel_bias.normal_()
    x = torch.randn(2, 7, 12, dtype=f64)
    torch.testing.assert_close(m(x, causal=causal), rcmha_loop(m, x, causal), rtol=0, atol=1e-12)


def test_rcmha_is_causal_and_has_no_cache():
    torch.manual_seed(0)
    m = RelConvAttention(16, 4)
    x = torch.randn(1, 12, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 6, 16)
    assert torch.equal(m(x)[:, :6], m(y)[:, :6])
    assert m.new_cache() is None
    with pytest.raises(ValueError, match="cache"):
        m(x, cache=object())


def test_rcmha_rejects_bad_sizes():
    with pytest.raises(ValueError, match="kernel"):
        RelConvAttention(16, 4, kernel=0)
    with pytest.raises(ValueError, match="max_distance"):
        RelConvAttention(16, 4, max_distance=True)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        RelConvAttention(16, 4)(torch.randn(16))
