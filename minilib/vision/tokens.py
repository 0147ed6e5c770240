r"""How images become tokens beyond non-overlapping patches.

- :class:`ConvTokenizer`: convolution, ReLU, max-pool, one token per pooled position :cite:`hassani2021escaping`;
- :func:`soft_split` / :class:`T2TStage`: overlapping unfold, re-structurised stage by stage :cite:`yuan2021tokens`;
- :class:`TNTBlock`: pixel-level "words" inside each patch "sentence" :cite:`han2021transformer`;
- :func:`cross_attention_fusion`: a branch's class token queries the other branch's patches :cite:`chen2021crossvit`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from minilib._checks import check_last_dim, check_nonnegative_int, check_positive_int, require_tensor
from minilib.attention import MultiHeadAttention
from minilib.norms import LayerNorm
from minilib.vision.vit import EncoderBlock, _as_channels_first, patchify
from minilib.vision.windows import _check_grid

__all__ = ["ConvTokenizer", "soft_split", "T2TStage", "TNTBlock", "cross_attention_fusion", "CrossFusion"]


class ConvTokenizer(nn.Module):
    r"""CCT's convolutional tokenizer: $z = \operatorname{MaxPool}(\operatorname{ReLU}(\operatorname{Conv}_{k\times k}(x)))$,
    flattened row by row into tokens.

    ``images (B, C, H, W)`` or ``(B, H, W)`` -> ``(B, N, d_model)`` with ``N = ceil(H/2) ceil(W/2)`` (3x3 max-pool,
    stride 2, padding 1). :cite:`hassani2021escaping`
    """

    def __init__(self, d_model: int, *, channels: int = 1, kernel: int = 3):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("channels", channels)
        self.conv = nn.Conv2d(channels, d_model, check_positive_int("kernel", kernel), padding=kernel // 2, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_channels_first(images)
        if x.shape[1] != self.conv.in_channels:
            raise ValueError(f"images must have {self.conv.in_channels} channels, got {tuple(images.shape)}")
        y = F.max_pool2d(F.relu(self.conv(x)), 3, stride=2, padding=1)
        return y.flatten(2).transpose(1, 2)


def soft_split(images: torch.Tensor, kernel: int, *, stride: int, padding: int = 0) -> torch.Tensor:
    r"""Tokens-to-Token soft split: overlapping ``kernel x kernel`` patches, each flattened with its channels.

    ``images (B, C, H, W) -> (B, L, C k^2)`` with $L = \prod_{s \in \{H, W\}} (\lfloor (s + 2p - k)/\text{stride} \rfloor + 1)$;
    neighbouring tokens share pixels when ``stride < kernel``. :cite:`yuan2021tokens`
    """
    require_tensor("images", images, ndim=4)
    check_positive_int("kernel", kernel)
    check_positive_int("stride", stride)
    check_nonnegative_int("padding", padding)
    H, W = images.shape[-2:]
    if kernel > min(H, W) + 2 * padding:
        raise ValueError(f"kernel ({kernel}) must fit the padded images, got images {tuple(images.shape)}, padding {padding}")
    return F.unfold(images, kernel, padding=padding, stride=stride).transpose(1, 2)


class T2TStage(nn.Module):
    r"""One Tokens-to-Token step: a transformer layer on the tokens, re-structurise them into an image, soft split.

    $$ T' = \operatorname{Block}(T), \quad I = \operatorname{Reshape}(T'), \quad T_{\text{next}} = \operatorname{SoftSplit}(I)\, W $$

    ``tokens (B, H*W, d_in)`` on ``grid`` -> ``(B, L, d_out)``; the token count shrinks by about ``stride^2``.
    :cite:`yuan2021tokens`
    """

    def __init__(self, d_in: int, d_out: int, *, grid: tuple[int, int], kernel: int = 3, stride: int = 2,
                 padding: int = 1, n_heads: int = 1):
        super().__init__()
        self.grid = _check_grid(grid)
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.block = EncoderBlock(d_in, n_heads, d_ff=2 * d_in)
        self.proj = nn.Linear(d_in * kernel * kernel, check_positive_int("d_out", d_out))
        self.out_grid = tuple((s + 2 * padding - kernel) // stride + 1 for s in self.grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        require_tensor("tokens", tokens, ndim=3, floating=True)
        B, N, C = tokens.shape
        if N != self.grid[0] * self.grid[1]:
            raise ValueError(f"tokens must hold H*W = {self.grid[0] * self.grid[1]} tokens, got {tuple(tokens.shape)}")
        image = self.block(tokens).transpose(1, 2).reshape(B, C, *self.grid)
        return self.proj(soft_split(image, self.kernel, stride=self.stride, padding=self.padding))


class TNTBlock(nn.Module):
    r"""Transformer in Transformer: an inner block over each patch's pixel "words", then an outer block over patches.

    $$ Y^{\text{in}}_n = \operatorname{Block}_{\text{in}}(Y_n), \qquad
       Z_n \leftarrow Z_n + \operatorname{vec}(Y^{\text{in}}_n) W, \qquad Z \leftarrow \operatorname{Block}_{\text{out}}(Z) $$

    ``(words (B*N, M, d_inner), sentences (B, N, d_outer)) -> same shapes``; ``M`` words per sentence; the outer
    feed-forward width ``d_ff`` defaults to ``4 * d_outer``.
    :cite:`han2021transformer`
    """

    def __init__(self, d_outer: int, d_inner: int, n_words: int, *, n_heads_outer: int, n_heads_inner: int = 1,
                 d_ff: int | None = None):
        super().__init__()
        self.n_words = check_positive_int("n_words", n_words)
        self.inner = EncoderBlock(d_inner, n_heads_inner, d_ff=2 * d_inner)
        self.fold = nn.Linear(n_words * d_inner, d_outer)
        self.outer = EncoderBlock(d_outer, n_heads_outer, d_ff=4 * d_outer if d_ff is None else d_ff)

    def forward(self, words: torch.Tensor, sentences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        require_tensor("words", words, ndim=3, floating=True)
        require_tensor("sentences", sentences, ndim=3, floating=True)
        B, N, _ = sentences.shape
        if words.shape[:2] != (B * N, self.n_words):
            raise ValueError(f"words must be (B*N={B * N}, n_words={self.n_words}, d_inner) for sentences "
                             f"{tuple(sentences.shape)}, got {tuple(words.shape)}")
        words = self.inner(words)
        sentences = sentences + self.fold(words.reshape(B, N, -1))
        return words, self.outer(sentences)

    @staticmethod
    def words_of(images: torch.Tensor, patch: int, word: int) -> torch.Tensor:
        """The pixel words of each patch: ``images (B, C, H, W) -> (B * N, (patch/word)^2, C word^2)``."""
        x = _as_channels_first(images)
        if patch % check_positive_int("word", word):
            raise ValueError(f"word ({word}) must divide patch ({patch})")
        B, C = x.shape[:2]
        patches = patchify(x, patch).reshape(-1, C, patch, patch)
        return patchify(patches, word)


def cross_attention_fusion(cls: torch.Tensor, tokens: torch.Tensor, attn: MultiHeadAttention) -> torch.Tensor:
    r"""CrossViT fusion: one branch's class token is the only query over itself and the other branch's tokens.

    $$ c' = c + \operatorname{MHA}\big(q = c,\ k = v = [c; X]\big) $$

    ``cls (B, 1, d)``, ``tokens (B, N, d)`` (already projected to the width ``d``) -> ``(B, 1, d)``; one query,
    so the cost is linear in ``N``. :cite:`chen2021crossvit`
    """
    require_tensor("cls", cls, ndim=3, floating=True)
    require_tensor("tokens", tokens, ndim=3, floating=True)
    if cls.shape[1] != 1 or cls.shape[0] != tokens.shape[0] or cls.shape[2] != tokens.shape[2]:
        raise ValueError(f"cls must be (B, 1, d) for tokens (B, N, d) = {tuple(tokens.shape)}, got {tuple(cls.shape)}")
    if not isinstance(attn, MultiHeadAttention):
        raise TypeError(f"attn must be a MultiHeadAttention, got {type(attn).__name__}")
    return cls + attn(cls, memory=torch.cat([cls, tokens], dim=1))


class CrossFusion(nn.Module):
    r"""Exchange information between two branches of widths ``d_a`` and ``d_b`` through their class tokens.

    Branch a's class token is projected to ``d_b``, fused with :func:`cross_attention_fusion` over branch b's
    patch tokens, projected back and put in place of the old one (and symmetrically).
    ``(a (B, 1+N_a, d_a), b (B, 1+N_b, d_b)) -> same shapes``. :cite:`chen2021crossvit`
    """

    def __init__(self, d_a: int, d_b: int, n_heads: int):
        super().__init__()
        self.a_to_b, self.b_to_a = nn.Linear(d_a, d_b), nn.Linear(d_b, d_a)
        self.back_a, self.back_b = nn.Linear(d_b, d_a), nn.Linear(d_a, d_b)
        self.norm_a, self.norm_b = LayerNorm(d_b), LayerNorm(d_a)
        self.attn_a, self.attn_b = MultiHeadAttention(d_b, n_heads), MultiHeadAttention(d_a, n_heads)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_last_dim("a", a, self.a_to_b.in_features, size_name="d_a", ndim=3)
        check_last_dim("b", b, self.b_to_a.in_features, size_name="d_b", ndim=3)
        cls_a = self.back_a(cross_attention_fusion(self.norm_a(self.a_to_b(a[:, :1])), b[:, 1:], self.attn_a))
        cls_b = self.back_b(cross_attention_fusion(self.norm_b(self.b_to_a(b[:, :1])), a[:, 1:], self.attn_b))
        return torch.cat([cls_a, a[:, 1:]], dim=1), torch.cat([cls_b, b[:, 1:]], dim=1)
