r"""Sparse attention as a token mixer: a sliding window (with optional attention sinks) for training and
prefill, and any KV-cache policy for decoding; plus a per-layer factory for mixed attention spans."""
from __future__ import annotations

import torch

from minilib._checks import check_last_dim, check_nonnegative_int, check_positive_int
from minilib.attention import MultiHeadAttention, attend
from minilib.mixing import register_mixer
from minilib.sparse.cache_policies import POLICIES, CachePolicy, SinkCache, WindowCache, cached_attention, make_policy
from minilib.sparse.masks import sink_window_mask

__all__ = ["SparseAttention", "mixed_span_factory"]


class SparseAttention(MultiHeadAttention):
    r"""Multi-head attention restricted to a causal sliding window of ``window`` keys plus ``n_sinks`` sink tokens.

    $$ \operatorname{head}_h = \operatorname{softmax}\big(\tfrac{QK^\top}{\sqrt D} + \log M\big) V, \qquad
       M = \text{sink\_window\_mask}(T, w, n_\text{sink}) $$

    ``window=None`` is full causal attention. Decoding (``new_cache()``) holds a :class:`WindowCache` or
    :class:`SinkCache` just large enough that cached decoding equals the full forward; ``cache_policy`` (a name of
    :data:`~minilib.sparse.POLICIES`) with ``cache_budget`` decodes through that policy instead, e.g. a model
    trained with full attention evaluated with an H2O cache. Same parameters as :class:`MultiHeadAttention`, so
    its weights load. See :cite:`beltagy2020longformer,xiao2024efficient`.
    """

    def __init__(self, d_model: int, n_heads: int, *, window: int | None = None, n_sinks: int = 0,
                 cache_policy: str | None = None, cache_budget: int | None = None, cache_kwargs: dict | None = None,
                 **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        if self.score != "softmax":
            raise ValueError(f"SparseAttention supports score='softmax' only, got {self.score!r}")
        self.window = None if window is None else check_positive_int("window", window)
        self.n_sinks = check_nonnegative_int("n_sinks", n_sinks)
        if cache_policy is not None and cache_policy not in POLICIES:
            raise ValueError(f"cache_policy must be None or one of {sorted(POLICIES)}, got {cache_policy!r}")
        if cache_policy is not None:
            make_policy(cache_policy, cache_budget, **(cache_kwargs or {}))  # fails early on bad names and budgets
        self.cache_policy, self.cache_budget, self.cache_kwargs = cache_policy, cache_budget, dict(cache_kwargs or {})

    def new_cache(self) -> CachePolicy:
        if self.cache_policy is not None:
            return make_policy(self.cache_policy, self.cache_budget, **self.cache_kwargs)
        if self.window is None:
            return make_policy("full")
        if self.n_sinks:
            return SinkCache(self.n_sinks + self.window - 1, n_sinks=self.n_sinks)
        return WindowCache(self.window - 1) if self.window > 1 else _NoHistory()

    def forward(self, x: torch.Tensor, *, cache: CachePolicy | None = None, **unsupported) -> torch.Tensor:
        """``x (B, T, d_model) -> (B, T, d_model)``, causal; with ``cache`` only the new positions."""
        q, k, v = _project_new_positions(self, x, cache, CachePolicy, unsupported)
        T = x.shape[1]
        if cache is None:
            mask = None if self.window is None else sink_window_mask(T, self.window, n_sinks=self.n_sinks, device=x.device)
            return self.combine(x, attend(q, k, v, causal=True, mask=mask))
        return self.combine(x, cached_attention(q, k, v, cache, window=self.window, n_sinks=self.n_sinks))


def _project_new_positions(layer: MultiHeadAttention, x: torch.Tensor, cache, cache_type: type,
                          unsupported: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a cached attention layer's call and project ``x (B, T, d_model)``, whose positions follow the
    ``cache.length`` already cached (0 without a cache): ``q, k, v`` as :meth:`MultiHeadAttention.project_qkv`."""
    if unsupported:
        raise ValueError(f"{type(layer).__name__} takes only x and cache, got {sorted(unsupported)}")
    check_last_dim("x", x, layer.wq.in_features, ndim=3)
    if cache is not None and not isinstance(cache, cache_type):
        raise TypeError(f"cache must be a {cache_type.__name__} (from new_cache()), got {type(cache).__name__}")
    past = 0 if cache is None else cache.length
    return layer.project_qkv(x, torch.arange(past, past + x.shape[1], device=x.device))


class _NoHistory(WindowCache):
    """A window of one key (the query's own): nothing is kept between steps."""

    def __init__(self):
        CachePolicy.__init__(self, None)

    def observe(self, weights):
        self._gather(self._pos.new_zeros(*self._pos.shape[:2], 0))


def mixed_span_factory(full_layers, *, window: int, n_sinks: int = 0):
    r"""A mixer factory for mixed attention spans (MASFormer): full attention in the layers of ``full_layers``,
    a sliding window of ``window`` keys in every other layer. Use as ``TransformerConfig(mixer=factory)``.

    Attention cost per layer is $T^2/2$ for full and about $T w$ for a window layer. See :cite:`zhang2023efficient`.
    """
    full_layers = frozenset(check_nonnegative_int("full_layers", i) for i in full_layers)
    check_positive_int("window", window)

    def factory(config, layer: int) -> SparseAttention:
        return SparseAttention(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                               window=None if layer in full_layers else window, n_sinks=n_sinks, **config.mixer_kwargs)

    return factory


def _sliding_window_mixer(config, layer: int) -> SparseAttention:
    return SparseAttention(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                           **config.mixer_kwargs)


register_mixer("sliding_window", _sliding_window_mixer)
