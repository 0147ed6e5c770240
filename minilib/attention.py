r"""Softmax attention, written as directly as the equation, and the multi-head module built on it.

Shapes: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` with ``H % Hkv == 0``
(grouped-query attention: each key/value head serves ``H // Hkv`` consecutive query heads).
With ``causal=True`` and ``T != S`` the queries are the *last* ``T`` of the ``S`` positions
(bottom-right alignment, as when decoding with a cache).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from minilib._checks import check_attention_inputs, require_tensor
from minilib.mixing import TokenMixer, register_mixer
from minilib.norms import RMSNorm
from minilib.positional import rope as apply_rope


def causal_mask(T: int, S: int | None = None, *, device=None) -> torch.Tensor:
    r"""Boolean ``(T, S)`` mask, True where query ``t`` may see key ``s``: $s \le t + (S - T)$.

    Bottom-right aligned: query ``t`` sits at absolute position ``S - T + t``. See :cite:`vaswani2017attention`.
    """
    S = T if S is None else S
    if T < 0 or S < 0:
        raise ValueError(f"T and S must be non-negative, got T={T}, S={S}")
    t = torch.arange(T, device=device)[:, None]
    s = torch.arange(S, device=device)[None, :]
    return s <= t + (S - T)


def expand_kv_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    r"""Repeat each key/value head for the ``n_heads // Hkv`` query heads it serves (GQA, MQA when ``Hkv = 1``).

    ``(B, Hkv, S, D) -> (B, H, S, D)``; query head ``h`` reads key/value head ``h // (H / Hkv)``.
    """
    n_kv = x.shape[1]
    if n_heads % n_kv != 0:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of the key/value heads in x {tuple(x.shape)}")
    return x if n_kv == n_heads else x.repeat_interleave(n_heads // n_kv, dim=1)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    r"""Cut the model dimension into heads: ``(B, T, H * D) -> (B, H, T, D)``, head $h$ taking columns $hD, \dots, (h+1)D - 1$."""
    require_tensor("x", x, ndim=3)
    B, T, C = x.shape
    if n_heads < 1 or C % n_heads:
        raise ValueError(f"the last dimension of x {tuple(x.shape)} must be divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the heads again: ``(B, H, T, D) -> (B, T, H * D)``, the inverse of :func:`split_heads`."""
    require_tensor("x", x, ndim=4)
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def _scaled_scores(q, k, *, causal, mask, bias, scale) -> torch.Tensor:
    r"""$s_{ts} = \text{scale}\; q_t \cdot k_s + \text{bias}_{ts}$, with $-\infty$ where masked. ``(B, H, T, S)``."""
    check_attention_inputs(q, k, k)
    T, S, D = q.shape[2], k.shape[2], q.shape[3]
    scale = D ** -0.5 if scale is None else scale
    scores = scale * (q @ expand_kv_heads(k, q.shape[1]).transpose(-2, -1))
    if bias is not None:
        scores = scores + bias
    keep = torch.ones((), dtype=torch.bool, device=q.device)
    if causal:
        keep = keep & causal_mask(T, S, device=q.device)
    if mask is not None:
        require_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to scores {tuple(scores.shape)}") from None
        keep = keep & mask
    return scores.masked_fill(~keep, float("-inf"))


