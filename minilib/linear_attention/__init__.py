r"""Linear attention (chapter 04): one mechanism in several forms, the layers built on it, attention as an RNN.

The submodules follow the chapter:

* :mod:`~minilib.linear_attention.forms` -- causal linear attention with optional decay in its parallel
  ($L\times L$), recurrent ($D\times D_v$ state) and chunked (intra-chunk quadratic, inter-chunk recurrent) forms;
* :mod:`~minilib.linear_attention.features` -- the feature maps $\phi$ (elu+1, relu, random softmax features);
* :mod:`~minilib.linear_attention.layers` -- the token mixers (linear attention, retention, TransNormer) for
  :class:`~minilib.models.TransformerLM`;
* :mod:`~minilib.linear_attention.rnn` -- softmax attention as an RNN (Aaren): a prefix scan of $(m, \ell, a)$;
* :mod:`~minilib.linear_attention.variants` -- the non-causal (encoder) form, Linformer's low-rank keys and values, Flowformer's flow attention,
  kernelized attention with relative positions by FFT, SLAB's simplified linear attention;
* :mod:`~minilib.linear_attention.sequence_parallel` -- LASP-2: workers that exchange only their states.

Every public name is importable from here (``from minilib.linear_attention import linear_attention_chunked``).
"""
from __future__ import annotations

from minilib.linear_attention.features import feature_map
from minilib.linear_attention.forms import linear_attention_chunked, linear_attention_parallel, linear_attention_recurrent
from minilib.linear_attention.layers import (LinearAttention, LinearAttentionCache, Retention, TransNormerBlock,
                                             multiscale_decays, transnormer_decays)
from minilib.linear_attention.rnn import aaren_combine, attention_rnn_step, attention_scan
from minilib.linear_attention.sequence_parallel import lasp2_simulated
from minilib.linear_attention.variants import (flow_attention, kernelized_rpe_fft, linear_attention_noncausal,
                                               linformer_attention, simplified_linear_attention)

__all__ = [
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_chunked",
    "feature_map",
    "LinearAttention",
    "LinearAttentionCache",
    "Retention",
    "multiscale_decays",
    "TransNormerBlock",
    "transnormer_decays",
    "aaren_combine",
    "attention_scan",
    "attention_rnn_step",
    "linformer_attention",
    "flow_attention",
    "lasp2_simulated",
    "kernelized_rpe_fft",
    "simplified_linear_attention",
    "linear_attention_noncausal",
]
