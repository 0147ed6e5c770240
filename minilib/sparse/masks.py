r"""Fixed sparsity patterns as boolean ``(T, S)`` masks (True = the query may read the key), their cost, and the
conversion of a pattern to the tile mask of :func:`minilib.flash.block_sparse_attention`.

Every mask is *bottom-right aligned*: with ``S`` keys and ``T`` queries, query ``t`` sits at absolute position
$p_t = S - T + t$, as when decoding with a cache. A mask is used as ``sdpa(q, k, v, mask=mask)``.
"""
from __future__ import annotations

import torch

from minilib._checks import check_nonnegative_int, check_positive_int, require_tensor

__all__ = ["sliding_window_mask", "dilated_window_mask", "global_local_mask", "block_local_mask", "sink_window_mask",
           "to_block_mask", "mask_flops"]


def _positions(T: int, S: int | None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute query positions ``(T, 1)`` (the last ``T`` of ``S``) and key positions ``(1, S)``."""
    T = check_nonnegative_int("T", T)
    S = T if S is None else check_nonnegative_int("S", S)
    if S < T:
        raise ValueError(f"S (keys) must be >= T (queries) for bottom-right aligned masks, got T={T}, S={S}")
    return torch.arange(S - T, S, device=device)[:, None], torch.arange(S, device=device)[None, :]


def sliding_window_mask(T: int, window: int, *, S: int | None = None, device=None) -> torch.Tensor:
    r"""Causal sliding window of ``window`` keys including the query's own position.

    $$ M_{ts} = [\,p_t - w < s \le p_t\,], \qquad p_t = S - T + t $$

    ``(T, S)`` bool. ``window=1`` is each token alone; ``window >= S`` is the causal mask.
    See :cite:`beltagy2020longformer,child2019sparse`.
    """
    check_positive_int("window", window)
    p, s = _positions(T, S, device)
    return (s <= p) & (s > p - window)


def dilated_window_mask(T: int, window: int, *, dilation: int, S: int | None = None, device=None) -> torch.Tensor:
    r"""Causal dilated window: ``window`` keys spaced ``dilation`` apart, the query's own position first.

    $$ M_{ts} = [\,0 \le p_t - s < w\,d \;\wedge\; (p_t - s) \bmod d = 0\,] $$

    ``dilation=1`` is :func:`sliding_window_mask`; the receptive field grows to $w\,d$ at the same cost.
    See :cite:`beltagy2020longformer`.
    """
    check_positive_int("window", window)
    check_positive_int("dilation", dilation)
    p, s = _positions(T, S, device)
    gap = p - s
    return (gap >= 0) & (gap < window * dilation) & (gap % dilation == 0)


def sink_window_mask(T: int, window: int, *, n_sinks: int, S: int | None = None, device=None) -> torch.Tensor:
    r"""StreamingLLM's pattern: the first ``n_sinks`` positions (attention sinks) plus a causal window.

    $$ M_{ts} = [\,s \le p_t\,] \wedge \big([\,s < n_\text{sink}\,] \vee [\,s > p_t - w\,]\big) $$

    See :cite:`xiao2024efficient`.
    """
    check_nonnegative_int("n_sinks", n_sinks)
    p, s = _positions(T, S, device)
    return sliding_window_mask(T, window, S=S, device=device) | ((s < n_sinks) & (s <= p))


def global_local_mask(T: int, *, radius: int, n_global: int, causal: bool = False, device=None) -> torch.Tensor:
    r"""ETC / Longformer global-local attention over ``T`` tokens whose first ``n_global`` are global.

    $$ M_{ts} = [\,t < g\,] \vee [\,s < g\,] \vee [\,|t - s| \le r\,] \quad (\wedge\, [\,s \le t\,] \text{ if causal}) $$

    Global tokens read and are read by every token; a regular token reads its radius-``r`` neighbourhood.
    Kept entries grow as $(g + 2r + 1)\,T$, linear in ``T``. ``(T, T)`` bool.
    See :cite:`ainslie2020etc,beltagy2020longformer`.
    """
    check_nonnegative_int("radius", radius)
    check_nonnegative_int("n_global", n_global)
    if n_global > T:
        raise ValueError(f"n_global ({n_global}) must be <= T ({T})")
    p, s = _positions(T, None, device)
    keep = (p < n_global) | (s < n_global) | ((p - s).abs() <= radius)
    return keep & (s <= p) if causal else keep


def block_local_mask(T: int, block_size: int, *, S: int | None = None, causal: bool = False, device=None) -> torch.Tensor:
    r"""Block-local attention: a query reads the keys of its own block of ``block_size`` absolute positions.

    $$ M_{ts} = [\,\lfloor p_t / b \rfloor = \lfloor s / b \rfloor\,] \quad (\wedge\, [\,s \le p_t\,] \text{ if causal}) $$

    See :cite:`child2019sparse`.
    """
    check_positive_int("block_size", block_size)
    p, s = _positions(T, S, device)
    keep = (p // block_size) == (s // block_size)
    return keep & (s <= p) if causal else keep


def to_block_mask(mask: torch.Tensor, block_size: int) -> torch.Tensor:
    r"""The tile mask of a pattern: tile $(i, j)$ is kept when any entry of the ``block_size`` tile is kept.

    ``mask (T, S)`` or ``(H, T, S)`` bool -> ``(1 or H, ceil(T/b), ceil(S/b))`` for
    :func:`minilib.flash.block_sparse_attention`. The kernel then equals ``sdpa`` with the *expanded* tile mask,
    which is the pattern itself exactly when the pattern is a union of whole tiles (block-local, block-aligned
    globals); otherwise the kernel computes a superset, and the pattern's own mask must still be applied.
    """
    require_tensor("mask", mask, ndim=(2, 3))
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    check_positive_int("block_size", block_size)
    m = mask if mask.ndim == 3 else mask[None]
    H, T, S = m.shape
    nq, nk = -(-T // block_size), -(-S // block_size)
    padded = m.new_zeros(H, nq * block_size, nk * block_size)
    padded[:, :T, :S] = m
    return padded.view(H, nq, block_size, nk, block_size).any(dim=4).any(dim=2)


def mask_flops(mask: torch.Tensor, head_dim: int, *, value_dim: int | None = None) -> int:
    r"""Multiply-add FLOPs of attention restricted to ``mask``: $2\,n\,D$ for the scores and $2\,n\,D_v$ for the
    weighted values, $n$ the number of kept entries (the softmax's $O(n)$ is not counted)."""
    require_tensor("mask", mask)
    check_positive_int("head_dim", head_dim)
    value_dim = head_dim if value_dim is None else check_positive_int("value_dim", value_dim)
    return 2 * int(mask.sum()) * (head_dim + value_dim)