def _softmax_rows(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of scores holding -inf where masked; a fully masked row gives zeros, not NaN."""
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def attention_weights(q, k, *, causal=False, mask=None, bias=None, scale=None) -> torch.Tensor:
    r"""Attention probabilities $A = \operatorname{softmax}_s\!\left(\tfrac{q_t \cdot k_s}{\sqrt{D}} + b_{ts}\right)$ over kept keys.

    ``q (B,H,T,D)``, ``k (B,Hkv,S,D)`` -> ``(B,H,T,S)``. A row with no kept key is all zeros
    (rather than NaN). See :cite:`vaswani2017attention`.
    """
    return _softmax_rows(_scaled_scores(q, k, causal=causal, mask=mask, bias=bias, scale=scale))


def sdpa(q, k, v, *, causal=False, mask=None, bias=None, scale=None) -> torch.Tensor:
    r"""Scaled dot-product attention, the reference form that materialises the ``(B,H,T,S)`` scores.

    $$ \operatorname{Attention}(Q,K,V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{D}} + \text{bias}\right) V $$

    ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``, ``v (B,Hkv,S,Dv)`` -> ``(B,H,T,Dv)``. ``mask`` is bool,
    broadcastable to ``(B,H,T,S)``, True = keep. See :cite:`vaswani2017attention`.
    """
    check_attention_inputs(q, k, v)
    weights = attention_weights(q, k, causal=causal, mask=mask, bias=bias, scale=scale)
    return weights @ expand_kv_heads(v, q.shape[1])


def sigmoid_attention(q, k, v, *, causal=False, bias=None, scale=None) -> torch.Tensor:
    r"""Sigmoid attention: each weight is an independent gate, no normalisation over keys.

    $$ o_t = \sum_s \sigma\!\left(\text{scale}\; q_t \cdot k_s + b\right) v_s, \qquad b = -\log S \text{ by default} $$

    Shapes as :func:`sdpa`. See :cite:`ramapuram2024sigmoid`.
    """
    check_attention_inputs(q, k, v)
    bias = -math.log(max(k.shape[2], 1)) if bias is None else bias
    scores = _scaled_scores(q, k, causal=causal, mask=None, bias=bias, scale=scale)
    return torch.sigmoid(scores) @ expand_kv_heads(v, q.shape[1])


def clipped_softmax(x: torch.Tensor, *, zeta: float = 1.0, gamma: float = 0.0, dim: int = -1) -> torch.Tensor:
    r"""Clipped softmax, which lets a head put exactly zero weight on keys.

    $$ \operatorname{clip}\big((\zeta - \gamma)\operatorname{softmax}(x) + \gamma,\ 0,\ 1\big) $$

    See :cite:`bondarenko2023quantizable`.
    """
    return torch.clamp((zeta - gamma) * torch.softmax(x, dim=dim) + gamma, 0.0, 1.0)


def softmax_one(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    r"""Softmax with an extra zero logit in the denominator ("off-by-one" softmax, an implicit sink).

    $$ \operatorname{softmax}_1(x)_i = \frac{e^{x_i}}{1 + \sum_j e^{x_j}} $$

    The weights sum to less than one, so a head can attend (almost) nowhere without a sink token.
    Equal to ordinary softmax over ``x`` with one more logit fixed at 0 that points at a zero value.
    See :cite:`bondarenko2023quantizable`, :cite:`xiao2024efficient`.
    """
    require_tensor("x", x, floating=True)
    m = x.amax(dim=dim, keepdim=True).clamp_min(0.0)  # >= the implicit zero logit, finite even for all -inf rows
    e = torch.exp(x - m)
    return e / (torch.exp(-m) + e.sum(dim=dim, keepdim=True))


SCORES = ("softmax", "softmax1", "sigmoid", "clipped")


def score_weights(q, k, *, score: str = "softmax", causal=False, mask=None, bias=None, scale=None,
                  zeta: float = 1.0, gamma: float = 0.0) -> torch.Tensor:
    r"""Attention weights for each scoring function, from scores $s_{ts} = \text{scale}\, q_t \cdot k_s + b_{ts}$.

    - ``"softmax"``: $\operatorname{softmax}_s(s_{ts})$ (:func:`attention_weights`);
    - ``"softmax1"``: $e^{s_{ts}} / (1 + \sum_{s'} e^{s_{ts'}})$ (:func:`softmax_one`);
    - ``"sigmoid"``: $\sigma(s_{ts} - \log n_t)$ with $n_t$ the number of keys row $t$ may see ($S$, or
      $S - T + t + 1$ when causal) :cite:`ramapuram2024sigmoid`;
    - ``"clipped"``: $\operatorname{clip}((\zeta - \gamma)\operatorname{softmax}_s(s_{ts}) + \gamma, 0, 1)$
      :cite:`bondarenko2023quantizable`.

    Masked keys get weight 0 in every form. ``q (B,H,T,D)``, ``k (B,Hkv,S,D)`` -> ``(B,H,T,S)``.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    scores = _scaled_scores(q, k, causal=causal, mask=mask, bias=bias, scale=scale)
    if score == "softmax":
        return _softmax_rows(scores)
    if score == "clipped":
        clipped = torch.clamp((zeta - gamma) * _softmax_rows(scores) + gamma, 0.0, 1.0)
        return clipped.masked_fill(scores.isneginf(), 0.0)
    if score == "softmax1":
        return softmax_one(scores)
    T, S = q.shape[2], k.shape[2]
    # causal: row t sees S - T + t + 1 keys; normalising by that count rather than by S keeps each
    # output independent of later tokens, so cached decoding equals the full forward
    visible = torch.arange(S - T + 1, S + 1, device=q.device) if causal else torch.full((T,), S, device=q.device)
    return torch.sigmoid(scores - torch.log(visible.clamp_min(1).to(scores.dtype))[:, None])


