r"""The chapter's image classifiers, each ``images (B, C, H, W)`` or ``(B, H, W)`` -> ``logits (B, n_classes)``.

They share one skeleton, :class:`Classifier`: a tokenizer, a stack of blocks, a :class:`~minilib.vision.PoolHead`.
The rows differ in how pixels become tokens and in the token mixer of each block; sizes are explicit keyword
arguments so that the chapter can match parameter counts.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from minilib._checks import check_positive_int
from minilib.feedforward import FeedForward
from minilib.norms import LayerNorm
from minilib.vision.mixers import CascadedGroupAttention, ChannelAttention, ConvAttention, ManhattanAttention, SingleHeadAttention
from minilib.vision.reparam import BranchedLinear
from minilib.vision.tokens import ConvTokenizer, CrossFusion, T2TStage, TNTBlock
from minilib.vision.vit import EncoderBlock, PatchEmbedding, PoolHead, _as_channels_first
from minilib.vision.windows import PatchMerging, WindowAttention

__all__ = ["Classifier", "CCT", "CvT", "T2TViT", "TNT", "CrossViT", "Swin", "DaViT", "EfficientViT", "SHViT", "RMT",
           "ReparamViT", "SmallCNN"]


def _size(image_size) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


class Classifier(nn.Module):
    """``head(blocks(embed(images)))``: the skeleton every transformer classifier of the chapter fills in."""

    def __init__(self, embed: nn.Module, blocks: list[nn.Module], head: PoolHead):
        super().__init__()
        self.embed, self.blocks, self.head = embed, nn.ModuleList(blocks), head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.embed(images)
        for block in self.blocks:
            z = block(z)
        return self.head(z)


class _Positions(nn.Module):
    """Adds a learned position to each of ``n`` tokens."""

    def __init__(self, n: int, d_model: int):
        super().__init__()
        self.pos = nn.Parameter(0.02 * torch.randn(n, d_model))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.pos


class CCT(Classifier):
    r"""Compact Convolutional Transformer: :class:`~minilib.vision.ConvTokenizer`, encoder blocks, sequence pooling.

    An ``H x W`` image gives ``ceil(H/2) ceil(W/2)`` tokens with learned positions. :cite:`hassani2021escaping`
    """

    def __init__(self, image_size, d_model: int, n_layers: int, n_heads: int, *, n_classes: int, d_ff: int | None = None,
                 channels: int = 1):
        H, W = _size(image_size)
        n = -(-H // 2) * -(-W // 2)
        embed = nn.Sequential(ConvTokenizer(d_model, channels=channels), _Positions(n, d_model))
        d_ff = 2 * d_model if d_ff is None else d_ff
        super().__init__(embed, [EncoderBlock(d_model, n_heads, d_ff=d_ff) for _ in range(check_positive_int("n_layers", n_layers))],
                         PoolHead(d_model, n_classes, pool="seq"))


class _ConvEmbed(nn.Module):
    """CvT's convolutional token embedding: an overlapping strided convolution, then LayerNorm; no positions."""

    def __init__(self, channels: int, d_model: int, *, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, d_model, 3, stride=stride, padding=1)
        self.norm = LayerNorm(d_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(_as_channels_first(images)).flatten(2).transpose(1, 2))


