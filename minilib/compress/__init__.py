r"""Model compression and efficient inference (chapters 02 and 12).

- :mod:`minilib.compress.quant`: fake quantization (integer per tensor/channel/group, floating-point formats with
  a searched exponent bias, binary/ternary weights, a learnable-range activation quantizer), straight-through
  gradients :cite:`nagel2021white`, :cite:`liu2023llmfp4`, :cite:`liu2023binary`;
- :mod:`minilib.compress.prune`: magnitude, activation-aware and N:M masks, sublayer redundancy
  :cite:`huang2024pruning`, :cite:`he2024matters`;
- :mod:`minilib.compress.factorize`: truncated SVD with an energy-chosen rank :cite:`mehta2019lowrank`;
- :mod:`minilib.compress.tokens`: token merging and sampling, LZ77 meta-tokens, entropy patching
  :cite:`bolya2023tome`, :cite:`tran2024pitome`, :cite:`harvill2025metatokens`, :cite:`pagnoni2024blt`;
- :mod:`minilib.compress.pooling`: low-rank multi-head attention pooling :cite:`mehta2019lowrank`;
- :mod:`minilib.compress.decoding`: draft-and-verify decoding :cite:`lim2025hybrid`.
"""
from minilib.compress.decoding import *  # noqa: F401,F403
from minilib.compress.decoding import __all__ as _decoding
from minilib.compress.factorize import *  # noqa: F401,F403
from minilib.compress.factorize import __all__ as _factorize
from minilib.compress.pooling import *  # noqa: F401,F403
from minilib.compress.pooling import __all__ as _pooling
from minilib.compress.prune import *  # noqa: F401,F403
from minilib.compress.prune import __all__ as _prune
from minilib.compress.quant import *  # noqa: F401,F403
from minilib.compress.quant import __all__ as _quant
from minilib.compress.tokens import *  # noqa: F401,F403
from minilib.compress.tokens import __all__ as _tokens

__all__ = [*_quant, *_prune, *_factorize, *_tokens, *_pooling, *_decoding]
