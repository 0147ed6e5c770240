r"""Sparse, local and compressed attention (chapter 05).

- :mod:`~minilib.sparse.masks`: fixed patterns as ``(T, S)`` masks (:func:`sliding_window_mask`,
  :func:`dilated_window_mask`, :func:`sink_window_mask`, :func:`global_local_mask`, :func:`block_local_mask`),
  :func:`to_block_mask` for :func:`minilib.flash.block_sparse_attention`, :func:`mask_flops`;
- :mod:`~minilib.sparse.content`: :func:`topk_attention`, :func:`topk_mask`, BiFormer's
  :func:`bilevel_routing_attention` and its :func:`routing_mask`, Informer's :func:`probsparse_attention`,
  :func:`ivf_candidates`, :func:`ivf_topk_attention` and IceFormer-style :func:`knn_attention` over a :func:`kmeans` index;
- :mod:`~minilib.sparse.selection`: SEA's :func:`sea_attention`, :func:`landmark_attention`, TidalDecode's
  :func:`tidal_decode`, MoA's :func:`head_window_mask` and :func:`moa_allocate`, and :class:`RuleAttention`
  (:func:`rule_factory`) to run such masks inside a model;
- :mod:`~minilib.sparse.cache_policies`: KV-cache policies behind one interface (:class:`CachePolicy`,
  :func:`make_policy`, :func:`cached_attention`); the evicting policies take ``delay`` for delayed eviction (DMS:
  an evicted slot stays readable for ``delay`` more steps);
- :mod:`~minilib.sparse.structured`: Combiner's :func:`combiner_attention` and :class:`CombinerAttention` (the
  ``"combiner"`` token mixer), S2-Attention's :func:`s2_block_masks`,
  :func:`sentinel_mask`, FIT's :func:`fit_block` and :func:`fit_score_count`;
- :mod:`~minilib.sparse.merging`: DMC with a fixed merge schedule, :func:`dmc_attention`, :class:`DMCAttention`
  (the ``"dmc"`` token mixer) and its :class:`DMCCache`;
- :mod:`~minilib.sparse.layers`: :class:`SparseAttention`, the ``"sliding_window"`` token mixer (registered on
  import), and :func:`mixed_span_factory` for per-layer spans.
"""
from minilib.sparse.cache_policies import (POLICIES, CachePolicy, FullCache, HeavyHitterCache, MergeCache,
                                           QuantizedCache, RetrievalCache, SinkCache, TOVACache, WindowCache,
                                           cached_attention, make_policy, swa_cache_policy)
from minilib.sparse.content import (bilevel_routing_attention, ivf_candidates, ivf_topk_attention, kmeans,
                                    knn_attention, probsparse_attention, routing_mask, topk_attention, topk_mask)
from minilib.sparse.layers import SparseAttention, mixed_span_factory
from minilib.sparse.merging import DMCAttention, DMCCache, dmc_attention, dmc_slots
from minilib.sparse.selection import (RuleAttention, head_window_mask, landmark_attention, landmark_mask, moa_allocate,
                                      rule_factory, sea_attention, sea_mask, tidal_decode, tidal_positions)
from minilib.sparse.structured import (CombinerAttention, CombinerCache, combiner_attention, combiner_attention_cached,
                                       combiner_score_count, combiner_weights,
                                       fit_block, fit_score_count, s2_block_masks, sentinel_mask)
from minilib.sparse.masks import (block_local_mask, dilated_window_mask, global_local_mask, mask_flops,
                                  sink_window_mask, sliding_window_mask, to_block_mask)

__all__ = [
    "POLICIES", "CachePolicy", "FullCache", "HeavyHitterCache", "MergeCache", "QuantizedCache", "RetrievalCache",
    "SinkCache", "SparseAttention", "TOVACache", "WindowCache", "bilevel_routing_attention", "block_local_mask",
    "cached_attention", "CombinerAttention", "CombinerCache", "combiner_attention", "combiner_attention_cached",
    "combiner_score_count", "combiner_weights", "dilated_window_mask", "global_local_mask", "ivf_topk_attention", "kmeans", "make_policy", "mask_flops", "mixed_span_factory",
    "probsparse_attention", "routing_mask", "s2_block_masks", "sentinel_mask", "sink_window_mask", "sliding_window_mask", "swa_cache_policy",
    "to_block_mask", "topk_attention", "topk_mask",
    "RuleAttention", "fit_block", "fit_score_count", "head_window_mask", "ivf_candidates", "knn_attention",
    "landmark_attention", "landmark_mask", "moa_allocate", "rule_factory", "sea_attention", "sea_mask", "tidal_decode",
    "tidal_positions", "DMCAttention", "DMCCache", "dmc_attention", "dmc_slots",
]
