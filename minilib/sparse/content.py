r"""Content-based sparsity: each query keeps the keys (or regions of keys) that score highest.

Shapes as :func:`minilib.attention.sdpa`: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``.
"""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_positive_int, default_scale
from minilib.attention import causal_mask, expand_kv_heads, sdpa

__all__ = ["topk_mask", "topk_attention", "routing_mask", "bilevel_routing_attention"]


def topk_mask(scores: torch.Tensor, k_top: int, *, causal: bool = False) -> torch.Tensor:
    r"""True at the ``k_top`` largest entries of each row of ``scores (..., T, S)`` among the visible keys.

    A row with fewer than ``k_top`` visible keys keeps them all; ties are broken by :func:`torch.topk`.
    """
    check_positive_int("k_top", k_top)
    T, S = scores.shape[-2:]
    visible = causal_mask(T, S, device=scores.device) if causal else torch.ones(T, S, dtype=torch.bool, device=scores.device)
    masked = scores.masked_fill(~visible, float("-inf"))
    index = masked.topk(min(k_top, S), dim=-1).indices
    keep = torch.zeros_like(masked, dtype=torch.bool).scatter_(-1, index, True)
    return keep & visible


def topk_attention(q, k, v, *, k_top: int, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    r"""Each query attends only to its ``k_top`` highest-scoring keys.

    $$ o_t = \sum_{s \in \mathcal{K}_t} \frac{e^{a_{ts}}}{\sum_{s' \in \mathcal{K}_t} e^{a_{ts'}}}\, v_s,
       \qquad \mathcal{K}_t = \operatorname{top}_k\{a_{ts}\}, \quad a_{ts} = \text{scale}\; q_t \cdot k_s $$

    The scores are computed densely, so this shows the *quality* of top-k attention, not its speed (that needs
    an index). ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``.
    See :cite:`nawrot2025sparse,liu2024retrievalattention`.
    """
    check_attention_inputs(q, k, v)
    scores = default_scale(q.shape[-1], scale) * q @ expand_kv_heads(k, q.shape[1]).transpose(-2, -1)
    return sdpa(q, k, v, mask=topk_mask(scores, k_top, causal=causal), causal=causal, scale=scale)


def _regions(x: torch.Tensor, region_size: int) -> torch.Tensor:
    """Mean over consecutive groups of ``region_size`` positions: ``(B, H, L, D) -> (B, H, L / region_size, D)``."""
    B, H, L, D = x.shape
    if L % region_size:
        raise ValueError(f"sequence length {L} must be a multiple of region_size ({region_size})")
    return x.view(B, H, L // region_size, region_size, D).mean(dim=3)


def routing_mask(q, k, *, region_size: int, k_top: int) -> torch.Tensor:
    r"""BiFormer's region routing as a token mask ``(B, H, T, S)``: query region $i$ reads key region $j$ when $j$
    is among the ``k_top`` regions of highest affinity $A_{ij} = \bar q_i \cdot \bar k_j$ (means over the regions).

    See :cite:`zhu2023biformer`.
    """
    check_positive_int("region_size", region_size)
    check_positive_int("k_top", k_top)
    affinity = _regions(q, region_size) @ _regions(expand_kv_heads(k, q.shape[1]), region_size).transpose(-2, -1)
    routed = topk_mask(affinity, k_top)  # (B, H, T / r, S / r)
    return routed.repeat_interleave(region_size, dim=-2).repeat_interleave(region_size, dim=-1)


def bilevel_routing_attention(q, k, v, *, region_size: int, k_top: int, scale: float | None = None) -> torch.Tensor:
    r"""Bi-level routing attention: route regions to regions, then attend token to token inside the routed regions.

    $$ A = \bar Q \bar K^\top,\quad I_i = \operatorname{top}_k(A_{i,:}),\quad
       O_{\text{region } i} = \operatorname{softmax}\!\big(\text{scale}\, Q_i K_{I_i}^\top\big) V_{I_i} $$

    with $\bar Q, \bar K$ the region means over ``region_size`` consecutive positions. The gathered keys of the
    $k$ routed regions form a dense ``(region_size, k * region_size)`` block per query region, so the token
    level is plain matrix products. Non-causal (BiFormer is a vision model; flatten a 2-D grid region by region).
    ``T`` and ``S`` multiples of ``region_size``. Equals ``sdpa`` with :func:`routing_mask`.
    See :cite:`zhu2023biformer`.
    """
    check_attention_inputs(q, k, v)
    check_positive_int("region_size", region_size)
    check_positive_int("k_top", k_top)
    B, H, T, D = q.shape
    k, v = expand_kv_heads(k, H), expand_kv_heads(v, H)
    nq, nk = T // region_size, k.shape[2] // region_size
    k_top = min(k_top, nk)
    affinity = _regions(q, region_size) @ _regions(k, region_size).transpose(-2, -1)  # (B, H, nq, nk)
    routed = affinity.topk(k_top, dim=-1).indices  # (B, H, nq, k_top)
    kr = k.view(B, H, nk, region_size, D)
    vr = v.view(B, H, nk, region_size, v.shape[-1])

    def gather(x):  # (B, H, nk, r, E) -> (B, H, nq, k_top * r, E)
        index = routed[..., None, None].expand(-1, -1, -1, -1, region_size, x.shape[-1])
        picked = torch.gather(x[:, :, None].expand(-1, -1, nq, -1, -1, -1), 3, index)
        return picked.flatten(3, 4)

    qr = q.view(B, H, nq, region_size, D)
    weights = torch.softmax(default_scale(D, scale) * qr @ gather(kr).transpose(-2, -1), dim=-1)
    return (weights @ gather(vr)).view(B, H, T, -1)
