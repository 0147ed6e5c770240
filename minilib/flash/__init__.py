r"""IO-aware exact attention: tiling, online softmax, and the kernels built on them (chapter 03).

The submodules follow the chapter:

* :mod:`~minilib.flash.io_numpy` -- the NumPy walkthrough that counts every element moved between
  slow memory ("HBM") and fast memory ("SRAM"): standard attention, softmax in 3/2/1 passes,
  the online softmax step and the tiled forward of :cite:`dao2022flashattention`;
* :mod:`~minilib.flash.kernel` -- the PyTorch kernel with a backward recomputed from ``lse``;
* :mod:`~minilib.flash.decode` -- split-K decoding, the merge of partials, the SM schedule model
  and Lean Attention's stream-K decoding :cite:`sanovar2024lean`;
* :mod:`~minilib.flash.packed` -- padding-free packed batches :cite:`zhai2023bytetransformer`;
* :mod:`~minilib.flash.block_sparse` -- block-sparse attention.

Every public name is importable from here (``from minilib.flash import flash_attention``).
``ring_attention`` now lives in :mod:`minilib.parallel` and ``monarch_fft_conv`` in
:mod:`minilib.ssm`; the old names here still work, with a ``DeprecationWarning``.
"""
from __future__ import annotations

from minilib._moved import moved_names
from minilib.flash.block_sparse import block_sparse_attention
from minilib.flash.decode import decode_schedule_utilisation, flash_decode, lean_attention_decode, merge_partials
from minilib.flash.io_numpy import (attention_passes_numpy, flash_attention_numpy, online_softmax_step,
                                    predicted_hbm_accesses, sram_block_sizes, standard_attention_numpy)
from minilib.flash.kernel import default_tiles, flash_attention, flash_attention_lse
from minilib.flash.packed import packed_encoder_layer, varlen_attention

__all__ = [
    "standard_attention_numpy",
    "attention_passes_numpy",
    "online_softmax_step",
    "flash_attention_numpy",
    "sram_block_sizes",
    "predicted_hbm_accesses",
    "flash_attention",
    "flash_attention_lse",
    "default_tiles",
    "merge_partials",
    "flash_decode",
    "decode_schedule_utilisation",
    "lean_attention_decode",
    "varlen_attention",
    "packed_encoder_layer",
    "block_sparse_attention",
]

# moved to their own families; the old import path still works, with a DeprecationWarning
__getattr__ = moved_names(__name__, {"ring_attention": "minilib.parallel", "monarch_fft_conv": "minilib.ssm"})
