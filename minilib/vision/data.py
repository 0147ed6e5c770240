r"""The digits at any size, and the augmentation the chapter trains with.

scikit-learn's 1 797 bundled $8 \times 8$ digits (no download) split by :func:`minilib.data.digits_split`, optionally
upsampled bilinearly to $16 \times 16$ or $32 \times 32$ so that patch sizes and token counts can vary; and a random
translation by whole pixels, the one augmentation that keeps a digit a digit at this resolution. Augmentation runs
inside the model as :class:`RandomShift`, a module that acts in training mode only, so any training loop uses it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_nonnegative_int, check_positive_int, require_tensor
from minilib.data import digits_split

__all__ = ["upsample", "digits_images", "random_shift", "RandomShift"]


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    r"""Bilinear resize of ``images (B, H, W)`` to ``(B, size, size)`` with pixel centres at half-integers.

    $$ y_{ij} = \sum_{a, b} \lambda(u_i - a)\, \lambda(v_j - b)\, x_{ab}, \quad u_i = (i + \tfrac12)\tfrac{H}{\text{size}}
       - \tfrac12 \text{ (clamped to the image)}, \quad \lambda(t) = \max(0, 1 - |t|) $$

    The same convention as ``F.interpolate(..., mode="bilinear", align_corners=False)``, which it calls.
    """
    require_tensor("images", images, ndim=3, floating=True)
    check_positive_int("size", size)
    return F.interpolate(images[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def digits_images(size: int = 8, *, n_test: int = 360, seed: int = 0):
    """``((x_train, y_train), (x_test, y_test))``: the digits of :func:`minilib.data.digits_split` (the same seeded
    split) as ``(n, size, size)`` images in [0, 1]; ``size`` is 8 (the originals) or larger (:func:`upsample`)."""
    check_positive_int("size", size)
    if size < 8:
        raise ValueError(f"size must be at least the digits' 8 pixels, got {size}")
    (x_train, y_train), (x_test, y_test) = digits_split(n_test=n_test, seed=seed)
    if size != 8:
        x_train, x_test = upsample(x_train, size), upsample(x_test, size)
    return (x_train, y_train), (x_test, y_test)


def random_shift(images: torch.Tensor, max_shift: int, *, generator: torch.Generator) -> torch.Tensor:
    r"""Translate each image by its own random whole-pixel offset, filling the uncovered border with zeros.

    $$ y_{b,i,j} = x_{b,\, i - \delta_b,\, j - \epsilon_b} \ (0 \text{ outside the image}), \qquad
       \delta_b, \epsilon_b \sim \mathcal U\{-s, \dots, s\} $$

    ``images (B, H, W)`` or ``(B, C, H, W)`` -> the same shape; ``max_shift`` $= s$; offsets drawn from ``generator``.
    """
    require_tensor("images", images, ndim=(3, 4), floating=True)
    check_nonnegative_int("max_shift", max_shift)
    if max_shift == 0:
        return images
    B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
    s = max_shift
    offsets = torch.randint(0, 2 * s + 1, (2, B), generator=generator)  # top-left corner of the crop in the padded image
    rows = (offsets[0, :, None] + torch.arange(H)).to(images.device)
    cols = (offsets[1, :, None] + torch.arange(W)).to(images.device)
    padded = F.pad(images, (s, s, s, s))
    batch = torch.arange(B, device=images.device)[:, None, None]
    if images.ndim == 3:
        return padded[batch, rows[:, :, None], cols[:, None, :]]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class RandomShift(nn.Module):
    """:func:`random_shift` by up to ``max_shift`` pixels in training mode, the identity in eval mode.

    Put it in front of a classifier, ``nn.Sequential(RandomShift(1), model)``, and any training loop augments; its
    own generator, seeded with ``seed``, makes the draws repeatable. It has no parameters.
    """

    def __init__(self, max_shift: int, *, seed: int = 0):
        super().__init__()
        check_nonnegative_int("max_shift", max_shift)
        self.max_shift = max_shift
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return images
        return random_shift(images, self.max_shift, generator=self.generator)
