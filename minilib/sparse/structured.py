r"""Structured sparse attention: Combiner's block summaries, S2-Attention's per-head strided block masks and
sentinel-token span compression. Shapes as :func:`minilib.attention.sdpa`."""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_nonnegative_int, check_positive_int, default_scale
from minilib.attention import expand_kv_heads

__all__ = ["combiner_weights", "combiner_attention", "combiner_score_count", "s2_block_masks", "sentinel_mask"]


def combiner_weights(q, k, *, block_size: int, scale: float | None = None) -> torch.Tensor:
    r"""Combiner-Fixed's causal attention weights ``(B, H, T, T)``: one softmax over the keys of the query's own
    block (direct) and the mean-pooled summaries of the earlier blocks (indirect); a summary's probability is
    spread evenly over its block's keys.

    $$ e_{ts} = \exp(\text{scale}\, q_t \cdot k_s)\ (s \text{ in block}(t),\ s \le t), \qquad
       e_{tj} = \exp(\text{scale}\, q_t \cdot \bar k_j)\ (j < \text{block}(t)) $$
    $$ A_{ts} = e_{ts} / Z_t \text{ (direct)}, \qquad A_{ts} = e_{t,\text{block}(s)} / (b\, Z_t) \text{ (indirect)} $$

    Every earlier key gets non-zero weight (full attention capability) while only $b$ direct scores and $T/b$
    summary scores are computed per query. ``T`` a multiple of ``block_size``. See :cite:`ren2021combiner`.
    """
    check_attention_inputs(q, k, k)
    check_positive_int("block_size", block_size)
    B, H, T, D = q.shape
    if T % block_size or k.shape[2] != T:
        raise ValueError(f"self-attention with T ({T}) a multiple of block_size ({block_size}) needed, got k {tuple(k.shape)}")
    n = T // block_size
    k = expand_kv_heads(k, H)
    scale = default_scale(D, scale)
    block = torch.arange(T) // block_size
    summaries = k.view(B, H, n, block_size, D).mean(dim=3)  # (B, H, n, D)
    direct = (scale * q @ k.transpose(-2, -1)).masked_fill(~((block[:, None] == block[None, :]) &
                                                            (torch.arange(T)[None, :] <= torch.arange(T)[:, None])), float("-inf"))
    indirect = (scale * q @ summaries.transpose(-2, -1)).masked_fill(~(torch.arange(n)[None, :] < block[:, None]), float("-inf"))
    p = torch.softmax(torch.cat([direct, indirect], dim=-1), dim=-1)
    return p[..., :T] + (p[..., T:] / block_size).repeat_interleave(block_size, dim=-1)


def combiner_attention(q, k, v, *, block_size: int, scale: float | None = None) -> torch.Tensor:
    r"""Combiner-Fixed causal attention: :func:`combiner_weights` applied to ``v`` (the indirect part equals the
    summary probabilities times the block means of ``v``). ``(B,H,T,D), (B,Hkv,T,D), (B,Hkv,T,Dv) -> (B,H,T,Dv)``.
    See :cite:`ren2021combiner`."""
    check_attention_inputs(q, k, v)
    return combiner_weights(q, k, block_size=block_size, scale=scale) @ expand_kv_heads(v, q.shape[1])


def combiner_score_count(T: int, block_size: int) -> int:
    r"""Scores Combiner-Fixed computes for ``T`` causal queries: $\sum_t (t \bmod b + 1) + \lfloor t / b \rfloor$."""
    check_positive_int("T", T)
    check_positive_int("block_size", block_size)
    t = torch.arange(T)
    return int((t % block_size + 1 + t // block_size).sum())


def s2_block_masks(n_blocks: int, n_heads: int, *, n_local: int = 1, causal: bool = True) -> torch.Tensor:
    r"""Heterogeneous context sharding (S2-Attention): head $h$ reads the key blocks $j \equiv h \pmod H$ plus
    the ``n_local`` most recent blocks, so each head reads about $1/H$ of the context and the heads together
    read all of it.

    $$ M^{(h)}_{ij} = \big([\,j \bmod H = h\,] \vee [\,0 \le i - j < n_\text{local}\,]\big) \wedge [\,j \le i\,] $$

    Returns ``(H, n_blocks, n_blocks)`` bool for :func:`minilib.flash.block_sparse_attention`.
    See :cite:`lin2024s2`.
    """
    check_positive_int("n_blocks", n_blocks)
    check_positive_int("n_heads", n_heads)
    check_nonnegative_int("n_local", n_local)
    i, j = torch.arange(n_blocks)[:, None], torch.arange(n_blocks)[None, :]
    h = torch.arange(n_heads)[:, None, None]
    keep = (j % n_heads == h) | ((i - j >= 0) & (i - j < n_local))
    return keep & (j <= i) if causal else keep


def sentinel_mask(T: int, span: int) -> torch.Tensor:
    r"""Span compression with sentinel tokens: positions form groups of ``span`` tokens followed by one sentinel;
    a token reads the earlier tokens of its own group and every earlier sentinel, never a finished span.

    $$ M_{ts} = [\,s \le t\,] \wedge \big([\,g(s) = g(t)\,] \vee [\,s \bmod (n + 1) = n\,]\big), \quad g(s) = \lfloor s / (n+1) \rfloor $$

    The sentinel reads its span, so the span's information can flow into it; afterwards only the sentinel's keys
    and values are needed: a finished group's cache shrinks from $n + 1$ entries to 1. ``(T, T)`` bool.
    See :cite:`ren2023context`.
    """
    check_positive_int("T", T)
    check_positive_int("span", span)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    group = span + 1
    return (s <= t) & ((s // group == t // group) | (s % group == span))
