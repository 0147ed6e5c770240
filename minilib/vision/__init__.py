r"""Vision Transformers on small images: patches, windows, convolutions and tokens-in-tokens.

- :mod:`~minilib.vision.vit`: :func:`patchify`, :class:`PatchEmbedding`, :class:`EncoderBlock`,
  :class:`VisionTransformer`, :func:`seq_pool`, :class:`PoolHead`, :func:`attention_rollout` :cite:`dosovitskiy2021image`;
- :mod:`~minilib.vision.windows`: Swin's window partition, shifted-window mask, window attention, patch merging;
- :mod:`~minilib.vision.mixers`: channel, cascaded-group, single-head, convolutional and Manhattan-decay attention;
- :mod:`~minilib.vision.tokens`: convolutional tokenizer, Tokens-to-Token, Transformer in Transformer, CrossViT fusion;
- :mod:`~minilib.vision.causal`: the causal ViT with a soft mask; :mod:`~minilib.vision.reparam`: branch merging;
- :mod:`~minilib.vision.models`: the classifiers of chapter 11 and a small CNN;
- :mod:`~minilib.vision.data`: the digits upsampled to any size, and random-shift augmentation.
"""
from minilib.vision.causal import CausalViT, causal_vit, soft_causal_mask
from minilib.vision.data import RandomShift, digits_images, random_shift, upsample
from minilib.vision.mixers import (CascadedGroupAttention, ChannelAttention, ConvAttention, ManhattanAttention,
                                   SingleHeadAttention, axial_decay_attention, channel_attention, head_similarity,
                                   manhattan_decay)
from minilib.vision.models import (CCT, RMT, SHViT, Classifier, CrossViT, CvT, DaViT, EfficientViT, ReparamViT,
                                   SmallCNN, Swin, T2TViT, TNT)
from minilib.vision.reparam import BranchedLinear, merge_branches
from minilib.vision.tokens import ConvTokenizer, CrossFusion, T2TStage, TNTBlock, cross_attention_fusion, soft_split
from minilib.vision.vit import (EncoderBlock, PatchEmbedding, PoolHead, VisionTransformer, attention_rollout, patchify,
                                seq_pool, sincos_positions_2d)
from minilib.vision.windows import (PatchMerging, WindowAttention, patch_merging, relative_position_index,
                                    shifted_window_mask, window_attention, window_attention_flops, window_partition,
                                    window_reverse)

__all__ = [
    "patchify", "sincos_positions_2d", "PatchEmbedding", "EncoderBlock", "VisionTransformer", "seq_pool", "PoolHead", "attention_rollout",
    "window_partition", "window_reverse", "shifted_window_mask", "relative_position_index", "window_attention",
    "window_attention_flops", "WindowAttention", "patch_merging", "PatchMerging",
    "channel_attention", "ChannelAttention", "CascadedGroupAttention", "SingleHeadAttention", "ConvAttention",
    "manhattan_decay", "ManhattanAttention", "axial_decay_attention", "head_similarity",
    "ConvTokenizer", "soft_split", "T2TStage", "TNTBlock", "cross_attention_fusion", "CrossFusion",
    "soft_causal_mask", "CausalViT", "causal_vit", "BranchedLinear", "merge_branches",
    "Classifier", "CCT", "CvT", "T2TViT", "TNT", "CrossViT", "Swin", "DaViT", "EfficientViT", "SHViT", "RMT",
    "ReparamViT", "SmallCNN", "upsample", "digits_images", "random_shift", "RandomShift",
]
