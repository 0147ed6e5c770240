r"""Normalisation layers of the residual stream: LayerNorm and RMSNorm, written from their equations."""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import require_tensor


def _check_last_dim(x: torch.Tensor, d: int) -> None:
    require_tensor("x", x, floating=True)
    if x.ndim == 0 or x.shape[-1] != d:
        raise ValueError(f"x must end in the normalised size {d}, got shape {tuple(x.shape)}")


class LayerNorm(nn.Module):
    r"""Layer normalisation over the last dimension.

    $$ \operatorname{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,\quad
       \mu = \tfrac1d \textstyle\sum_i x_i,\ \sigma^2 = \tfrac1d \sum_i (x_i - \mu)^2 $$

    ``x (..., d) -> (..., d)``; same output as ``torch.nn.LayerNorm(d, eps=eps)``. See :cite:`ba2016layernorm`.
    """

    def __init__(self, d: int, *, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim(x, self.d)
        centred = x - x.mean(dim=-1, keepdim=True)
        y = centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation: LayerNorm without re-centring.

    $$ \operatorname{RMSNorm}(x) = \gamma \odot \frac{x}{\sqrt{\tfrac1d \sum_i x_i^2 + \epsilon}} $$

    ``x (..., d) -> (..., d)``; same output as ``torch.nn.RMSNorm(d, eps=eps)``. See :cite:`zhang2019rmsnorm`.
    """

    def __init__(self, d: int, *, eps: float = 1e-6):
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim(x, self.d)
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight
