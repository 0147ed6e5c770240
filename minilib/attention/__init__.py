r"""Attention: softmax attention as the equation says, its heads, scoring variants, caches and layers.

Shapes: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` with ``H % Hkv == 0``
(grouped-query attention: each key/value head serves ``H // Hkv`` consecutive query heads).
With ``causal=True`` and ``T != S`` the queries are the *last* ``T`` of the ``S`` positions
(bottom-right alignment, as when decoding with a cache).

- :mod:`~minilib.attention.dot_product`: :func:`causal_mask`, :func:`attention_weights`, :func:`sdpa`,
  :func:`grouped_attention`, :func:`attention_entropy`;
- :mod:`~minilib.attention.heads`: :func:`split_heads`, :func:`merge_heads`, :func:`expand_kv_heads`;
- :mod:`~minilib.attention.scoring`: :func:`score_weights`, :func:`attend`, :func:`sigmoid_attention`, :func:`sigmoid_length_bias`,
  :func:`softmax_one`, :func:`clipped_softmax`;
- :mod:`~minilib.attention.cache`: :class:`KVCache`, :func:`kv_cache_bytes`;
- :mod:`~minilib.attention.multihead`: :class:`MultiHeadAttention` (the ``"attention"`` token mixer);
- :mod:`~minilib.attention.mixture_of_heads`: :class:`MixtureOfHeadAttention` (the ``"moh"`` token mixer);
- :mod:`~minilib.attention.urpe`: :func:`urpe_attention`, :class:`URPEAttention` (Toeplitz-reweighted attention);
- :mod:`~minilib.attention.calibration`: :func:`attention_calibration`, :func:`calibrated_heads` (ACT);
- :mod:`~minilib.attention.convolutional`: :class:`RelConvAttention` (RCMHA).

Importing the package registers both mixers with :mod:`minilib.mixing`.
"""
from minilib.attention.cache import KVCache, kv_cache_bytes
from minilib.attention.calibration import attention_calibration, calibrated_heads
from minilib.attention.convolutional import RelConvAttention
from minilib.attention.dot_product import attention_entropy, attention_weights, causal_mask, grouped_attention, sdpa
from minilib.attention.heads import expand_kv_heads, merge_heads, split_heads
from minilib.attention.mixture_of_heads import MixtureOfHeadAttention
from minilib.attention.multihead import DepthMemory, MultiHeadAttention
from minilib.attention.scoring import (SCORES, attend, clipped_softmax, score_weights, sigmoid_attention,
                                      sigmoid_length_bias, softmax_one)
from minilib.attention.urpe import URPEAttention, urpe_attention

__all__ = [
    "DepthMemory", "KVCache", "MixtureOfHeadAttention", "MultiHeadAttention", "RelConvAttention", "SCORES", "URPEAttention", "attend",
    "attention_calibration", "attention_entropy", "attention_weights", "calibrated_heads", "causal_mask",
    "clipped_softmax", "expand_kv_heads", "grouped_attention", "kv_cache_bytes", "merge_heads", "score_weights", "sdpa",
    "sigmoid_attention", "sigmoid_length_bias", "softmax_one", "split_heads", "urpe_attention",
]
