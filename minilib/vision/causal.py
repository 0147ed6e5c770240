r"""A LLaMA-style causal ViT: image tokens under a causal mask, the class token placed after them :cite:`wang2024adapting`.

$$ A = \operatorname{softmax}\!\Big(\tfrac{QK^\top}{\sqrt D} + \log M_\alpha\Big), \qquad
   (M_\alpha)_{ts} = \begin{cases} 1 & s \le t \\ \alpha & s > t \end{cases} $$

$\alpha = 1$ is bidirectional attention and $\alpha = 0$ causal; training anneals $\alpha$ from 1 to 0 (the soft
mask), here linearly over the first ``anneal_steps`` training steps, $\alpha_t = \max(0, 1 - t / T_{\text{anneal}})$. With a causal mask a class token placed *first* only ever sees itself, so its output cannot depend on
the image; placed *last* it sees every patch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from minilib._checks import check_nonnegative_int, check_number, check_positive_int
from minilib.vision.vit import EncoderBlock, PatchEmbedding, PoolHead

__all__ = ["soft_causal_mask", "CausalViT", "causal_vit"]


def soft_causal_mask(n: int, alpha: float, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""The additive bias $\log M_\alpha$ ``(n, n)``: 0 on and below the diagonal, $\log\alpha$ above (``-inf`` at 0)."""
    check_positive_int("n", n)
    alpha = check_number("alpha", alpha, low=0.0, high=1.0)
    future = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    log_alpha = math.log(alpha) if alpha > 0 else float("-inf")
    return torch.zeros(n, n, device=device, dtype=dtype).masked_fill(future, log_alpha)


class CausalViT(nn.Module):
    r"""Patch tokens plus one learned class token (first or last), pre-LN blocks under :func:`soft_causal_mask`.

    ``images (B, C, H, W)`` or ``(B, H, W)`` -> ``logits (B, n_classes)`` read from the class token.
    ``alpha`` (attribute, default 0 = causal) is the soft mask's weight on future tokens. With ``anneal_steps`` $= T > 0$
    every forward pass in training mode first sets ``alpha`` $= \max(0, 1 - t/T)$ and counts ``t`` (the buffer
    ``steps_seen``), so any training loop anneals the mask from bidirectional to causal in $T$ steps; eval mode uses
    ``alpha`` as it stands (0 once the anneal is over). :cite:`wang2024adapting`
    """

    POSITIONS = ("first", "last")  #: where the class token sits

    def __init__(self, image_size: int | tuple[int, int], patch: int, d_model: int, n_layers: int, n_heads: int, *,
                 n_classes: int, cls_position: str = "last", d_ff: int | None = None, channels: int = 1,
                 alpha: float = 0.0, anneal_steps: int = 0):
        super().__init__()
        if cls_position not in self.POSITIONS:
            raise ValueError(f"cls_position must be one of {self.POSITIONS}, got {cls_position!r}")
        check_positive_int("n_layers", n_layers)
        self.embed = PatchEmbedding(image_size, patch, d_model, channels=channels)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff=4 * d_model if d_ff is None else d_ff)
                                    for _ in range(n_layers))
        self.cls_position = cls_position
        self.head = PoolHead(d_model, n_classes, pool=cls_position)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0)
        self.anneal_steps = check_nonnegative_int("anneal_steps", anneal_steps)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training and self.anneal_steps:
            self.alpha = max(0.0, 1.0 - self.steps_seen.item() / self.anneal_steps)
            self.steps_seen += 1
        z = self.embed(images)
        cls = self.cls.expand(z.shape[0], 1, -1)
        z = torch.cat([cls, z] if self.cls_position == "first" else [z, cls], dim=1)
        bias = soft_causal_mask(z.shape[1], self.alpha, device=z.device, dtype=z.dtype)
        for block in self.blocks:
            z = block(z, bias=bias)
        return self.head(z)


def causal_vit(image_size: int | tuple[int, int], patch: int, d_model: int, n_layers: int, n_heads: int, *,
               n_classes: int, cls_position: str = "last", d_ff: int | None = None, channels: int = 1,
               anneal_steps: int = 0) -> CausalViT:
    """A :class:`CausalViT` with a causal mask (``alpha = 0``), annealed to it from bidirectional over ``anneal_steps``
    training steps when that is positive (the soft mask)."""
    return CausalViT(image_size, patch, d_model, n_layers, n_heads, n_classes=n_classes, cls_position=cls_position,
                     d_ff=d_ff, channels=channels, anneal_steps=anneal_steps)
