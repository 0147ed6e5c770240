r"""Structured sparse attention: Combiner's block summaries (and :class:`CombinerAttention`, the ``"combiner"`` token
mixer, registered on import), S2-Attention's per-head strided block masks and sentinel-token span compression.
Shapes as :func:`minilib.attention.sdpa`."""
from __future__ import annotations

import torch

from minilib._checks import (check_attention_inputs, check_divisible, check_nonnegative_int,
                             check_positive_int, default_scale)
from minilib.attention import MultiHeadAttention, expand_kv_heads
from minilib.mixing import register_mixer
from minilib.sparse.layers import _project_new_positions

__all__ = ["combiner_weights", "combiner_attention", "combiner_attention_cached", "combiner_score_count",
           "CombinerAttention", "CombinerCache", "s2_block_masks", "sentinel_mask", "fit_block",
           "fit_score_count"]


def _combiner_masks(i: torch.Tensor, n_keys: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Combiner's two causal masks for queries at positions ``i``: the keys of the query's own block up to itself,
    ``(len(i), n_keys)``, and the summaries of the blocks before it, ``(len(i), n_keys // block_size)``."""
    j = torch.arange(n_keys)
    own = (j[None, :] // block_size == i[:, None] // block_size) & (j[None, :] <= i[:, None])
    earlier = torch.arange(n_keys // block_size)[None, :] < i[:, None] // block_size
    return own, earlier


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
    own, earlier = _combiner_masks(torch.arange(T), T, block_size)
    summaries = k.view(B, H, n, block_size, D).mean(dim=3)  # (B, H, n, D)
    direct = (scale * q @ k.transpose(-2, -1)).masked_fill(~own, float("-inf"))
    indirect = (scale * q @ summaries.transpose(-2, -1)).masked_fill(~earlier, float("-inf"))
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


class CombinerCache:
    """Combiner's decoding state for one layer: the mean key and value of every completed block
    (``summary_k``, ``summary_v``: ``(B, Hkv, n_blocks, D)``) and the keys and values of the block being filled
    (``block_k``, ``block_v``: ``(B, Hkv, r, D)``, ``r < block_size``). It grows by one summary per block: $T/b + b$
    positions' worth at context $T$ instead of a KV cache's $T$."""

    def __init__(self):
        self.summary_k = self.summary_v = self.block_k = self.block_v = None
        self.length = 0


def combiner_attention_cached(q, k, v, cache: CombinerCache, *, block_size: int, scale: float | None = None):
    r"""Combiner-Fixed for ``T`` new positions that follow the ``cache.length`` cached ones: the same weights as
    :func:`combiner_weights` over the whole sequence, read from the cache's block summaries and open block. The new
    queries ``q (B, H, T, D)``, keys and values ``(B, Hkv, T, D)``; returns ``(B, H, T, Dv)`` and updates ``cache``
    (completed blocks become summaries). See :cite:`ren2021combiner`."""
    check_attention_inputs(q, k, v)
    check_positive_int("block_size", block_size)
    if not isinstance(cache, CombinerCache):
        raise TypeError(f"cache must be a CombinerCache, got {type(cache).__name__}")
    if cache.block_k is not None:
        k, v = torch.cat([cache.block_k, k], dim=2), torch.cat([cache.block_v, v], dim=2)
    B, H, T, D = q.shape
    L = k.shape[2]  # the open block's earlier positions, then the new ones: local position 0 starts a block
    pad = -L % block_size
    k_pad, v_pad = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (k, v))
    n = (L + pad) // block_size
    sk, sv = (t.view(B, t.shape[1], n, block_size, t.shape[-1]).mean(dim=3) for t in (k_pad, v_pad))
    scale = default_scale(D, scale)
    own, earlier = _combiner_masks(torch.arange(L - T, L), L + pad, block_size)
    direct = (scale * q @ expand_kv_heads(k_pad, H).transpose(-2, -1)).masked_fill(~own, float("-inf"))
    local = (scale * q @ expand_kv_heads(sk, H).transpose(-2, -1)).masked_fill(~earlier, float("-inf"))
    values = [expand_kv_heads(v_pad, H), expand_kv_heads(sv, H)]
    scores = [direct, local]
    if cache.summary_k is not None:  # every earlier block precedes every new query
        scores.append(scale * q @ expand_kv_heads(cache.summary_k, H).transpose(-2, -1))
        values.append(expand_kv_heads(cache.summary_v, H))
    p = torch.softmax(torch.cat(scores, dim=-1), dim=-1)
    out = sum(w @ val for w, val in zip(p.split([s.shape[-1] for s in scores], dim=-1), values))
    done = L // block_size
    if done:
        news = (sk[:, :, :done], sv[:, :, :done])
        cache.summary_k, cache.summary_v = news if cache.summary_k is None else (
            torch.cat([cache.summary_k, news[0]], dim=2), torch.cat([cache.summary_v, news[1]], dim=2))
    cache.block_k, cache.block_v = k[:, :, done * block_size:], v[:, :, done * block_size:]
    cache.length += T
    return out


class CombinerAttention(MultiHeadAttention):
    r"""Combiner-Fixed as a causal token mixer: multi-head attention whose heads are :func:`combiner_attention`
    over blocks of ``block_size`` positions.

    $$ \operatorname{head}_h = A^{\text{Combiner}}(Q_h, K_h)\, V_h $$

    A length that is not a multiple of ``block_size`` is padded at the end; causality keeps the padding out of
    every real position (a summary is read only by later blocks). With a cache from :meth:`new_cache` (a
    :class:`CombinerCache`) ``x`` holds only the new positions, read by :func:`combiner_attention_cached`.
    Same parameters as :class:`~minilib.attention.MultiHeadAttention`. See :cite:`ren2021combiner`.
    """

    def __init__(self, d_model: int, n_heads: int, *, block_size: int = 8, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        if self.score != "softmax":
            raise ValueError(f"CombinerAttention supports score='softmax' only, got {self.score!r}")
        self.block_size = check_positive_int("block_size", block_size)

    def new_cache(self) -> CombinerCache:
        return CombinerCache()

    def forward(self, x: torch.Tensor, *, cache: CombinerCache | None = None, **unsupported) -> torch.Tensor:
        """``x (B, T, d_model) -> (B, T, d_model)``, causal; with ``cache`` only the new positions."""
        q, k, v = _project_new_positions(self, x, cache, CombinerCache, unsupported)
        if cache is not None:
            return self.combine(x, combiner_attention_cached(q, k, v, cache, block_size=self.block_size))
        T = x.shape[1]
        pad = -T % self.block_size
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        return self.combine(x, combiner_attention(q, k, v, block_size=self.block_size)[:, :, :T])


def _combiner_mixer(config, layer: int) -> CombinerAttention:
    return CombinerAttention(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                             **config.mixer_kwargs)


register_mixer("combiner", _combiner_mixer)


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


def _attend_rows(q: torch.Tensor, kv: torch.Tensor, scale: float) -> torch.Tensor:
    """Single-head softmax attention with keys = values = ``kv``: ``(..., T, d), (..., S, d) -> (..., T, d)``."""
    return torch.softmax(scale * q @ kv.transpose(-2, -1), dim=-1) @ kv


def fit_block(x: torch.Tensor, latents: torch.Tensor, *, group_size: int, scale: float | None = None):
    r"""The attention pattern of one FIT block (Far-reaching Interleaved Transformers), without projections or MLPs.

    Data tokens ``x (B, L, d)`` form $G = L / n$ groups of $n$ = ``group_size``; each group owns $m$ latent tokens,
    ``latents (B, G, m, d)``. In order, each step a residual update with single-head softmax attention
    (keys = values):

    1. local: tokens attend within their group, $x_g \mathrel{+}= \operatorname{attn}(x_g, x_g)$ ($n^2$ scores per group);
    2. write: latents read their group, $z_g \mathrel{+}= \operatorname{attn}(z_g, x_g)$ ($m n$);
    3. global: all $G m$ latents attend to each other, $z \mathrel{+}= \operatorname{attn}(z, z)$ ($(G m)^2$);
    4. read: tokens read their group's latents, $x_g \mathrel{+}= \operatorname{attn}(x_g, z_g)$ ($n m$).

    Information crosses groups only through the latents. Non-causal. Returns ``(x, latents)`` of the same shapes;
    :func:`fit_score_count` counts the scores. See :cite:`chen2023fit`.
    """
    for name, t, ndim in (("x", x, 3), ("latents", latents, 4)):
        if not isinstance(t, torch.Tensor) or t.ndim != ndim or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor with {ndim} dims, got "
                            f"{getattr(t, 'shape', type(t).__name__)}")
    check_positive_int("group_size", group_size)
    B, L, d = x.shape
    if L % group_size or latents.shape[:2] != (B, L // group_size) or latents.shape[-1] != d:
        raise ValueError(f"x (B, L, d) with L a multiple of group_size ({group_size}) and latents (B, L / group_size, m, d) "
                         f"needed, got x {tuple(x.shape)}, latents {tuple(latents.shape)}")
    scale = default_scale(d, scale)
    G, m = L // group_size, latents.shape[2]
    xg = x.reshape(B, G, group_size, d)
    xg = xg + _attend_rows(xg, xg, scale)
    z = latents + _attend_rows(latents, xg, scale)
    z = z + _attend_rows(z.reshape(B, G * m, d), z.reshape(B, G * m, d), scale).view(B, G, m, d)
    xg = xg + _attend_rows(xg, z, scale)
    return xg.reshape(B, L, d), z


def fit_score_count(L: int, group_size: int, n_latents: int) -> int:
    r"""Attention scores of one :func:`fit_block`: $L n$ (local) $+\ 2 L m$ (write, read) $+\ (L m / n)^2$ (global).

    With $n \propto L^{1/3}$ both the local and the global term grow as $L^{4/3}$ (full attention: $L^2$)."""
    check_positive_int("L", L)
    check_positive_int("group_size", group_size)
    check_positive_int("n_latents", n_latents)
    check_divisible("L", L, "group_size", group_size)
    return L * group_size + 2 * L * n_latents + (L // group_size * n_latents) ** 2
