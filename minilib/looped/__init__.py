"""Looped and elastic depth (chapter 08): weight-shared depth, nested widths, shortcuts across depth, continuous thought.

- :mod:`~minilib.looped.depth`: :class:`LoopedTransformer` (+ ``unroll``), :class:`DepthRecurrent`, :class:`AlgoFormer`,
  :func:`recursive_forward`, :func:`group_sliced_attention`;
- :mod:`~minilib.looped.relaxed`: :class:`RelaxedRecursive` (shared blocks + depth-wise LoRA);
- :mod:`~minilib.looped.matformer`: :class:`MatFFN` (registered as the FFN ``"matformer"``), :func:`nested_widths`;
- :mod:`~minilib.looped.shortcuts`: :func:`fit_linear_shortcuts`, :func:`ladder_forward`;
- :mod:`~minilib.looped.recurrent`: :class:`RecurrentTransformer`, :class:`RecurrentLayer`;
- :mod:`~minilib.looped.reasoning`: the NumPy superposition construction :func:`superposition_reachability`.

Whole-model pieces (Mix'n'Match extraction, speculative decoding, continuous thought, cross-layer attention) are in
:mod:`minilib.models.looped`.
"""
from minilib.looped.depth import AlgoFormer, DepthRecurrent, LoopedTransformer, UnrolledStack, group_sliced_attention, recursive_forward
from minilib.looped.matformer import MatFFN, nested_widths
from minilib.looped.reasoning import random_digraph, reachable_within, superposition_reachability
from minilib.looped.recurrent import RecurrentLayer, RecurrentTransformer
from minilib.looped.relaxed import RelaxedRecursive
from minilib.looped.shortcuts import fit_linear_shortcuts, ladder_forward

__all__ = ["LoopedTransformer", "UnrolledStack", "DepthRecurrent", "AlgoFormer", "recursive_forward", "group_sliced_attention",
           "RelaxedRecursive", "MatFFN", "nested_widths", "fit_linear_shortcuts", "ladder_forward",
           "RecurrentLayer", "RecurrentTransformer", "random_digraph", "reachable_within", "superposition_reachability"]
