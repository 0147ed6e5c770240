"""Deprecated module: chapter 01's whole-model variants live in :mod:`minilib.models` (one module per model).

``from minilib.variants import X`` still works, with a ``DeprecationWarning``; import from ``minilib.models``.
"""
from minilib._moved import moved_names

_NEW_HOMES = {
    **dict.fromkeys(["EncoderLayer", "DecoderLayer", "EncoderDecoderTransformer"], "minilib.models.encoder_decoder"),
    **dict.fromkeys(["SIMILARITIES", "MinimalAttention", "MinimalBlock", "MinimalTransformer"], "minilib.models.minimal"),
    **dict.fromkeys(["GatedResidual", "GatedBlock", "GatedTransformerLM"], "minilib.models.gated"),
    **dict.fromkeys(["MIXINGS", "DualStreamBlock", "DualStreamLM"], "minilib.models.dual_stream"),
    "count_parameters": "minilib.experiments",
    "FeedForward": "minilib.feedforward",
    "make_norm": "minilib.norms",
}
__all__ = sorted(_NEW_HOMES)
__getattr__ = moved_names(__name__, _NEW_HOMES)
