r"""Token mixers beyond attention (chapter 07), all :class:`~minilib.mixing.TokenMixer` and registered by name.

- :mod:`~minilib.mixers.block`: :class:`MetaFormerBlock`, the :class:`MetaFormer` classifier, :class:`AttentionMixer`,
  :class:`BidirectionalMixer` (two causal mixers, one per direction), :func:`mixing_matrix`;
- :mod:`~minilib.mixers.local`: :func:`pool_mix` (``"pool"``), :func:`depthwise_conv` (``"dwconv"``),
  :func:`ponet_mix` with :func:`segment_max_pool` and :func:`local_max_pool` (``"ponet"``),
  :func:`ffnified_attention` (``"ffnified"``), the ``"identity"`` mixer and the :class:`WindowCache` of the causal ones;
- :mod:`~minilib.mixers.fourier`: :func:`fourier_mix` (``"fourier"``, FNet), :func:`aff_mix` (``"aff"``; its causal
  form applies :func:`~minilib.convolution.fft_conv`), :func:`dct`, :func:`idct`, :func:`dct_matrix`, :func:`dct_downsample`
  (``"dct"``, the Fourier Transformer's low-pass);
- :mod:`~minilib.mixers.mlp`: :func:`token_mlp_mix` (``"token_mlp"``, MLP-Mixer), :func:`ninformer_mix` (``"ninformer"``).
- :mod:`~minilib.mixers.zoo`: the MetaFormer comparison (tasks, parameter-matched classifiers, training), imported by name.

A registered mixer reads ``causal`` from ``mixer_kwargs`` (default ``True``, for language models); the Fourier and
DCT mixers cannot be causal and say so.
"""
from minilib.mixers.block import (READOUTS, AttentionMixer, BidirectionalMixer, MetaFormer, MetaFormerBlock, MixerConfig,
                                  mixing_matrix)
from minilib.mixers.fourier import (AFFMixer, DCTLowpassMixer, FourierMixer, aff_mix, dct, dct_downsample, dct_matrix,
                                    fourier_mix, idct)
from minilib.mixers.local import (DepthwiseConvMixer, FFNifiedAttention, IdentityMixer, PoNetMixer, PoolMixer,
                                  WindowCache, depthwise_conv, ffnified_attention, local_max_pool, ponet_mix, pool_mix,
                                  segment_max_pool)
from minilib.mixers.mlp import NiNformerMixer, TokenMLPMixer, ninformer_mix, token_mlp_mix

__all__ = [
    "AFFMixer", "AttentionMixer", "BidirectionalMixer", "DCTLowpassMixer", "DepthwiseConvMixer", "FFNifiedAttention", "FourierMixer",
    "IdentityMixer", "MetaFormer", "MetaFormerBlock", "MixerConfig", "NiNformerMixer", "PoNetMixer", "PoolMixer",
    "READOUTS", "TokenMLPMixer", "WindowCache", "aff_mix", "dct", "dct_downsample", "dct_matrix",
    "depthwise_conv", "ffnified_attention", "fourier_mix", "idct", "local_max_pool", "mixing_matrix", "ninformer_mix",
    "ponet_mix", "pool_mix", "segment_max_pool", "token_mlp_mix",
]
