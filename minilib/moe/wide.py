r"""Vision blocks of chapter 09 on the digits ViT: Activator (GLU MLPs instead of attention) and WideNet (one
attention and one MoE shared by every layer, each layer with its own LayerNorms).

- :class:`ActivatorBlock`: $z \leftarrow z + \operatorname{GLU}_\text{tokens}(\operatorname{LN}_1 z)$, a gated MLP
  across the token axis in place of attention, then (optionally) the usual channel MLP
  :cite:`abdullah2024activator`.
- :class:`WideNet`: $z \leftarrow z + \operatorname{MHA}(\operatorname{LN}^{(\ell)}_1 z)$,
  $z \leftarrow z + \operatorname{MoE}(\operatorname{LN}^{(\ell)}_2 z)$ with MHA and MoE the same modules in every layer
  $\ell$ :cite:`xue2022widenet`.

Both are classifiers ``images (B, H, W) -> logits (B, n_classes)`` built from :class:`minilib.vision.PatchEmbedding`.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_flag, check_last_dim, check_positive_int
from minilib.attention import MultiHeadAttention
from minilib.feedforward import FeedForward
from minilib.moe.layer import MoE, ffn_flops
from minilib.norms import LayerNorm
from minilib.vision import PatchEmbedding

__all__ = ["ActivatorBlock", "ActivatorClassifier", "WideNet", "vit_block_flops"]


def vit_block_flops(n_tokens: int, d_model: int, d_ff: int) -> int:
    r"""Matrix-product FLOPs of one ViT encoder block for ``n_tokens`` tokens: $8 N d^2$ (Q, K, V, O projections),
    $4 N^2 d$ (scores and weighted values) and a GELU FFN ($4 N d\, d_\text{ff}$)."""
    for name, value in (("n_tokens", n_tokens), ("d_model", d_model), ("d_ff", d_ff)):
        check_positive_int(name, value)
    return 8 * n_tokens * d_model ** 2 + 4 * n_tokens ** 2 * d_model + n_tokens * ffn_flops(d_model, d_ff, "gelu")


class ActivatorBlock(nn.Module):
    r"""Activator layer for ``n_tokens`` tokens of width ``d_model``: a GEGLU MLP across tokens (hidden ``token_hidden``)
    then, if ``channel_mlp``, a GEGLU MLP across channels (hidden ``d_ff``). ``z (B, N, d) -> (B, N, d)``.
    See :cite:`abdullah2024activator`."""

    def __init__(self, n_tokens: int, d_model: int, *, token_hidden: int, d_ff: int, channel_mlp: bool = True):
        super().__init__()
        for name, value in (("n_tokens", n_tokens), ("d_model", d_model), ("token_hidden", token_hidden),
                            ("d_ff", d_ff)):
            check_positive_int(name, value)
        check_flag("channel_mlp", channel_mlp)
        self.n_tokens, self.d_model = n_tokens, d_model
        self.norm1 = LayerNorm(d_model)
        self.token_mlp = FeedForward(n_tokens, token_hidden, kind="geglu")
        self.norm2 = LayerNorm(d_model) if channel_mlp else None
        self.channel_mlp = FeedForward(d_model, d_ff, kind="geglu") if channel_mlp else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_last_dim("z", z, self.d_model, ndim=3)
        if z.shape[1] != self.n_tokens:
            raise ValueError(f"z must hold n_tokens = {self.n_tokens} tokens, got shape {tuple(z.shape)}")
        z = z + self.token_mlp(self.norm1(z).transpose(1, 2)).transpose(1, 2)
        return z if self.channel_mlp is None else z + self.channel_mlp(self.norm2(z))

    def flops(self) -> int:
        """Matrix-product FLOPs of one forward for one image (three matrices per GLU MLP)."""
        n, d = self.n_tokens, self.d_model
        token = d * ffn_flops(n, self.token_mlp.w1.out_features, "geglu")
        channel = 0 if self.channel_mlp is None else n * ffn_flops(d, self.channel_mlp.w1.out_features, "geglu")
        return token + channel


class ActivatorClassifier(nn.Module):
    """Patch embedding, ``n_layers`` :class:`ActivatorBlock` s, LayerNorm, mean over tokens, linear head.
    See :cite:`abdullah2024activator`."""

    def __init__(self, image_size: int, patch: int, d_model: int, n_layers: int, *, n_classes: int,
                 token_hidden: int, d_ff: int, channel_mlp: bool = True):
        super().__init__()
        check_positive_int("n_layers", n_layers)
        check_positive_int("n_classes", n_classes)
        self.embed = PatchEmbedding(image_size, patch, d_model)
        n = self.embed.n_patches
        self.blocks = nn.ModuleList(ActivatorBlock(n, d_model, token_hidden=token_hidden, d_ff=d_ff,
                                                   channel_mlp=channel_mlp) for _ in range(n_layers))
        self.final_norm = LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.embed(images)
        for block in self.blocks:
            z = block(z)
        return self.head(self.final_norm(z).mean(dim=1))


class WideNet(nn.Module):
    r"""WideNet classifier: ``n_layers`` layers sharing one attention and one :class:`~minilib.moe.MoE`
    (``n_experts``, ``top_k``, GELU experts of width ``d_ff``); ``share_norms=False`` gives every layer its own two
    LayerNorms (the paper's design), ``True`` one pair for all (the ablation). See :cite:`xue2022widenet`."""

    def __init__(self, image_size: int, patch: int, d_model: int, n_layers: int, n_heads: int, *, n_classes: int,
                 n_experts: int, top_k: int = 2, d_ff: int | None = None, share_norms: bool = False):
        super().__init__()
        check_positive_int("n_layers", n_layers)
        check_positive_int("n_classes", n_classes)
        check_flag("share_norms", share_norms)
        self.embed = PatchEmbedding(image_size, patch, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.moe = MoE(d_model, d_ff or 4 * d_model, n_experts, top_k, kind="gelu")
        n_norms = 1 if share_norms else n_layers
        self.norms1 = nn.ModuleList(LayerNorm(d_model) for _ in range(n_norms))
        self.norms2 = nn.ModuleList(LayerNorm(d_model) for _ in range(n_norms))
        self.n_layers = n_layers
        self.final_norm = LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.embed(images)
        aux = []
        for layer in range(self.n_layers):
            i = layer % len(self.norms1)
            z = z + self.attn(self.norms1[i](z), causal=False)
            z = z + self.moe(self.norms2[i](z))
            aux.append(self.moe.aux_loss)
        self.aux_loss = sum(aux) if all(a is not None for a in aux) else None
        return self.head(self.final_norm(z).mean(dim=1))
