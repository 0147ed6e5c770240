r"""The multi-head attention layer: projections, heads, grouped key/value heads, scoring variants, gates and caches."""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_flag, check_last_dim, check_positive_int, require_tensor
from minilib.attention.cache import KVCache
from minilib.attention.heads import merge_heads, split_heads
from minilib.attention.scoring import SCORES, attend, score_weights
from minilib.mixing import TokenMixer, register_mixer
from minilib.norms import RMSNorm
from minilib.positional import check_rope_scaling, rope as apply_rope

__all__ = ["MultiHeadAttention", "DepthMemory"]

VALUE_RESIDUALS = (None, "static", "gated")


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

    Cross-layer options (both need ``depth=``, a :class:`~minilib.attention.DepthMemory` the model passes through its layers, and default
    off). ``depth_attention=True`` :cite:`depthattention2026`: before attending over the sequence, each head's query
    $q^\ell_t$ attends over the keys of the earlier layers and its own at the same position and mixes their values,

    $$ \tilde v^\ell_t = \sum_{j \le \ell} \operatorname{softmax}_j\big(q^\ell_t \cdot k^j_t / \sqrt D\big)\, v^j_t, $$

    then attends over the sequence with keys $k^\ell$ and values $\tilde v^\ell$: no new parameter, and the cache
    holds one key and one value per position as before (it needs ``n_q_heads == n_kv_heads``).
    ``value_residual="static"`` adds the first layer's values, $v^\ell + \lambda v^1$ with one learned scalar
    $\lambda$ per layer; ``"gated"`` makes the gate depend on the token, $v^\ell_t + \sigma(w_h \cdot x_t + c_h)\, v^1_t$
    per key/value head :cite:`gunasekaran2026satformer`. Layer 1 (empty memory) is unchanged.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None, n_q_heads: int | None = None,
                 bias: bool = False, qk_norm: bool = False, rope: bool = False, rope_base: float = 10000.0,
                 rope_scaling: tuple | None = None, score: str = "softmax", score_kwargs: dict | None = None,
                 gate: bool = False, depth_attention: bool = False, value_residual: str | None = None):
        super().__init__()
        self.depth_attention = check_flag("depth_attention", depth_attention)
        if value_residual not in VALUE_RESIDUALS:
            raise ValueError(f"value_residual must be one of {VALUE_RESIDUALS}, got {value_residual!r}")
        self.value_residual = value_residual
        check_positive_int("d_model", d_model)
        check_positive_int("n_heads", n_heads)
        n_q_heads = n_heads if n_q_heads is None else check_positive_int("n_q_heads", n_q_heads)
        n_kv_heads = n_q_heads if n_kv_heads is None else check_positive_int("n_kv_heads", n_kv_heads)
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if not 1 <= n_q_heads <= n_heads:
            raise ValueError(f"n_q_heads must be in [1, n_heads={n_heads}], got {n_q_heads}")
        if n_q_heads % n_kv_heads != 0:
            raise ValueError(f"n_q_heads ({n_q_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if not set(score_kwargs or {}) <= {"zeta", "gamma"}:
            raise TypeError(f"score_kwargs may hold zeta and gamma (for score='clipped'), got {sorted(score_kwargs)}")
        if isinstance(rope_base, bool) or not isinstance(rope_base, (int, float)) or rope_base <= 0:
            raise ValueError(f"rope_base must be a positive number, got {rope_base!r}")
        check_rope_scaling(rope_scaling, name="rope_scaling")
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
        if depth_attention and n_q_heads != n_kv_heads:
            raise ValueError(f"depth_attention needs one key/value head per query head, got n_q_heads={n_q_heads}, "
                             f"n_kv_heads={n_kv_heads}")
        self.value_scale = nn.Parameter(torch.tensor(0.5)) if value_residual == "static" else None
        self.value_gate = nn.Linear(d_model, n_kv_heads) if value_residual == "gated" else None

    def new_cache(self) -> KVCache:
        """An empty :class:`~minilib.attention.KVCache`: decoding appends each new position's keys and values to it."""
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

    def forward(self, x: torch.Tensor, *, causal: bool | None = None, cache: KVCache | None = None,
                positions: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                depth: "DepthMemory | None" = None) -> torch.Tensor:
        """``x (B, T, d_model) -> (B, T, d_model)``; self-attention is causal unless ``causal=False``.

        ``memory (B, S, d_model)``: cross-attention, keys and values projected from ``memory``, every query sees
        every key; it takes no ``cache``, ``positions``, ``bias``, ``kv`` or ``causal=True`` (a ``ValueError`` names
        the one given). ``kv=(k, v)``, each ``(B, H_kv, S, D)`` and already projected (and rotated) by another layer,
        replaces this module's own keys and values: only the queries are computed, at positions ``S - T .. S - 1``
        unless ``positions`` says otherwise (cross-layer KV sharing). ``depth``: the :class:`~minilib.attention.DepthMemory` of this
        forward pass (needed by ``depth_attention`` and ``value_residual``; this layer reads it and appends its own).
        """
        check_last_dim("x", x, self.wq.in_features, ndim=3)
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (from new_cache()) or None, got {type(cache).__name__}")
        if positions is not None:
            require_tensor("positions", positions, ndim=1)
        if memory is not None:
            given = {"causal=True": causal is True, "cache": cache is not None, "positions": positions is not None,
                     "bias": bias is not None, "kv": kv is not None}
            if any(given.values()):
                raise ValueError(f"cross-attention (memory=...) attends to all of memory and takes no "
                                 f"{', '.join(name for name, on in given.items() if on)}")
            return self._cross(x, memory)
        causal = True if causal is None else causal
        if kv is not None:
            return self._shared_kv(x, kv, causal=causal, cache=cache, positions=positions, bias=bias)
        B, T, _ = x.shape
        past = 0 if cache is None else cache.length
        if positions is None:
            positions = torch.arange(past, past + T, device=x.device)
        q, k, v = self.project_qkv(x, positions)
        if self.depth_attention or self.value_residual is not None:
            v = self._cross_layer_values(x, q, k, v, depth)
        if cache is not None:
            cache.append(k, v)
            k, v = cache.k, cache.v
        return self.combine(x, attend(q, k, v, score=self.score, causal=causal, bias=bias, **self.score_kwargs))

    def _cross_layer_values(self, x, q, k, v, depth) -> torch.Tensor:
        if not isinstance(depth, DepthMemory):
            raise TypeError(f"depth_attention / value_residual need depth=, the DepthMemory of this forward pass, got {type(depth).__name__}")
        earlier_k, earlier_v = list(depth.keys), list(depth.values)
        depth.append(k, v)
        if earlier_v and earlier_v[0].shape != v.shape:
            raise ValueError(f"depth memory holds values of shape {tuple(earlier_v[0].shape)}, this layer's are {tuple(v.shape)}")
        mixed = v
        if self.value_residual == "static" and earlier_v:
            mixed = mixed + self.value_scale * earlier_v[0]
        if self.value_residual == "gated" and earlier_v:
            mixed = mixed + torch.sigmoid(self.value_gate(x)).transpose(1, 2)[..., None] * earlier_v[0]
        if self.depth_attention and earlier_k:
            keys, values = torch.stack(earlier_k + [k], dim=3), torch.stack(earlier_v + [mixed], dim=3)  # (B, H, T, L, D)
            w = torch.softmax((q[..., None, :] * keys).sum(-1) / self.head_dim ** 0.5, dim=-1)       # (B, H, T, L)
            mixed = (w[..., None] * values).sum(3)
        return mixed

    def _shared_kv(self, x, kv, *, causal, cache, positions, bias) -> torch.Tensor:
        if cache is not None:
            raise ValueError("a layer given kv=(k, v) from another layer keeps no cache of its own; pass cache=None")
        if not isinstance(kv, (tuple, list)) or len(kv) != 2:
            raise TypeError(f"kv must be a pair (k, v) of tensors, got {type(kv).__name__}")
        k, v = kv
        require_tensor("kv[0]", k, ndim=4, floating=True)
        require_tensor("kv[1]", v, ndim=4, floating=True)
        B, S = x.shape[0], k.shape[2]
        if k.shape != (B, self.n_kv_heads, S, self.head_dim) or v.shape != k.shape:
            raise ValueError(f"kv must hold keys and values of shape (B={B}, n_kv_heads={self.n_kv_heads}, S, "
                             f"head_dim={self.head_dim}) for x {tuple(x.shape)}, got k {tuple(k.shape)}, v {tuple(v.shape)}")
        T = x.shape[1]
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
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return self.combine(x, attend(q, k, v, score=self.score, **self.score_kwargs))


class DepthMemory:
    """The keys and values ``(B, H_kv, T, D)`` each layer computed in one forward pass, in layer order: what
    ``depth_attention`` and ``value_residual`` read. A model makes one per forward (no state survives it)."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Record one layer's keys and values (before its own cross-layer mixing)."""
        require_tensor("k", k, ndim=4, floating=True)
        require_tensor("v", v, ndim=4, floating=True)
        self.keys.append(k)
        self.values.append(v)


def _attention_mixer(cls: type[MultiHeadAttention]):
    def factory(config, layer: int) -> MultiHeadAttention:
        return cls(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                   **config.mixer_kwargs)
    return factory


register_mixer("attention", _attention_mixer(MultiHeadAttention))
