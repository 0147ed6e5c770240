r"""BAM's mixture of attention: several attention layers (experts) mixed per token by a soft router.

$$ y_t = \sum_{e=1}^{E} p_{te}\, \operatorname{MHA}_e(X)_t,\qquad p_t = \operatorname{softmax}(W_r x_t) $$

Every expert attends over the whole sequence (so the mixture is as causal as its experts) and every expert runs on
every token: soft routing, which BAM uses for its attention experts :cite:`zhang2024bam`. Upcycled from
$n$ dense models (:func:`minilib.moe.upcycle` with ``attention=True``), expert $e$ is model $e \bmod n$'s attention
and the router starts at zero, so with one dense model the mixture computes that model's attention exactly.
Registered as the token mixer ``"moa"`` (``mixer_kwargs={"n_experts": ...}``; the other keys go to every expert).
BAM's variant with key/value projections shared across the experts and its parallel attention+FFN block are not
built here.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_last_dim, check_positive_int
from minilib.attention import KVCache, MultiHeadAttention
from minilib.mixing import TokenMixer, register_mixer

__all__ = ["ExpertCaches", "MixtureOfAttention"]


class ExpertCaches(list):
    """The decoding state of a :class:`MixtureOfAttention`: one :class:`~minilib.attention.KVCache` per expert, all
    holding the same positions (``length``, as a model reads from a layer's cache)."""

    def __init__(self, caches):
        caches = list(caches)
        if not caches or not all(isinstance(c, KVCache) for c in caches):
            raise TypeError(f"caches must be a non-empty sequence of KVCache, got {[type(c).__name__ for c in caches]}")
        super().__init__(caches)

    @property
    def length(self) -> int:
        """Positions cached so far (every expert's cache holds the same)."""
        return self[0].length


class MixtureOfAttention(TokenMixer):
    r"""``n_experts`` :class:`~minilib.attention.MultiHeadAttention` experts of ``d_model``/``n_heads`` (``attention_kwargs``
    passed to each) mixed with the token's router probabilities. ``x (B, T, d_model) -> (B, T, d_model)``; after a
    forward ``self.probs (B, T, E)`` holds the mixing weights. With a cache from :meth:`new_cache` (one
    :class:`~minilib.attention.KVCache` per expert, an :class:`ExpertCaches`) ``x`` holds only the new positions. See :cite:`zhang2024bam`."""

    def __init__(self, d_model: int, n_heads: int, n_experts: int, **attention_kwargs):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.n_experts = check_positive_int("n_experts", n_experts)
        self.experts = nn.ModuleList(MultiHeadAttention(d_model, n_heads, **attention_kwargs) for _ in range(n_experts))
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.probs: torch.Tensor | None = None

    def new_cache(self) -> ExpertCaches:
        """One empty :class:`~minilib.attention.KVCache` per expert."""
        return ExpertCaches(expert.new_cache() for expert in self.experts)

    def forward(self, x: torch.Tensor, *, cache: ExpertCaches | None = None) -> torch.Tensor:
        check_last_dim("x", x, self.d_model, ndim=3)
        if cache is not None and (not isinstance(cache, ExpertCaches) or len(cache) != self.n_experts):
            raise TypeError(f"cache must be the list of {self.n_experts} caches from new_cache(), got {type(cache).__name__}")
        self.probs = torch.softmax(self.router(x), dim=-1)
        caches = cache if cache is not None else [None] * self.n_experts
        return sum(self.probs[..., e:e + 1] * expert(x, cache=c) for e, (expert, c) in enumerate(zip(self.experts, caches)))


def _moa_factory(config, layer: int) -> MixtureOfAttention:
    kwargs = dict(config.mixer_kwargs)
    if "n_experts" not in kwargs:
        raise ValueError("mixer='moa' needs mixer_kwargs={'n_experts': ...}")
    return MixtureOfAttention(config.d_model, config.n_heads, kwargs.pop("n_experts"), n_kv_heads=config.n_kv_heads,
                              rope=config.pos == "rope", **kwargs)


register_mixer("moa", _moa_factory)
