r"""Dynamic Memory Compression with a fixed merge schedule: a key-value cache that *merges* instead of appending,
for retrofitting a trained model (chapter 05).

Every ``rate`` consecutive positions share one cache slot: the first opens it, the others merge into it as an
importance-weighted running average. The full forward and the cached decoding read the same slots.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_positive_int, require_tensor
from minilib.attention import MultiHeadAttention, sdpa
from minilib.mixing import register_mixer
from minilib.sparse.layers import _project_new_positions

__all__ = ["dmc_slots", "dmc_attention", "DMCCache", "DMCAttention"]


def dmc_slots(k: torch.Tensor, v: torch.Tensor, importance: torch.Tensor, *, rate: int):
    r"""The slot each position would read as its own: the importance-weighted running mean over its group so far.

    $$ \bar k_t = \frac{\sum_{s \in g(t),\, s \le t} \omega_s k_s}{\sum_{s \in g(t),\, s \le t} \omega_s}, \qquad
       g(t) = \{\, \lfloor t / r \rfloor r, \dots \} $$

    (and $\bar v_t$ alike). ``k (B, Hkv, T, D)``, ``v (B, Hkv, T, Dv)``, ``importance (B, Hkv, T)`` positive ->
    ``(k_bar, v_bar)`` of the same shapes. See :cite:`nawrot2024dynamic`.
    """
    require_tensor("k", k, ndim=4, floating=True)
    require_tensor("v", v, ndim=4, floating=True)
    require_tensor("importance", importance, ndim=3, floating=True)
    check_positive_int("rate", rate)
    if importance.shape != k.shape[:3] or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k (B, Hkv, T, D), v (B, Hkv, T, Dv) and importance (B, Hkv, T) must agree, got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}, importance {tuple(importance.shape)}")
    B, H, T, _ = k.shape
    pad = -T % rate

    def running(x):  # weighted cumulative sums restarting every `rate` positions
        x = nn.functional.pad(x, (0, 0, 0, pad)).view(B, H, -1, rate, x.shape[-1])
        return x.cumsum(dim=3).flatten(2, 3)[:, :, :T]

    w = importance[..., None]
    total = running(w)
    return running(w * k) / total, running(w * v) / total


def dmc_attention(q, k, v, importance, *, rate: int, scale: float | None = None) -> torch.Tensor:
    r"""Causal attention over DMC's merged slots: query $t$ reads the finished slot of every earlier group and its
    own group's slot as of $t$.

    $$ o_t = \operatorname{softmax}\big(\{\text{scale}\; q_t \cdot \bar k_{e_j}\}_{j < g(t)} \cup \{\text{scale}\; q_t \cdot \bar k_t\}\big)\,
       [\bar v_{e_j};\ \bar v_t] $$

    with $e_j$ the last position of group $j$ (:func:`dmc_slots`). A decoder holds $\lceil T / r \rceil$ slots
    instead of $T$ (:class:`DMCCache`). DMC learns *when* to merge (a decision per head and step, up to 4x
    compression); the schedule here is fixed, every ``rate`` positions, and only the importance $\omega$ is learnt.
    ``(B,H,T,D), (B,Hkv,T,D), (B,Hkv,T,Dv), importance (B,Hkv,T) -> (B,H,T,Dv)``. See :cite:`nawrot2024dynamic`.
    """
    k_bar, v_bar = dmc_slots(k, v, importance, rate=rate)
    T = k.shape[2]
    t, s = torch.arange(T, device=k.device)[:, None], torch.arange(T, device=k.device)[None, :]
    finished = (s % rate == rate - 1) & (s // rate < t // rate)
    return sdpa(q, k_bar, v_bar, mask=finished | (s == t), scale=scale)


class DMCCache:
    """Decoding state of :class:`DMCAttention`: the finished slots plus the open one, ``ceil(length / rate)`` slots.

    ``slots()`` gives ``(k, v)`` of shape ``(B, Hkv, n_slots, D)``; ``length`` counts the positions seen."""

    def __init__(self, rate: int):
        self.rate = check_positive_int("rate", rate)
        self.length = 0
        self._k = self._v = self._w = None  # weighted sums of the slots (last one open) and their weights

    def append(self, k: torch.Tensor, v: torch.Tensor, importance: torch.Tensor) -> None:
        """Add positions one by one: a new slot at every multiple of ``rate``, else merge into the open slot."""
        for i in range(k.shape[2]):
            w = importance[:, :, i:i + 1, None]
            wk, wv = w * k[:, :, i:i + 1], w * v[:, :, i:i + 1]
            if self.length % self.rate == 0:
                cat = lambda old, new: new if old is None else torch.cat([old, new], dim=2)  # noqa: E731
                self._k, self._v, self._w = cat(self._k, wk), cat(self._v, wv), cat(self._w, w)
            else:
                self._k = torch.cat([self._k[:, :, :-1], self._k[:, :, -1:] + wk], dim=2)
                self._v = torch.cat([self._v[:, :, :-1], self._v[:, :, -1:] + wv], dim=2)
                self._w = torch.cat([self._w[:, :, :-1], self._w[:, :, -1:] + w], dim=2)
            self.length += 1

    @property
    def size(self) -> int:
        """Slots held."""
        return 0 if self._k is None else self._k.shape[2]

    def slots(self):
        return self._k / self._w, self._v / self._w


class DMCAttention(MultiHeadAttention):
    r"""Multi-head attention whose keys and values are merged DMC-style (:func:`dmc_attention`), with a learnt
    importance per key/value head, $\omega_t = \operatorname{softplus}(w \cdot x_t + c)$.

    The attention parameters are those of :class:`~minilib.attention.MultiHeadAttention` (a trained model's
    weights load with ``strict=False``; the importance projection is new: built alone it starts at $\omega = 1$, a
    plain mean, and a model's own initialisation of its linear layers gives a nearly constant $\omega$), so a model
    is *retrofitted* by continued training. ``new_cache()`` is a :class:`DMCCache`; cached
    decoding equals the full forward. See :cite:`nawrot2024dynamic`.
    """

    def __init__(self, d_model: int, n_heads: int, *, rate: int = 4, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        if self.score != "softmax":
            raise ValueError(f"DMCAttention supports score='softmax' only, got {self.score!r}")
        self.rate = check_positive_int("rate", rate)
        self.importance = nn.Linear(d_model, self.n_kv_heads)
        nn.init.zeros_(self.importance.weight)
        nn.init.constant_(self.importance.bias, 0.5413)  # softplus(0.5413) = 1

    def new_cache(self) -> DMCCache:
        return DMCCache(self.rate)

    def forward(self, x: torch.Tensor, *, cache: DMCCache | None = None, **unsupported) -> torch.Tensor:
        """``x (B, T, d_model) -> (B, T, d_model)``, causal; with ``cache`` only the new positions."""
        q, k, v = _project_new_positions(self, x, cache, DMCCache, unsupported)
        importance = nn.functional.softplus(self.importance(x)).transpose(1, 2)  # (B, Hkv, T)
        if cache is None:
            return self.combine(x, dmc_attention(q, k, v, importance, rate=self.rate))
        heads = []
        for i in range(x.shape[1]):  # one position at a time: its query reads the slots as of itself
            cache.append(k[:, :, i:i + 1], v[:, :, i:i + 1], importance[:, :, i:i + 1])
            heads.append(sdpa(q[:, :, i:i + 1], *cache.slots()))
        return self.combine(x, torch.cat(heads, dim=2))


def _dmc_mixer(config, layer: int) -> DMCAttention:
    return DMCAttention(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                        **config.mixer_kwargs)


register_mixer("dmc", _dmc_mixer)
