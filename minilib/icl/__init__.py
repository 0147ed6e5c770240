"""In-context learning and what Transformers can compute (chapter 10).

- :mod:`minilib.icl.regression`: in-context regression prompts (linear, sparse linear, two-layer ReLU nets) and the reference learners (least squares, ridge,
  gradient descent, the Bayes posterior mean of a dense/sparse mixture);
- :mod:`minilib.icl.lsa`: linear self-attention, the weights that make it a GD step, looping, the trained optimum,
  and the causal token mixer ``"lsa"``;
- :mod:`minilib.icl.rasp`: a mini RASP interpreter and programs (histogram, double histogram, sort, reverse, Dyck-1);
- :mod:`minilib.icl.compiler`: RASP programs compiled into attention and MLP weights (Tracr-like);
- :mod:`minilib.icl.ngram`: the explicit Transformer of an n-gram language model;
- :mod:`minilib.icl.induction`: the two-layer induction circuit, the prefix-matching and copying scores, and the
  repeated-segment sequences an induction head is trained on.
"""
from .compiler import CompiledProgram, compile_program
from .induction import NoFeedForward, copying_score, induction_head_patterns, prefix_matching_score, repeated_segments
from .lsa import CausalLinearSelfAttention, LinearSelfAttention, LSACache, looped_lsa, lsa_forward, lsa_gd_weights, lsa_global_minimum, lsa_predict
from .ngram import NGramTransformer, ngram_transformer
from .regression import (RegressionPrompts, bayes_mixture_predict, gd_predict, least_squares_predict, prompt_tokens,
                         regression_prompts, ridge_predict, task_values)

__all__ = ["CausalLinearSelfAttention", "CompiledProgram", "LSACache", "LinearSelfAttention", "NGramTransformer", "NoFeedForward",
           "RegressionPrompts", "bayes_mixture_predict", "compile_program", "copying_score", "gd_predict",
           "induction_head_patterns", "least_squares_predict", "looped_lsa", "lsa_forward", "lsa_gd_weights",
           "lsa_global_minimum", "lsa_predict", "ngram_transformer", "prefix_matching_score", "prompt_tokens",
           "regression_prompts", "repeated_segments", "ridge_predict", "task_values"]
