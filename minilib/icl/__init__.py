"""In-context learning and what Transformers can compute (chapter 10).

- :mod:`minilib.icl.regression`: in-context regression prompts and the reference learners (least squares, ridge,
  gradient descent);
- :mod:`minilib.icl.lsa`: linear self-attention, the weights that make it a GD step, looping, the trained optimum.
"""
from .lsa import LinearSelfAttention, looped_lsa, lsa_forward, lsa_gd_weights, lsa_global_minimum, lsa_predict
from .regression import (RegressionPrompts, gd_predict, least_squares_predict, prompt_tokens, regression_prompts,
                         ridge_predict)

__all__ = ["LinearSelfAttention", "RegressionPrompts", "gd_predict", "least_squares_predict", "looped_lsa",
           "lsa_forward", "lsa_gd_weights", "lsa_global_minimum", "lsa_predict", "prompt_tokens",
           "regression_prompts", "ridge_predict"]
