r"""Heads: cutting the model dimension into heads and back, and sharing key/value heads (GQA, MQA)."""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int, require_tensor

__all__ = ["expand_kv_heads", "split_heads", "merge_heads"]


def expand_kv_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    r"""Repeat each key/value head for the ``n_heads // Hkv`` query heads it serves (GQA, MQA when ``Hkv = 1``).

    ``(B, Hkv, S, D) -> (B, H, S, D)``; query head ``h`` reads key/value head ``h // (H / Hkv)``.
    """
    require_tensor("x", x, ndim=4)
    n_kv = x.shape[1]
    if n_kv == 0 or check_positive_int("n_heads", n_heads) % n_kv != 0:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of the key/value heads in x {tuple(x.shape)}")
    return x if n_kv == n_heads else x.repeat_interleave(n_heads // n_kv, dim=1)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    r"""Cut the model dimension into heads: ``(B, T, H * D) -> (B, H, T, D)``, head $h$ taking columns $hD, \dots, (h+1)D - 1$."""
    require_tensor("x", x, ndim=3)
    B, T, C = x.shape
    if C % check_positive_int("n_heads", n_heads):
        raise ValueError(f"the last dimension of x {tuple(x.shape)} must be divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the heads again: ``(B, H, T, D) -> (B, T, H * D)``, the inverse of :func:`split_heads`."""
    require_tensor("x", x, ndim=4)
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)
