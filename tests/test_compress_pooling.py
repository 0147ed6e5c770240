"""minilib.compress.pooling: low-rank multi-head pooling against a loop over heads and tokens, and a keyword task
on which it learns to put its weight on the keyword."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.compress import LowRankMHPooling, low_rank_mh_pooling

f64 = torch.float64


@settings(max_examples=12, deadline=None)
@given(B=st.integers(1, 2), N=st.integers(1, 6), d=st.integers(1, 4), K=st.integers(1, 3), r=st.integers(1, 3),
       seed=st.integers(0, 10**6))
def test_pooling_matches_a_loop_over_heads_and_tokens(B, N, d, K, r, seed):
    g = torch.Generator().manual_seed(seed)
    h, U, V = (torch.randn(*s, generator=g, dtype=f64) for s in ((B, N, d), (K, d, r), (K, d, r)))
    mask = torch.rand(B, N, generator=g) < 0.7
    mask[:, 0] = True
    pooled, weights = low_rank_mh_pooling(h, U, V, mask=mask)
    for b in range(B):
        real = [j for j in range(N) if mask[b, j]]
        c = [sum(h[b, j, i].item() for j in real) / len(real) for i in range(d)]
        for k in range(K):
            W = U[k] @ V[k].T  # the rank-r affinity of head k
            s = {j: sum(c[i] * W[i, e].item() * h[b, j, e].item() for i in range(d) for e in range(d)) for j in real}
            top = max(s.values())
            z = sum(math.exp(v - top) for v in s.values())
            alpha = [math.exp(s[j] - top) / z if j in s else 0.0 for j in range(N)]
            torch.testing.assert_close(weights[b, k], torch.tensor(alpha, dtype=f64), rtol=1e-9, atol=1e-12)
            want = [sum(alpha[j] * h[b, j, i].item() for j in range(N)) for i in range(d)]
            torch.testing.assert_close(pooled[b, k], torch.tensor(want, dtype=f64), rtol=1e-9, atol=1e-12)


def test_keyword_task_is_learned_with_weight_on_the_keyword():
    torch.manual_seed(0)
    d, N = 16, 12
    filler, positive, negative = torch.randn(30, d), torch.randn(d), torch.randn(d)

    def batch(n, g):
        x = filler[torch.randint(30, (n, N), generator=g)]
        label = torch.randint(2, (n,), generator=g)
        where = torch.randint(N, (n,), generator=g)
        x[torch.arange(n), where] = torch.where(label[:, None] == 1, positive, negative)
        return x, label, where

    pool, head = LowRankMHPooling(d, n_heads=2, rank=2), torch.nn.Linear(2 * d, 2)
    opt = torch.optim.Adam([*pool.parameters(), *head.parameters()], lr=0.02)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y, _ = batch(64, g)
        loss = torch.nn.functional.cross_entropy(head(pool(x)[0]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, y, where = batch(500, g)
        pooled, weights = pool(x)
        acc = (head(pooled).argmax(-1) == y).float().mean().item()
        on_keyword = (weights.mean(1).argmax(-1) == where).float().mean().item()
    assert acc > 0.95 and on_keyword > 0.9, (acc, on_keyword)
    assert sum(p.numel() for p in pool.parameters()) == 2 * 2 * d * 2  # 2 K d r, against K (d^2 + d) = 544


def test_bad_arguments_are_named():
    h = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="U and V"):
        low_rank_mh_pooling(h, torch.randn(2, 5, 1), torch.randn(2, 5, 1))
    with pytest.raises(ValueError, match="mask"):
        low_rank_mh_pooling(h, torch.randn(2, 4, 1), torch.randn(2, 4, 1), mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="rank"):
        LowRankMHPooling(4, 2, 0)
