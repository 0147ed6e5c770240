r"""Universal relative positional encoding (URPE): softmax attention re-weighted by a learned Toeplitz matrix.

The Toeplitz matrices themselves are positional helpers (:func:`minilib.positional.toeplitz_matrix`).
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_attention_inputs, check_last_dim, check_positive_int, require_tensor
from minilib.attention.dot_product import _weighted_values, attention_weights, sdpa
from minilib.attention.heads import merge_heads, split_heads
from minilib.positional import toeplitz_matrix

__all__ = ["urpe_attention", "URPEAttention"]


def urpe_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, toeplitz: torch.Tensor,
                   bias: torch.Tensor | None = None, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    r"""Universal relative positional encoding (URPE): softmax attention re-weighted, entry by entry, by a Toeplitz matrix.

    $$ \operatorname{URPE}(Q, K, V) = \Big(\operatorname{softmax}\!\Big(\frac{QK^\top}{\sqrt D} + B\Big) \odot C\Big) V,
       \qquad C_{ts} = c_{t - s} $$

    $B$ is any relative-position bias inside the softmax (``bias``, broadcastable to ``(B,H,T,S)``);
    $C$ is built from ``toeplitz`` (``(2S-1,)`` or ``(H, 2S-1)``; ``(S,)`` or ``(H, S)`` when causal) by
    :func:`~minilib.positional.toeplitz_matrix`. A softmax row sums to one, so without $C$ a constant input gives the same output at
    every position whatever $B$ is; $C$ lifts that restriction. ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``,
    ``v (B,Hkv,S,Dv)`` -> ``(B,H,T,Dv)``. See :cite:`luo2022urpe`.
    """
    check_attention_inputs(q, k, v, causal=causal)
    H, T, S = q.shape[1], q.shape[2], k.shape[2]
    require_tensor("toeplitz", toeplitz, ndim=(1, 2), floating=True)
    L = S if causal else 2 * S - 1
    if toeplitz.shape[-1] != L or (toeplitz.ndim == 2 and toeplitz.shape[0] != H):
        raise ValueError(f"toeplitz must have shape (L,) or (H={H}, L) with L={L} ({'S' if causal else '2S - 1'} for "
                         f"S={S}, causal={causal}), got {tuple(toeplitz.shape)}")
    C = toeplitz_matrix(toeplitz, T, S, causal=causal)
    weights = attention_weights(q, k, causal=causal, bias=bias, scale=scale)
    return _weighted_values(weights * C.to(weights.dtype), q, k, v)


class URPEAttention(nn.Module):
    r"""Self-attention with a learned relative bias inside the softmax and, optionally, URPE's Toeplitz re-weighting.

    $$ \operatorname{head}_h = \big(\operatorname{softmax}(Q_h K_h^\top/\sqrt D + B_h) \odot C_h\big) V_h,
       \qquad (B_h)_{ts} = b_{h,t-s},\ (C_h)_{ts} = c_{h,t-s} $$

    followed by the output projection. ``urpe=False`` fixes $C_h = \mathbf 1$: plain relative position
    encoding inside the softmax (a T5/Shaw-style scalar bias per head and offset). $b$ starts at 0 and
    $c$ at 1, so both forms start equal. ``x (B, T, d_model) -> (B, T, d_model)`` for ``T <= max_len``.
    See :cite:`luo2022urpe`.
    """

    def __init__(self, d_model: int, n_heads: int, *, max_len: int, urpe: bool = True, causal: bool = False):
        super().__init__()
        if check_positive_int("d_model", d_model) % check_positive_int("n_heads", n_heads):
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        check_positive_int("max_len", max_len)
        self.n_heads, self.max_len, self.urpe, self.causal = n_heads, max_len, urpe, causal
        self.wqkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, 2 * max_len - 1))
        n_c = max_len if causal else 2 * max_len - 1
        self.toeplitz_c = nn.Parameter(torch.ones(n_heads, n_c)) if urpe else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.wqkv.in_features, ndim=3)
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"x has {T} positions, more than max_len={self.max_len}; shape {tuple(x.shape)}")
        q, k, v = (split_heads(part, self.n_heads) for part in self.wqkv(x).chunk(3, dim=-1))
        # the tables hold offsets -(max_len-1)..(max_len-1) (c: 0..max_len-1 when causal); keep those a length-T input has
        centre = self.max_len - 1
        bias = toeplitz_matrix(self.rel_bias[:, centre - (T - 1):centre + T], T)
        if self.toeplitz_c is None:
            heads = sdpa(q, k, v, causal=self.causal, bias=bias)
        else:
            c = self.toeplitz_c[:, :T] if self.causal else self.toeplitz_c[:, centre - (T - 1):centre + T]
            heads = urpe_attention(q, k, v, toeplitz=c, bias=bias, causal=self.causal)
        return self.wo(merge_heads(heads))
