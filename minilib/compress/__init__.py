r"""Model compression and efficient inference (chapters 02 and 12).

- :mod:`minilib.compress.quant`: fake quantization (integer per tensor/channel/group, floating-point formats with
  a searched exponent bias, binary/ternary weights, a learnable-range activation quantizer), straight-through
  gradients :cite:`nagel2021white`, :cite:`liu2023llmfp4`, :cite:`liu2023binary`;
- :mod:`minilib.compress.prune`: magnitude, activation-aware and N:M masks, adaptive sparse training, sublayer
  redundancy :cite:`huang2024pruning`, :cite:`he2024matters`;
- :mod:`minilib.compress.factorize`: truncated SVD with an energy-chosen rank, dense times N:M-sparse factors
  :cite:`mehta2019lowrank`, :cite:`chand2023dsformer`;
- :mod:`minilib.compress.tokens`: token merging, learned-threshold merging and pruning, sampling, LZ77
  meta-tokens, entropy patching :cite:`bolya2023tome`, :cite:`tran2024pitome`, :cite:`bonnaerens2023ltmp`, :cite:`harvill2025metatokens`, :cite:`pagnoni2024blt`;
- :mod:`minilib.compress.pooling`: low-rank multi-head attention pooling :cite:`mehta2019lowrank`;
- :mod:`minilib.compress.decoding`: draft-and-verify decoding :cite:`lim2025hybrid`;
- :mod:`minilib.compress.fusion`: optimal-transport alignment of hidden units before averaging :cite:`imfeld2024fusion`.
"""
from minilib.compress.quant import (quantization_scale, fake_quantize, fake_quantized, quantized_weights,
                                    quantize_int, fp_grid, fp_quantize, search_fp_format, power_of_two_scales,
                                    fold_input_scales, binarize, ternarize, ElasticActQuant)
from minilib.compress.prune import magnitude_mask, wanda_mask, nm_mask, ast_train, sublayer_redundancy, prune_output_aware
from minilib.compress.factorize import svd_factorize, energy_rank, dense_sparse_factorize
from minilib.compress.tokens import (merge_tokens, tome, pitome, LTMP, adaptive_token_sampler, lz_tokens_encode,
                                     lz_tokens_decode, lz_vocab_size, bigram_entropies, entropy_patches)
from minilib.compress.pooling import low_rank_mh_pooling, LowRankMHPooling
from minilib.compress.decoding import speculative_accept, draft_verify_generate
from minilib.compress.fusion import sinkhorn, align_units

__all__ = [
    "quantization_scale", "fake_quantize", "fake_quantized", "quantized_weights", "quantize_int", "fp_grid",
    "fp_quantize", "search_fp_format", "power_of_two_scales", "fold_input_scales", "binarize", "ternarize",
    "ElasticActQuant", "magnitude_mask", "wanda_mask", "nm_mask", "ast_train", "sublayer_redundancy", "prune_output_aware",
    "svd_factorize", "energy_rank", "dense_sparse_factorize", "merge_tokens", "tome", "pitome", "adaptive_token_sampler", "lz_tokens_encode",
    "lz_tokens_decode", "lz_vocab_size", "bigram_entropies", "entropy_patches", "LTMP", "low_rank_mh_pooling",
    "LowRankMHPooling", "speculative_accept", "draft_verify_generate", "sinkhorn", "align_units",
]
