"""Whole models composed from the core and the families, and how to train them.

- :mod:`~minilib.models.transformer`: :class:`TransformerConfig`, :class:`Block`, :class:`TransformerLM`, :func:`sample_next`;
- :mod:`~minilib.models.training`: :func:`lm_loss`, :func:`train`, :func:`evaluate` (and :func:`~minilib.experiments.count_parameters`, re-exported);
- :mod:`~minilib.models.attention_tools`: :func:`attention_maps`, :func:`set_rope_scaling`;
- :mod:`~minilib.models.conversions`: Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm rewrites of a trained model;
- chapter 01's variations on the block: :mod:`~minilib.models.encoder_decoder`, :mod:`~minilib.models.minimal`,
  :mod:`~minilib.models.gated`, :mod:`~minilib.models.dual_stream`;
- chapter 13's comparison of every causal mixer in one skeleton: :mod:`~minilib.models.zoo`.

Every public name is importable from here (``from minilib.models import TransformerLM, train``).
"""
from minilib._moved import moved_names
from minilib.experiments import count_parameters
from minilib.models.attention_tools import attention_maps, set_rope_scaling
from minilib.models.conversions import ConvertedLM, to_pre_crmsnorm, to_pre_rmsnorm
from minilib.models.dual_stream import DualStreamBlock, DualStreamLM
from minilib.models.encoder_decoder import DecoderLayer, EncoderDecoderTransformer, EncoderLayer
from minilib.models.gated import GatedBlock, GatedResidual, GatedTransformerLM
from minilib.models.minimal import MinimalAttention, MinimalBlock, MinimalTransformer
from minilib.models.training import evaluate, lm_loss, train
from minilib.models.transformer import Block, TransformerConfig, TransformerLM, sample_next
from minilib.models.zoo import (EXCLUDED, ZOO_ROWS, decoding_state_bytes, matched_d_ff, mqar_accuracy, zoo_config,
                                zoo_model)

__all__ = [
    "TransformerConfig", "Block", "TransformerLM", "sample_next",
    "lm_loss", "train", "evaluate", "count_parameters",
    "attention_maps", "set_rope_scaling",
    "ConvertedLM", "to_pre_rmsnorm", "to_pre_crmsnorm",
    "EncoderLayer", "DecoderLayer", "EncoderDecoderTransformer",
    "MinimalAttention", "MinimalBlock", "MinimalTransformer",
    "GatedResidual", "GatedBlock", "GatedTransformerLM",
    "DualStreamBlock", "DualStreamLM",
    "ZOO_ROWS", "EXCLUDED", "zoo_config", "zoo_model", "matched_d_ff", "decoding_state_bytes", "mqar_accuracy",
]

# the core blocks that several models share moved to the core
__getattr__ = moved_names(__name__, {"FeedForward": "minilib.feedforward", "make_norm": "minilib.norms"})
