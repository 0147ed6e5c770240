"""Independent references and strategies shared by the attention tests: torch's own SDPA (fp64) with the
library's bottom-right causal convention, hypothesis shapes with GQA ratios, and seeded fp64 tensors."""
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

f64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


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


def qkv(B, H, Hkv, T, S, D, Dv, seed=0):
    return randn(B, H, T, D, seed=seed), randn(B, Hkv, S, D, seed=seed + 1), randn(B, Hkv, S, Dv, seed=seed + 2)