def attend(q, k, v, *, score: str = "softmax", causal=False, mask=None, bias=None, scale=None,
           zeta: float = 1.0, gamma: float = 0.0) -> torch.Tensor:
    r"""$o_t = \sum_s w_{ts} v_s$ with the weights of :func:`score_weights`; ``score="softmax"`` is :func:`sdpa`.

    Shapes as :func:`sdpa`: ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``.
    """
    check_attention_inputs(q, k, v)
    weights = score_weights(q, k, score=score, causal=causal, mask=mask, bias=bias, scale=scale, zeta=zeta, gamma=gamma)
    return weights @ expand_kv_heads(v, q.shape[1])


def attention_entropy(weights: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    r"""Shannon entropy of each attention row, in nats, with $0 \log 0 = 0$.

    $$ \operatorname{Ent}(A_t) = -\sum_s A_{ts} \log A_{ts} $$

    ``weights (B, H, T, S) -> (B, H, T)``; average over ``B`` and ``T`` for the per-head entropy that
    :cite:`zhai2023stabilizing` track during training (collapse = entropy near 0).
    """
    require_tensor("weights", weights, floating=True)
    return -torch.special.xlogy(weights, weights).sum(dim=dim)


def kv_cache_bytes(*, n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   dtype: torch.dtype = torch.float16) -> int:
    r"""Bytes a KV cache holds: keys and values for every layer, key/value head, position and sequence.

    $$ \text{bytes} = 2 \cdot L \cdot H_{kv} \cdot D \cdot S \cdot B \cdot \text{bytes per element} $$

    MHA has $H_{kv} = H$, GQA $1 < H_{kv} < H$, MQA $H_{kv} = 1$ :cite:`ainslie2023gqa`.
    """
    sizes = dict(n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim, seq_len=seq_len, batch=batch)
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * element


class KVCache:
    """Keys and values of the positions seen so far, grown along time by :meth:`append`.

    ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``; one cache per attention layer.
    """

    def __init__(self):
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        require_tensor("k", k, ndim=4)
        require_tensor("v", v, ndim=4)
        if self._k is not None and (k.shape[:2] != self._k.shape[:2] or v.shape[:2] != self._v.shape[:2]):
            raise ValueError(f"new k {tuple(k.shape)} / v {tuple(v.shape)} do not match the cache's batch and heads {tuple(self._k.shape[:2])}")
        self._k = k if self._k is None else torch.cat([self._k, k], dim=2)
        self._v = v if self._v is None else torch.cat([self._v, v], dim=2)

    @property
    def k(self) -> torch.Tensor | None:
        return self._k

    @property
    def v(self) -> torch.Tensor | None:
        return self._v

    @property
    def length(self) -> int:
        return 0 if self._k is None else self._k.shape[2]


class MultiHeadAttention(TokenMixer):
    r"""Multi-head attention with grouped key/value heads, query-head reduction, scoring variants and gates.

    $$ \operatorname{MHA}(X) = \operatorname{Concat}(\text{head}_1, \dots, \text{head}_{H_q})\, W_O,\quad
       \text{head}_h = g_h(X) \odot \operatorname{Attention}(X W_Q^h, X W_K^{\kappa(h)}, X W_V^{\kappa(h)}) $$

    ``x (B, T, d_model) -> (B, T, d_model)``. The head size is ``D = d_model // n_heads`` (the head budget);
    ``n_q_heads`` (default ``n_heads``) query heads are computed, fewer than ``n_heads`` being Sparse
    Query Attention :cite:`filipek2025sqa`; ``n_kv_heads`` (default ``n_q_heads``) key/value heads, fewer being
    GQA/MQA :cite:`ainslie2023gqa`, with $\kappa(h) = h // (H_q / H_{kv})$. ``score`` picks the weighting of
    :func:`score_weights` (``score_kwargs`` holds ``zeta``/``gamma`` for ``"clipped"``). ``gate=True`` multiplies
    each head's output by $g_h(x_t) = \sigma(w_h \cdot x_t + c_h)$, so a head can output nothing without a
    sink token :cite:`bondarenko2023quantizable`; otherwise $g_h = 1$. ``rope_scaling`` is passed to
    :func:`minilib.positional.rope`. With a :class:`KVCache` the new keys/values are appended and the
    queries attend to the whole cache. With ``memory (B, S, d_model)`` keys and values are projected from
    it instead (cross-attention, no RoPE). See :cite:`vaswani2017attention`, :cite:`su2021roformer`.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None, n_q_heads: int | None = None,
                 bias: bool = False, qk_norm: bool = False, rope: bool = False, rope_base: float = 10000.0,
                 rope_scaling: tuple | None = None, score: str = "softmax", score_kwargs: dict | None = None,
                 gate: bool = False):
        super().__init__()
        n_q_heads = n_heads if n_q_heads is None else n_q_heads
        n_kv_heads = n_q_heads if n_kv_heads is None else n_kv_heads
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if not 1 <= n_q_heads <= n_heads:
            raise ValueError(f"n_q_heads must be in [1, n_heads={n_heads}], got {n_q_heads}")
        if n_kv_heads < 1 or n_q_heads % n_kv_heads != 0:
            raise ValueError(f"n_q_heads ({n_q_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_q_heads, n_kv_heads, d_model // n_heads
        if rope and self.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got d_model / n_heads = {self.head_dim}")
        self.rope, self.rope_base, self.rope_scaling = rope, rope_base, rope_scaling
        self.score, self.score_kwargs = score, dict(score_kwargs or {})
        self.wq = nn.Linear(d_model, n_q_heads * self.head_dim, bias=bias)
        self.wk = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(n_q_heads * self.head_dim, d_model, bias=bias)
        self.wg = nn.Linear(d_model, n_q_heads) if gate else None
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else None

    def new_cache(self) -> KVCache:
        """An empty :class:`KVCache`: decoding appends each new position's keys and values to it."""
        return KVCache()

    def project_q(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Queries ``(B, H_q, T, D)`` of ``x (B,T,d_model)`` at ``positions (T,)``, normed and RoPE applied as configured."""
        q = split_heads(self.wq(x), self.n_heads)
        if self.q_norm is not None:
            q = self.q_norm(q)
        return apply_rope(q, positions, base=self.rope_base, scaling=self.rope_scaling) if self.rope else q

    def project_qkv(self, x: torch.Tensor, positions: torch.Tensor):
        """Queries, keys and values of ``x (B,T,d_model)`` at ``positions (T,)``, per head, RoPE applied."""
        k = split_heads(self.wk(x), self.n_kv_heads)
        v = split_heads(self.wv(x), self.n_kv_heads)
        if self.k_norm is not None:
            k = self.k_norm(k)
        if self.rope:
            k = apply_rope(k, positions, base=self.rope_base, scaling=self.rope_scaling)
        return self.project_q(x, positions), k, v

    def weights(self, q: torch.Tensor, k: torch.Tensor, *, causal: bool = True, bias: torch.Tensor | None = None) -> torch.Tensor:
        """This module's attention weights ``(B, H_q, T, S)`` for projected ``q``, ``k`` (see :func:`score_weights`)."""
        return score_weights(q, k, score=self.score, causal=causal, bias=bias, **self.score_kwargs)

    def combine(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Gate (if any) and project the head outputs ``(B, H_q, T, D)`` of the queries ``x (B, T, d_model)``."""
        if self.wg is not None:
            heads = heads * torch.sigmoid(self.wg(x)).transpose(1, 2)[..., None]
        return self.wo(merge_heads(heads))

    def forward(self, x: torch.Tensor, *, causal: bool = True, cache: KVCache | None = None,
                positions: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x (B, T, d_model) -> (B, T, d_model)``. ``kv=(k, v)``, each ``(B, H_kv, S, D)`` and already projected
        (and rotated) by another layer, replaces this module's own keys and values: only the queries are computed,
        at positions ``S - T .. S - 1`` unless ``positions`` says otherwise (cross-layer KV sharing)."""
        require_tensor("x", x, ndim=3, floating=True)
        if memory is not None:
            return self._cross(x, memory)
        if kv is not None:
            return self._shared_kv(x, kv, causal=causal, cache=cache, positions=positions, bias=bias)
        B, T, _ = x.shape
        past = 0 if cache is None else cache.length
        if positions is None:
            positions = torch.arange(past, past + T, device=x.device)
        q, k, v = self.project_qkv(x, positions)
        if cache is not None:
            cache.append(k, v)
            k, v = cache.k, cache.v
        return self.combine(x, attend(q, k, v, score=self.score, causal=causal, bias=bias, **self.score_kwargs))

    def _shared_kv(self, x, kv, *, causal, cache, positions, bias) -> torch.Tensor:
        if cache is not None:
            raise ValueError("a layer given kv=(k, v) from another layer keeps no cache of its own; pass cache=None")
        if not isinstance(kv, (tuple, list)) or len(kv) != 2:
            raise TypeError(f"kv must be a pair (k, v) of tensors, got {type(kv).__name__}")
        k, v = kv
        require_tensor("kv[0]", k, ndim=4, floating=True)
        if k.shape[0] != x.shape[0] or k.shape[1] != self.n_kv_heads or k.shape[3] != self.head_dim:
            raise ValueError(f"kv must hold (B={x.shape[0]}, n_kv_heads={self.n_kv_heads}, S, head_dim={self.head_dim}) "
                             f"keys for x {tuple(x.shape)}, got k {tuple(k.shape)}")
        T, S = x.shape[1], k.shape[2]
        if positions is None:
            positions = torch.arange(S - T, S, device=x.device)
        q = self.project_q(x, positions)
        return self.combine(x, attend(q, k, v, score=self.score, causal=causal, bias=bias, **self.score_kwargs))

    def _cross(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        require_tensor("memory", memory, ndim=3, floating=True)
        if memory.shape[0] != x.shape[0] or memory.shape[2] != x.shape[2]:
            raise ValueError(f"memory must share batch and d_model with x, got x {tuple(x.shape)}, memory {tuple(memory.shape)}")
        q = split_heads(self.wq(x), self.n_heads)
        k = split_heads(self.wk(memory), self.n_kv_heads)
        v = split_heads(self.wv(memory), self.n_kv_heads)
        return self.combine(x, attend(q, k, v, score=self.score, **self.score_kwargs))


class MixtureOfHeadAttention(MultiHeadAttention):
    r"""Mixture-of-Head attention: a router weights each token's heads and keeps only its top-k routed heads.

    $$ \operatorname{MoH}(x_t) = \sum_{h=1}^{H} g_h(x_t)\, \text{head}_h(x_t)\, W_O^h, \qquad
       g_h = \begin{cases} \alpha_1 \operatorname{Softmax}(W_s x_t)_h & h \le H_s \text{ (shared)} \\
       \alpha_2 \operatorname{Softmax}(W_r x_t)_h & h > H_s,\ (W_r x_t)_h \in \operatorname{TopK}(W_r x_t) \\
       0 & \text{otherwise,} \end{cases} \qquad [\alpha_1, \alpha_2] = \operatorname{Softmax}(W_h x_t) $$

    The first ``n_shared`` heads $H_s$ are always on; a router $W_r$ (``d_model -> n_heads - n_shared``)
    picks ``top_k`` of the rest per token, and their weights are the router's softmax over *all* routed
    heads (not renormalised over the chosen ones). With ``n_shared = 0`` there is no $\alpha$: $g_h$ is the
    routed line with $\alpha_2 = 1$. So ``n_shared + top_k`` of the ``n_heads`` heads work for each token.
    Everything else (projections, GQA via ``n_kv_heads``, RoPE, caches, ``kv=``) is
    :class:`MultiHeadAttention`'s; ``**kwargs`` go to it. This teaching form computes every head and
    zeroes the unchosen ones, so it saves no FLOPs: the saving needs the chosen heads gathered per token.
    The paper's load-balancing loss is left out. By default the weights are the paper's equation, whose
    routed weights sum to less than one, so at initialisation (a near-uniform router) each head enters
    the output about $1/H$ as strongly as in MHA. ``renormalize=True`` follows the authors' released code
    instead: the chosen routed weights are divided by their sum and multiplied by ``top_k``, the shared
    weights multiplied by ``n_shared``, and $\alpha$ by 2, so a uniform router gives every working head
    weight 1, as in MHA.

    ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`jin2024moh`.
    """

    def __init__(self, d_model: int, n_heads: int, *, top_k: int, n_shared: int = 0, n_kv_heads: int | None = None,
                 rope: bool = False, renormalize: bool = False, **kwargs):
        super().__init__(d_model, n_heads, n_kv_heads=n_kv_heads, rope=rope, **kwargs)
        if not isinstance(n_shared, int) or not 0 <= n_shared < self.n_heads:
            raise ValueError(f"n_shared must be an int in [0, n_heads={self.n_heads}), got {n_shared!r}")
        n_routed = self.n_heads - n_shared
        if not isinstance(top_k, int) or not 1 <= top_k <= n_routed:
            raise ValueError(f"top_k must be an int in [1, {n_routed}] (the n_heads={self.n_heads} minus "
                             f"n_shared={n_shared} routed heads), got {top_k!r}")
        self.top_k, self.n_shared, self.renormalize = top_k, n_shared, renormalize
        self.router = nn.Linear(d_model, n_routed, bias=False)
        self.shared_router = nn.Linear(d_model, n_shared, bias=False) if n_shared > 1 else None  # softmax of one is 1
        self.group_router = nn.Linear(d_model, 2, bias=False) if n_shared else None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Head weights $g$ and the heads switched on, both ``(B, T, n_heads)``, for tokens ``x (B, T, d_model)``.

        ``active`` is True for the shared heads and the ``top_k`` routed heads of each token (a head with a
        tiny softmax weight still counts as working).
        """
        require_tensor("x", x, ndim=3, floating=True)
        logits = self.router(x)
        chosen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(self.top_k, dim=-1).indices, True)
        routed = torch.softmax(logits, dim=-1) * chosen
        if self.renormalize:
            routed = self.top_k * routed / routed.sum(dim=-1, keepdim=True)
        if self.n_shared == 0:
            return routed, chosen
        alpha = torch.softmax(self.group_router(x), dim=-1)
        shared = torch.ones_like(alpha[..., :1]) if self.shared_router is None else torch.softmax(self.shared_router(x), dim=-1)
        if self.renormalize:
            alpha, shared = 2 * alpha, self.n_shared * shared
        gates = torch.cat([alpha[..., :1] * shared, alpha[..., 1:] * routed], dim=-1)
        return gates, torch.cat([torch.ones_like(shared, dtype=torch.bool), chosen], dim=-1)

    def combine(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Weight the head outputs ``(B, H, T, D)`` by :meth:`route` of ``x``, then gate (if any) and project as MHA does."""
        gates, _ = self.route(x)
        return super().combine(x, heads * gates.transpose(1, 2)[..., None])


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                      scale: float | None = None) -> torch.Tensor:
    r"""Softmax attention with query heads grouped over their shared key/value head, never copying keys or values.

    $$ o_{h,t} = \sum_s \operatorname{softmax}_s\!\left(\text{scale}\; q_{h,t} \cdot k_{\kappa(h),s}\right) v_{\kappa(h),s},
       \qquad \kappa(h) = \lfloor h / G \rfloor,\ G = H / H_{kv} $$

    Same result as :func:`sdpa`, which first repeats each key/value head $G$ times (:func:`expand_kv_heads`);
    here the $G$ query heads of a group are stacked and multiply the group's one key/value head, so a decoding
    step reads each cached head once: the memory traffic that GQA/MQA save :cite:`ainslie2023gqa`,
    :cite:`shazeer2019fast`. ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``, ``v (B,Hkv,S,Dv)`` -> ``(B,H,T,Dv)``.
    """
    check_attention_inputs(q, k, v)
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    scale = D ** -0.5 if scale is None else scale
    scores = scale * (q.reshape(B, Hkv, (H // Hkv) * T, D) @ k.transpose(-2, -1))  # rows: (group member, t)
    if causal:
        keep = causal_mask(T, S, device=q.device).repeat(H // Hkv, 1)
        scores = scores.masked_fill(~keep, float("-inf"))
    return (_softmax_rows(scores) @ v).reshape(B, H, T, v.shape[-1])


def _attention_mixer(cls: type[MultiHeadAttention]):
    def factory(config, layer: int) -> MultiHeadAttention:
        return cls(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                   **config.mixer_kwargs)
    return factory


register_mixer("attention", _attention_mixer(MultiHeadAttention))
register_mixer("moh", _attention_mixer(MixtureOfHeadAttention))
