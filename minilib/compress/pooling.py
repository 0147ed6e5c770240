r"""Compact multi-head attention pooling: heads from a low-rank factorisation of one bilinear affinity.

A sequence ``h (B, N, d)`` is pooled into one vector per head by attention against a global context vector $c$
(here the mean token). Instead of a full $d \times d$ affinity matrix per head, the affinity $c^\top W h_j$ uses
$W = U V^\top$ of rank $K r$, and head $k$ owns the rank-$r$ slice $(U_k, V_k)$ :cite:`mehta2019lowrank`.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_positive_int, require_tensor

__all__ = ["low_rank_mh_pooling", "LowRankMHPooling"]


def low_rank_mh_pooling(h: torch.Tensor, U: torch.Tensor, V: torch.Tensor, *, mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Pool ``h`` with $K$ heads whose affinities are rank-$r$ slices of one bilinear form.

    $$ c = \tfrac1N \textstyle\sum_j h_j, \qquad s_{kj} = (U_k^\top c)^\top (V_k^\top h_j), \qquad
       \alpha_{k} = \operatorname{softmax}_j(s_{kj}), \qquad o_k = \textstyle\sum_j \alpha_{kj} h_j $$

    ``h (B, N, d)``, ``U, V (K, d, r)``, optional ``mask (B, N)`` bool (True = a real token; padding gets no
    weight and is left out of $c$) -> ``(pooled (B, K, d), weights (B, K, N))``. Parameters: $2 K d r$, against
    $K(d^2 + d)$ for heads with their own projection and query. See :cite:`mehta2019lowrank`.
    """
    require_tensor("h", h, ndim=3, floating=True)
    require_tensor("U", U, ndim=3, floating=True)
    require_tensor("V", V, ndim=3, floating=True)
    B, N, d = h.shape
    if U.shape != V.shape or U.shape[1] != d:
        raise ValueError(f"U and V must both have shape (K, d={d}, r), got {tuple(U.shape)} and {tuple(V.shape)}")
    keep = torch.ones(B, N, dtype=torch.bool, device=h.device) if mask is None else mask
    require_tensor("mask", keep, ndim=2)
    if keep.shape != (B, N) or keep.dtype != torch.bool or not keep.any(dim=1).all():
        raise ValueError(f"mask must be a (B, N) = {(B, N)} bool tensor with a real token in every row, "
                         f"got {tuple(keep.shape)} {keep.dtype}")
    weights_in = keep.to(h.dtype)[..., None]
    context = (h * weights_in).sum(1) / weights_in.sum(1)  # (B, d)
    query = torch.einsum("bd,kdr->bkr", context, U)
    keys = torch.einsum("bnd,kdr->bknr", h, V)
    scores = torch.einsum("bkr,bknr->bkn", query, keys).masked_fill(~keep[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ h, weights


class LowRankMHPooling(nn.Module):
    """:func:`low_rank_mh_pooling` with learned factors ``U, V (n_heads, d_model, rank)``; returns ``(B, n_heads * d_model)``
    and the weights. See :cite:`mehta2019lowrank`."""

    def __init__(self, d_model: int, n_heads: int, rank: int):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("rank", rank)):
            check_positive_int(name, value)
        self.U = nn.Parameter(torch.randn(n_heads, d_model, rank) / d_model ** 0.5)
        self.V = nn.Parameter(torch.randn(n_heads, d_model, rank) / d_model ** 0.5)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, weights = low_rank_mh_pooling(h, self.U, self.V, mask=mask)
        return pooled.flatten(1), weights
