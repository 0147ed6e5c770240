"""Deprecated module: the Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm conversions live in :mod:`minilib.models.conversions`.

``from minilib.prenorm import X`` still works, with a ``DeprecationWarning``.
"""
from minilib._moved import moved_names

_NEW_HOMES = dict.fromkeys(["ConvertedLM", "to_pre_rmsnorm", "to_pre_crmsnorm"], "minilib.models.conversions")
__all__ = sorted(_NEW_HOMES)
__getattr__ = moved_names(__name__, _NEW_HOMES)
