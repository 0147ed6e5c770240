r"""KV-cache policies: which keys and values a decoder keeps when its cache has a token budget.

One interface serves every policy (a :class:`CachePolicy` is a drop-in for :class:`minilib.attention.KVCache`):

- ``append(k, v)`` adds the new positions' keys and values ``(B, Hkv, T, D)``;
- ``keys_values() -> (k, v, positions)``: the held slots, ``positions (B, Hkv, S)`` the absolute position
  of each slot (the newest merged position for a merged slot); each key/value head keeps its own slots;
- the new queries attend to the held slots (:func:`cached_attention`), restricted by ``select(scores)``;
- ``observe(weights)`` hands the policy those attention weights ``(B, H, T, S)``; it updates its statistics
  and evicts (or merges) down to ``budget`` slots.

So between steps a policy holds at most ``budget`` slots and a step attends to at most ``budget + T``; with
``delay`` $d > 0$ (the evicting policies: window, H2O/SWA, TOVA) a slot chosen for eviction stays readable for $d$
more steps before it goes, so at most ``budget + d`` slots are held between single-token steps.
``length`` counts every position seen (the model reads the next position from it), ``size`` the slots held.
Scores of grouped query heads are averaged per key/value head.
"""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_nonnegative_int, check_positive_int, default_scale, require_tensor
from minilib.attention import attention_weights, expand_kv_heads
from minilib.compress import quantize_int

__all__ = ["CachePolicy", "FullCache", "WindowCache", "SinkCache", "HeavyHitterCache", "TOVACache", "MergeCache",
           "QuantizedCache", "RetrievalCache", "swa_cache_policy", "make_policy", "POLICIES", "cached_attention"]


