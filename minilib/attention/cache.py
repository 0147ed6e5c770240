r"""The KV cache of decoding, and what it costs in memory."""
from __future__ import annotations

import torch

from minilib._checks import check_nonnegative_int, require_tensor

__all__ = ["kv_cache_bytes", "KVCache"]


def kv_cache_bytes(*, n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   dtype: torch.dtype = torch.float16) -> int:
    r"""Bytes a KV cache holds: keys and values for every layer, key/value head, position and sequence.

    $$ \text{bytes} = 2 \cdot L \cdot H_{kv} \cdot D \cdot S \cdot B \cdot \text{bytes per element} $$

    MHA has $H_{kv} = H$, GQA $1 < H_{kv} < H$, MQA $H_{kv} = 1$ :cite:`ainslie2023gqa`.
    """
    sizes = dict(n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim, seq_len=seq_len, batch=batch)
    for name, value in sizes.items():
        check_nonnegative_int(name, value)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * element


class KVCache:
    """Keys and values of the positions seen so far, grown along time by :meth:`append`.

    ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``; one cache per attention layer. Every append brings keys and
    values of the same positions (equal ``B``, ``Hkv``, ``S``) with the batch, heads, head sizes and dtypes of
    those already held.
    """

    def __init__(self):
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        require_tensor("k", k, ndim=4, floating=True)
        require_tensor("v", v, ndim=4, floating=True)
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(f"k and v must hold the same batch, heads and positions, got k {tuple(k.shape)}, v {tuple(v.shape)}")
        if self._k is not None and (k.shape[:2] != self._k.shape[:2] or k.shape[3] != self._k.shape[3]
                                    or v.shape[3] != self._v.shape[3]):
            raise ValueError(f"new k {tuple(k.shape)} / v {tuple(v.shape)} do not match the cache's k {tuple(self._k.shape)}, "
                             f"v {tuple(self._v.shape)} in batch, heads or head size")
        if self._k is not None and (k.dtype != self._k.dtype or v.dtype != self._v.dtype):
            raise TypeError(f"new k/v dtypes {k.dtype}/{v.dtype} differ from the cache's {self._k.dtype}/{self._v.dtype}")
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