class CvT(Classifier):
    r"""CvT: convolutional token embedding (3x3, ``stride``) and :class:`~minilib.vision.ConvAttention` blocks, no
    positional encoding, mean-pooled. :cite:`wu2021cvt`"""

    def __init__(self, image_size, d_model: int, n_layers: int, n_heads: int, *, n_classes: int, stride: int = 2,
                 d_ff: int | None = None, channels: int = 1):
        H, W = _size(image_size)
        grid = ((H - 1) // stride + 1, (W - 1) // stride + 1)
        d_ff = 2 * d_model if d_ff is None else d_ff
        blocks = [EncoderBlock(d_model, n_heads, d_ff=d_ff, mixer=ConvAttention(d_model, n_heads, grid=grid))
                  for _ in range(check_positive_int("n_layers", n_layers))]
        super().__init__(_ConvEmbed(channels, d_model, stride=stride), blocks, PoolHead(d_model, n_classes))


class _T2TEmbed(nn.Module):
    def __init__(self, image_size, channels: int, d_t2t: int, d_model: int):
        super().__init__()
        H, W = _size(image_size)
        self.first = nn.Linear(channels * 9, d_t2t)  # soft split 3x3, stride 1, padding 1: one token per pixel
        self.stage = T2TStage(d_t2t, d_model, grid=(H, W), kernel=3, stride=2, padding=1)
        self.pos = nn.Parameter(0.02 * torch.randn(self.stage.out_grid[0] * self.stage.out_grid[1], d_model))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_channels_first(images)
        tokens = self.first(F.unfold(x, 3, padding=1).transpose(1, 2))
        return self.stage(tokens) + self.pos


class T2TViT(Classifier):
    r"""Tokens-to-Token ViT: soft split to one token per pixel, one T2T stage (transformer layer, re-structurise,
    3x3 stride-2 soft split: $HW \to \lceil H/2 \rceil \lceil W/2 \rceil$ tokens), then encoder blocks. :cite:`yuan2021tokens`"""

    def __init__(self, image_size, d_model: int, n_layers: int, n_heads: int, *, n_classes: int, d_t2t: int = 16,
                 d_ff: int | None = None, channels: int = 1):
        d_ff = 2 * d_model if d_ff is None else d_ff
        super().__init__(_T2TEmbed(image_size, channels, d_t2t, d_model),
                         [EncoderBlock(d_model, n_heads, d_ff=d_ff) for _ in range(check_positive_int("n_layers", n_layers))],
                         PoolHead(d_model, n_classes))


class TNT(nn.Module):
    r"""Transformer in Transformer: ``patch x patch`` sentences of ``word x word`` pixel words, :class:`TNTBlock` s,
    mean over sentences. :cite:`han2021transformer`"""

    def __init__(self, image_size, patch: int, word: int, d_model: int, d_inner: int, n_layers: int, n_heads: int, *,
                 n_classes: int, d_ff: int | None = None, channels: int = 1):
        super().__init__()
        self.patch, self.word = patch, word
        self.sentences = PatchEmbedding(image_size, patch, d_model, channels=channels)
        if patch % check_positive_int("word", word):
            raise ValueError(f"word ({word}) must divide patch ({patch})")
        n_words = (patch // word) ** 2
        self.words = nn.Linear(channels * word * word, d_inner)
        self.word_pos = nn.Parameter(0.02 * torch.randn(n_words, d_inner))
        self.blocks = nn.ModuleList(TNTBlock(d_model, d_inner, n_words, n_heads_outer=n_heads, d_ff=d_ff)
                                    for _ in range(check_positive_int("n_layers", n_layers)))
        self.head = PoolHead(d_model, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        sentences = self.sentences(images)
        words = self.words(TNTBlock.words_of(images, self.patch, self.word)) + self.word_pos
        for block in self.blocks:
            words, sentences = block(words, sentences)
        return self.head(sentences)


class _Branch(nn.Module):
    def __init__(self, image_size, patch: int, d_model: int, n_heads: int, channels: int, d_ff: int):
        super().__init__()
        self.embed = PatchEmbedding(image_size, patch, d_model, channels=channels)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.block = EncoderBlock(d_model, n_heads, d_ff=d_ff)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        z = self.embed(images)
        return torch.cat([self.cls.expand(len(z), 1, -1), z], dim=1)


class CrossViT(nn.Module):
    r"""CrossViT: a small-patch and a large-patch branch (class token each), ``n_layers`` rounds of one encoder block
    per branch then :class:`CrossFusion`; the logits average the two class-token heads. ``branches="small"`` or
    ``"large"`` keeps a single branch (no fusion), the ablation. :cite:`chen2021crossvit`"""

    BRANCHES = ("both", "small", "large")  #: which branches run

    def __init__(self, image_size, patches: tuple[int, int], widths: tuple[int, int], n_layers: int, n_heads: int, *,
                 n_classes: int, mlp_ratio: float = 2.0, channels: int = 1, branches: str = "both"):
        super().__init__()
        if branches not in self.BRANCHES:
            raise ValueError(f"branches must be one of {self.BRANCHES}, got {branches!r}")
        self.which = branches
        keep = {"both": (0, 1), "small": (0,), "large": (1,)}[branches]
        self.branches = nn.ModuleList(nn.ModuleList(_Branch(image_size, patches[i], widths[i], n_heads, channels,
                                                                    max(1, round(mlp_ratio * widths[i])))
                                                    for _ in range(check_positive_int("n_layers", n_layers)))
                                      for i in keep)
        self.fusions = nn.ModuleList(CrossFusion(*widths, n_heads) for _ in range(n_layers)) if branches == "both" else None
        self.heads = nn.ModuleList(PoolHead(widths[i], n_classes, pool="first") for i in keep)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        zs = [layers[0].tokens(images) for layers in self.branches]
        for i in range(len(self.branches[0])):
            zs = [layers[i].block(z) for layers, z in zip(self.branches, zs)]
            if self.fusions is not None:
                zs = list(self.fusions[i](*zs))
        return torch.stack([head(z) for head, z in zip(self.heads, zs)]).mean(dim=0)


class _Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module], merge: nn.Module | None):
        super().__init__()
        self.blocks, self.merge = nn.ModuleList(blocks), merge

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return z if self.merge is None else self.merge(z)


class Swin(Classifier):
    r"""Swin: patch embedding without absolute positions, stages of (window, shifted-window) block pairs with
    :class:`~minilib.vision.PatchMerging` between stages (grid halves, width doubles). :cite:`liu2021swin`"""

    def __init__(self, image_size, patch: int, d_model: int, depths: tuple[int, ...], n_heads: int, *, n_classes: int,
                 window: int, mlp_ratio: float = 2.0, channels: int = 1):
        embed = PatchEmbedding(image_size, patch, d_model, channels=channels, pos="none")
        grid, d, stages = embed.grid, d_model, []
        for s, depth in enumerate(depths):
            w = min(window, *grid)
            blocks = [EncoderBlock(d, n_heads, d_ff=max(1, round(mlp_ratio * d)), mixer=WindowAttention(
                d, n_heads, grid=grid, window=w, shift=(w // 2) * (i % 2) if w < min(grid) else 0))
                for i in range(check_positive_int("depth", depth))]
            last = s == len(depths) - 1
            stages.append(_Stage(blocks, None if last else PatchMerging(d, grid)))
            if not last:
                grid, d = (grid[0] // 2, grid[1] // 2), 2 * d
        super().__init__(embed, stages, PoolHead(d, n_classes))


class DaViT(Classifier):
    r"""DaViT: blocks alternate spatial window attention and channel group attention, patch embedding without
    absolute positions. :cite:`ding2022davit`"""

    def __init__(self, image_size, patch: int, d_model: int, n_layers: int, n_heads: int, *, n_classes: int,
                 window: int, d_ff: int | None = None, channels: int = 1):
        embed = PatchEmbedding(image_size, patch, d_model, channels=channels, pos="none")
        d_ff = 2 * d_model if d_ff is None else d_ff
        blocks = [EncoderBlock(d_model, n_heads, d_ff=d_ff, mixer=(
            WindowAttention(d_model, n_heads, grid=embed.grid, window=window) if i % 2 == 0
            else ChannelAttention(d_model, n_heads))) for i in range(check_positive_int("n_layers", n_layers))]
        super().__init__(embed, blocks, PoolHead(d_model, n_classes))


class _Sandwich(nn.Module):
    """EfficientViT's block: FFN, cascaded group attention, FFN, each pre-normed and residual."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.norms = nn.ModuleList(LayerNorm(d_model) for _ in range(3))
        self.ffn1, self.ffn2 = FeedForward(d_model, d_ff, kind="gelu"), FeedForward(d_model, d_ff, kind="gelu")
        self.attn = CascadedGroupAttention(d_model, n_heads)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z + self.ffn1(self.norms[0](z))
        z = z + self.attn(self.norms[1](z))
        return z + self.ffn2(self.norms[2](z))


class EfficientViT(Classifier):
    r"""EfficientViT: sandwich blocks (FFN, :class:`~minilib.vision.CascadedGroupAttention`, FFN) over patch tokens.
    :cite:`liu2023efficientvit`"""

    def __init__(self, image_size, patch: int, d_model: int, n_layers: int, n_heads: int, *, n_classes: int,
                 d_ff: int | None = None, channels: int = 1):
        d_ff = d_model if d_ff is None else d_ff
        super().__init__(PatchEmbedding(image_size, patch, d_model, channels=channels),
                         [_Sandwich(d_model, n_heads, d_ff) for _ in range(check_positive_int("n_layers", n_layers))],
                         PoolHead(d_model, n_classes))


class SHViT(Classifier):
    r"""SHViT: a stride-``patch`` patchify stem and encoder blocks whose mixer is
    :class:`~minilib.vision.SingleHeadAttention` on a ``partial`` fraction of the channels. :cite:`yun2024shvit`"""

    def __init__(self, image_size, patch: int, d_model: int, n_layers: int, *, n_classes: int, partial: float = 0.25,
                 qk_dim: int = 16, d_ff: int | None = None, channels: int = 1):
        d_ff = 2 * d_model if d_ff is None else d_ff
        blocks = [EncoderBlock(d_model, 1, d_ff=d_ff, mixer=SingleHeadAttention(d_model, partial=partial, qk_dim=qk_dim))
                  for _ in range(check_positive_int("n_layers", n_layers))]
        super().__init__(PatchEmbedding(image_size, patch, d_model, channels=channels), blocks, PoolHead(d_model, n_classes))


class RMT(Classifier):
    r"""RMT-style ViT: :class:`~minilib.vision.ManhattanAttention` blocks over patch tokens without absolute
    positions; ``decay=False`` is the same model without the spatial decay. :cite:`fan2024rmt`"""

    def __init__(self, image_size, patch: int, d_model: int, n_layers: int, n_heads: int, *, n_classes: int,
                 decay: bool = True, d_ff: int | None = None, channels: int = 1):
        embed = PatchEmbedding(image_size, patch, d_model, channels=channels, pos="none" if decay else "learned")
        d_ff = 2 * d_model if d_ff is None else d_ff
        blocks = [EncoderBlock(d_model, n_heads, d_ff=d_ff, mixer=ManhattanAttention(d_model, n_heads, grid=embed.grid,
                                                                                      decay=decay))
                  for _ in range(check_positive_int("n_layers", n_layers))]
        super().__init__(embed, blocks, PoolHead(d_model, n_classes))


class _BranchedFFN(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_branches: int):
        super().__init__()
        self.w1, self.w2 = BranchedLinear(d_model, d_ff, n_branches), BranchedLinear(d_ff, d_model, n_branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.gelu(self.w1(x)))


class ReparamViT(Classifier):
    r"""A ViT whose feed-forward layers are :class:`~minilib.vision.BranchedLinear` with ``n_branches`` parallel
    maps: trained wide, merged by :func:`~minilib.vision.merge_branches` into a plain ViT for inference.
    :cite:`zhou2025rethinking`"""

    def __init__(self, image_size, patch: int, d_model: int, n_layers: int, n_heads: int, *, n_classes: int,
                 n_branches: int, d_ff: int | None = None, channels: int = 1):
        d_ff = 2 * d_model if d_ff is None else d_ff
        blocks = []
        for _ in range(check_positive_int("n_layers", n_layers)):
            block = EncoderBlock(d_model, n_heads, d_ff=d_ff)
            block.ffn = _BranchedFFN(d_model, d_ff, n_branches)
            blocks.append(block)
        super().__init__(PatchEmbedding(image_size, patch, d_model, channels=channels), blocks, PoolHead(d_model, n_classes))


class SmallCNN(nn.Module):
    """The baseline: two 3x3 convolution + ReLU layers, 2x2 max-pool after the second, global average pool, linear."""

    def __init__(self, width: int, *, n_classes: int, channels: int = 1):
        super().__init__()
        check_positive_int("width", width)
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width, check_positive_int("n_classes", n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(_as_channels_first(images)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.mean(dim=(2, 3)))
