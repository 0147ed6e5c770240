"""Independent references for the attention kernel tests: torch's SDPA in float64 and plain logsumexp.

Shared by tests/test_flash_*.py and tests/test_parallel.py; nothing here calls minilib.
"""
import math

import torch
import torch.nn.functional as F
from hypothesis import settings, strategies as st

FAST = settings(max_examples=25, deadline=None)
TOL = dict(rtol=0, atol=1e-10)


def bottom_right(T, S):
    """keep[t, j] = key j is visible to query t when the T queries are the last T of S positions."""
    return torch.ones(T, S, dtype=torch.bool).tril(S - T)


def reference(q, k, v, *, causal=False, mask=None, scale=None):
    """torch SDPA with an explicit bool mask (True = keep) and GQA; fully masked rows give zeros."""
    T, S = q.shape[2], k.shape[2]
    keep = torch.ones(T, S, dtype=torch.bool) if mask is None else mask
    if causal:
        keep = keep & bottom_right(T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def reference_lse(q, k, *, causal=False, scale=None):
    """Row log-sum-exp of the scaled (and bottom-right causal) scores, via torch.logsumexp."""
    T, S = q.shape[2], k.shape[2]
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        scores = scores.masked_fill(~bottom_right(T, S), -math.inf)
    return torch.logsumexp(scores, dim=-1)


def qkv(B, H, Hkv, T, S, D, Dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    return make(B, H, T, D), make(B, Hkv, S, D), make(B, Hkv, S, Dv)


def grads(out, inputs, seed=1, rounded_to=None):
    """Vector-Jacobian products with a seeded upstream gradient (optionally rounded to a dtype first)."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, g.to(rounded_to or out.dtype).to(out.dtype))


shapes = st.fixed_dictionaries({
    "B": st.integers(1, 2), "Hkv": st.integers(1, 2), "G": st.sampled_from([1, 2, 3]),
    "T": st.sampled_from([1, 2, 7, 16, 33, 70]), "S": st.sampled_from([1, 3, 16, 31, 65, 90]),
    "D": st.sampled_from([1, 4, 8]), "Dv": st.sampled_from([1, 5, 8]), "causal": st.booleans(),
    "block_q": st.sampled_from([1, 5, 16, 64]), "block_k": st.sampled_from([1, 7, 16, 64]),
})