class CachePolicy:
    r"""Keeps every slot (no budget): the base of the policies, equal to a plain :class:`~minilib.attention.KVCache`.

    ``delay`` (evicting subclasses): *delayed eviction* as in Dynamic Memory Sparsification. When more than
    ``budget`` slots are live, the live slots outside the ``budget`` of highest priority are marked at step $t$ (the
    number of positions seen) and leave at step $t + d$; until then the queries still read them, and they no
    longer compete for the budget. ``delay=0`` evicts at once. See :cite:`lancucki2025inference`.
    """

    name = "full"

    def __init__(self, budget: int | None = None, *, delay: int = 0):
        self.budget = None if budget is None else check_positive_int("budget", budget)
        self.delay = check_nonnegative_int("delay", delay)
        self._k = self._v = self._pos = None
        self._leaves = None  # per slot: the step at which a slot marked for eviction leaves (inf: not marked)
        self._seen = 0

    @property
    def length(self) -> int:
        return self._seen

    @property
    def size(self) -> int:
        return 0 if self._pos is None else self._pos.shape[2]

    @property
    def k(self):
        return self.keys_values()[0]

    @property
    def v(self):
        return self.keys_values()[1]

    def keys_values(self):
        """``(k (B,Hkv,S,D), v (B,Hkv,S,Dv), positions (B,Hkv,S))`` of the held slots."""
        return self._k, self._v, self._pos

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        require_tensor("k", k, ndim=4, floating=True)
        require_tensor("v", v, ndim=4, floating=True)
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree in batch, heads and time")
        if self._pos is not None and k.shape[:2] != self._pos.shape[:2]:
            raise ValueError(f"new k {tuple(k.shape)} does not match the cache's batch and heads {tuple(self._pos.shape[:2])}")
        B, Hkv, T, _ = k.shape
        pos = torch.arange(self._seen, self._seen + T, device=k.device).expand(B, Hkv, T)
        self._store(k, v, pos)
        self._seen += T

    def _store(self, k, v, pos) -> None:
        cat = (lambda old, new: new if old is None else torch.cat([old, new], dim=2))
        self._k, self._v, self._pos = cat(self._k, k), cat(self._v, v), cat(self._pos, pos)
        self._leaves = cat(self._leaves, torch.full(pos.shape, float("inf"), device=pos.device))
        self._grow(k.shape[2])

    def _grow(self, n: int) -> None:
        """Extend per-slot statistics by ``n`` new slots (none here)."""

    def select(self, scores: torch.Tensor) -> torch.Tensor | None:
        """Which held keys each query reads, ``(B, H, T, S)`` bool, given the (masked) scores; ``None`` = all."""
        return None

    def observe(self, weights: torch.Tensor) -> None:
        """Take the new queries' attention ``(B, H, T, S)`` over the held slots and evict down to the budget."""
        require_tensor("weights", weights, ndim=4, floating=True)
        B, H, T, S = weights.shape
        Hkv = self._pos.shape[1]
        per_kv = weights.view(B, Hkv, H // Hkv, T, S).mean(dim=2)  # (B, Hkv, T, S)
        self._accumulate(per_kv)
        if self.budget is not None and self.size > self.budget:
            self._evict(per_kv)

    def _accumulate(self, weights: torch.Tensor) -> None:
        """Update per-slot statistics with the attention ``(B, Hkv, T, S)`` the slots just received."""

    def _priority(self, weights: torch.Tensor) -> torch.Tensor:
        """``(B, Hkv, S)``: the ``budget`` slots of highest priority are kept."""
        raise NotImplementedError

    def _evict(self, weights: torch.Tensor) -> None:
        priority = self._priority(weights)
        if not self.delay:
            self._gather(priority.topk(self.budget, dim=-1).indices.sort(dim=-1).values)
            return
        live = torch.isinf(self._leaves)
        if int(live[0, 0].sum()) > self.budget:  # every head holds as many live slots
            top = priority.masked_fill(~live, float("-inf")).topk(self.budget, dim=-1).indices
            marked = live & ~torch.zeros_like(live).scatter_(-1, top, True)
            self._leaves = torch.where(marked, torch.full_like(self._leaves, self._seen + self.delay), self._leaves)
        stay = self._leaves > self._seen
        slots = torch.arange(self.size, device=stay.device).expand_as(stay)
        self._gather(torch.where(stay, slots, slots + self.size).sort(dim=-1).values[..., :int(stay[0, 0].sum())])

    def _gather(self, index: torch.Tensor) -> None:
        """Keep the slots ``index (B, Hkv, n)`` (per head, in order) of keys, values, positions and statistics."""
        take = (lambda x: torch.gather(x, 2, index[..., None].expand(-1, -1, -1, x.shape[-1])))
        self._k, self._v = take(self._k), take(self._v)
        self._pos, self._leaves = torch.gather(self._pos, 2, index), torch.gather(self._leaves, 2, index)
        for name in self._slot_stats:
            setattr(self, name, torch.gather(getattr(self, name), 2, index))

    _slot_stats: tuple[str, ...] = ()


class FullCache(CachePolicy):
    """Keeps every position: exact attention, memory growing with the sequence."""

    def __init__(self):
        super().__init__(None)


class WindowCache(CachePolicy):
    r"""Keeps the ``budget`` most recent positions: with one query per step, the step reads
    :func:`~minilib.sparse.sliding_window_mask` with window ``budget + 1``. See :cite:`beltagy2020longformer`."""

    name = "window"

    def _priority(self, weights):
        return self._pos.to(weights.dtype)


class SinkCache(CachePolicy):
    r"""StreamingLLM: the first ``n_sinks`` positions (attention sinks) plus the ``budget - n_sinks`` most recent.

    See :cite:`xiao2024efficient`.
    """

    name = "sinks"

    def __init__(self, budget: int, *, n_sinks: int = 4):
        super().__init__(check_positive_int("budget", budget))
        if check_nonnegative_int("n_sinks", n_sinks) > budget:
            raise ValueError(f"n_sinks must be in [0, budget={budget}], got {n_sinks}")
        self.n_sinks = n_sinks

    def _priority(self, weights):
        pos = self._pos.to(weights.dtype)
        return torch.where(self._pos < self.n_sinks, pos + self._seen + 1, pos)


class HeavyHitterCache(CachePolicy):
    r"""H2O: keep the ``n_recent`` most recent positions plus the heavy hitters, the slots with the largest
    attention accumulated over every query so far (each step adds the weights it gave them).

    $$ \text{score}_s = \sum_{t \,\ge\, s} \bar a_{ts} $$

    with $\bar a$ averaged over the query heads of a key/value head. ``n_recent`` defaults to half the budget.
    See :cite:`zhang2023h2o`.
    """

    name = "heavy_hitter"
    _slot_stats = ("_score",)

    def __init__(self, budget: int, *, n_recent: int | None = None, delay: int = 0):
        super().__init__(check_positive_int("budget", budget), delay=delay)
        n_recent = budget // 2 if n_recent is None else check_nonnegative_int("n_recent", n_recent)
        if n_recent > budget:
            raise ValueError(f"n_recent must be <= budget={budget}, got {n_recent}")
        self.n_recent = n_recent
        self._score = None

    def _grow(self, n):
        new = self._pos.new_zeros(*self._pos.shape[:2], n, dtype=self._k.dtype)
        self._score = new if self._score is None else torch.cat([self._score, new], dim=2)

    def _accumulate(self, weights):
        self._score = self._score + weights.sum(dim=2).to(self._score.dtype)

    def _priority(self, weights):
        recent = self._pos >= self._seen - self.n_recent
        return torch.where(recent, torch.full_like(self._score, float("inf")), self._score)


def swa_cache_policy(budget: int, *, recent_fraction: float = 0.5, delay: int = 0) -> HeavyHitterCache:
    r"""ALISA's Sparse Window Attention cache: the most recent ``recent_fraction`` of the budget plus the tokens
    of highest accumulated attention (the same rule as :class:`HeavyHitterCache`; ``delay``: see
    :class:`CachePolicy`). See :cite:`zhao2024alisa`."""
    if not 0.0 <= recent_fraction <= 1.0:
        raise ValueError(f"recent_fraction must be in [0, 1], got {recent_fraction!r}")
    return HeavyHitterCache(budget, n_recent=round(recent_fraction * budget), delay=delay)


class TOVACache(CachePolicy):
    r"""TOVA: when over budget, drop the slots to which the *current* query gives the least attention.

    $$ \text{evict } \arg\min_s \bar a_{Ts} $$

    with $\bar a$ the newest query's weights averaged over the query heads of a key/value head.
    See :cite:`oren2024transformers`.
    """

    name = "tova"

    def _priority(self, weights):
        return weights[:, :, -1]


class MergeCache(CachePolicy):
    r"""DMC-style merging: over budget, the two adjacent slots with the most similar keys become one slot holding
    their count-weighted average, instead of one of them being dropped.

    $$ k \leftarrow \frac{n_i k_i + n_j k_j}{n_i + n_j}, \quad v \leftarrow \frac{n_i v_i + n_j v_j}{n_i + n_j},
       \qquad (i, j) = \arg\max_{j = i + 1} \cos(k_i, k_j) $$

    DMC learns the append-or-merge decision and the importance weights by continued training; this
    training-free stand-in decides by key similarity and weighs by the number of tokens in a slot.
    The newest slot is never merged away before its step's attention. See :cite:`nawrot2024dynamic`.
    """

    name = "merge"
    _slot_stats = ("_count",)

    def __init__(self, budget: int):
        super().__init__(check_positive_int("budget", budget))
        self._count = None

    def _grow(self, n):
        new = self._pos.new_ones(*self._pos.shape[:2], n, dtype=self._k.dtype)
        self._count = new if self._count is None else torch.cat([self._count, new], dim=2)

    def _evict(self, weights):
        while self.size > self.budget:
            unit = torch.nn.functional.normalize(self._k, dim=-1)
            similarity = (unit[:, :, :-1] * unit[:, :, 1:]).sum(-1)  # (B, Hkv, S - 1): slot i with i + 1
            i = similarity.argmax(dim=-1, keepdim=True)  # (B, Hkv, 1)
            pair = torch.cat([i, i + 1], dim=-1)
            n = torch.gather(self._count, 2, pair)  # (B, Hkv, 2)

            def merged(x):
                both = torch.gather(x, 2, pair[..., None].expand(-1, -1, -1, x.shape[-1]))
                return (n[..., None] * both).sum(2, keepdim=True) / n.sum(-1)[..., None, None]

            k_new, v_new = merged(self._k), merged(self._v)
            self._k = self._k.scatter(2, (i + 1)[..., None].expand(-1, -1, -1, self._k.shape[-1]), k_new)
            self._v = self._v.scatter(2, (i + 1)[..., None].expand(-1, -1, -1, self._v.shape[-1]), v_new)
            self._count = self._count.scatter(2, i + 1, n.sum(-1, keepdim=True))
            S = self.size
            rest = torch.arange(S - 1, device=i.device).expand(*i.shape[:2], S - 1)
            self._gather(torch.where(rest < i, rest, rest + 1))  # drop slot i (its content now lives in i + 1)


class QuantizedCache(CachePolicy):
    r"""Keeps every position, rounded to ``bits``-bit integers on a symmetric grid
    (:func:`minilib.compress.quantize_int`): keys with one scale per channel over each group of ``group``
    positions, values with one scale per position (KIVI's choice); the newest ``< group`` positions stay in float
    until their group is full. See :cite:`liu2024kivi`.

    The cache holds the dequantised values, which is what attention reads; ``bytes_per_token`` is the storage of
    one position's key and value per head as packed codes plus scales.
    """

    name = "quantized"

    def __init__(self, *, bits: int = 8, group: int = 16):
        super().__init__(None)
        if not 2 <= check_positive_int("bits", bits) <= 8:
            raise ValueError(f"bits must be in [2, 8], got {bits}")
        self.bits, self.group = bits, check_positive_int("group", group)
        self._groups: list[tuple] = []  # (keys, values) of each full group, rounded to the grid
        self._recent = None  # float (k, v) of the positions not yet in a full group

    def _store(self, k, v, pos):
        cat = (lambda old, new: new if old is None else torch.cat([old, new], dim=2))
        self._pos = cat(self._pos, pos)
        rk, rv = (k, v) if self._recent is None else (cat(self._recent[0], k), cat(self._recent[1], v))
        while rk.shape[2] >= self.group:
            gk, gv = rk[:, :, :self.group], rv[:, :, :self.group]
            self._groups.append((quantize_int(gk.transpose(2, 3), bits=self.bits, granularity="channel").transpose(2, 3),
                                 quantize_int(gv, bits=self.bits, granularity="channel")))
            rk, rv = rk[:, :, self.group:], rv[:, :, self.group:]
        self._recent = (rk, rv)

    def keys_values(self):
        ks, vs = zip(*self._groups, self._recent)
        return torch.cat(ks, dim=2), torch.cat(vs, dim=2), self._pos

    def bytes_per_token(self, head_dim: int) -> float:
        """Key + value bytes per position and head: packed codes plus fp16 scales (amortised over the group)."""
        return 2 * head_dim * self.bits / 8 + 2 * (head_dim / self.group + 1)


class RetrievalCache(CachePolicy):
    r"""Keeps every position; each query reads only the ``budget`` held keys of highest score (exact top-k stands
    in for the nearest-neighbour index of RetrievalAttention). See :cite:`liu2024retrievalattention`."""

    name = "retrieval"

    def __init__(self, budget: int):
        super().__init__(None)
        self.k_top = check_positive_int("budget", budget)

    def select(self, scores):
        index = scores.topk(min(self.k_top, scores.shape[-1]), dim=-1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, index, True)


#: The KV-cache policies by name, as :func:`make_policy` and ``SparseAttention(cache_policy=...)`` take them.
POLICIES = {"full": FullCache, "window": WindowCache, "sinks": SinkCache, "heavy_hitter": HeavyHitterCache,
            "tova": TOVACache, "merge": MergeCache, "quantized": QuantizedCache, "retrieval": RetrievalCache}


def make_policy(name: str, budget: int | None = None, **kwargs) -> CachePolicy:
    """A fresh policy by name (one of :data:`POLICIES`); ``budget`` where the policy takes one."""
    if name not in POLICIES:
        raise ValueError(f"name must be one of {sorted(POLICIES)}, got {name!r}")
    if name in ("full", "quantized"):
        return POLICIES[name](**kwargs)
    return POLICIES[name](budget, **kwargs)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: CachePolicy, *,
                     window: int | None = None, n_sinks: int = 0, scale: float | None = None) -> torch.Tensor:
    r"""One decoding step through a cache policy: append ``k, v``, attend, then let the policy evict.

    $$ o_t = \sum_{s \in \mathcal{C}} \operatorname{softmax}_s(\text{scale}\; q_t \cdot k_s)\, v_s, \qquad
       \mathcal{C} = \{\text{held slots with position} \le p_t\} \cap \text{select}(q_t) $$

    ``q (B, H, T, D)`` at positions ``cache.length .. cache.length + T - 1``, ``k, v (B, Hkv, T, D)`` of the same
    positions -> ``(B, H, T, Dv)``. ``window`` (and ``n_sinks``) further restrict each query to the positions of
    :func:`~minilib.sparse.sink_window_mask`, so that several new positions at once see what they would in a
    full forward with that mask. With a budget at least the sequence length every policy but quantisation
    gives exact causal attention.
    """
    if not isinstance(cache, CachePolicy):
        raise TypeError(f"cache must be a CachePolicy (e.g. from make_policy), got {type(cache).__name__}")
    check_attention_inputs(q, k, v, scale=scale)
    T = q.shape[2]
    if k.shape[2] != T:
        raise ValueError(f"q and k must hold the same new positions, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    cache.append(k, v)
    keys, values, positions = cache.keys_values()
    H = q.shape[1]
    q_pos = torch.arange(cache.length - T, cache.length, device=q.device)
    key_pos = expand_kv_heads(positions[..., None], H)[..., 0]  # (B, H, S)
    gap = q_pos[:, None] - key_pos[:, :, None, :]  # (B, H, T, S)
    visible = gap >= 0
    if window is not None:
        visible = visible & ((gap < check_positive_int("window", window)) | (key_pos[:, :, None, :] < n_sinks))
    scores = default_scale(q.shape[-1], scale) * q @ expand_kv_heads(keys, H).transpose(-2, -1)
    chosen = cache.select(scores.masked_fill(~visible, float("-inf")))
    keep = visible if chosen is None else visible & chosen
    weights = attention_weights(q, keys, mask=keep, scale=scale)
    cache.observe(weights.detach())
    return weights @ expand_kv_heads(values, H)
