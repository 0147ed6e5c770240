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


class CRMSNorm(nn.Module):
    r"""Compressed RMSNorm: RMSNorm of a zero-mean $d$-vector stored in its first $d-1$ coordinates.

    A zero-mean $x \in \mathbb{R}^d$ is determined by $z = x_{1:d-1}$, since $x_d = -\sum_i z_i$. Then

    $$ \operatorname{CRMSNorm}(z) = \frac{z}{\sqrt{\tfrac1d\left(\sum_{i=1}^{d-1} z_i^2 + \big(\sum_{i=1}^{d-1} z_i\big)^2\right) + \epsilon}} $$

    equals the first $d-1$ coordinates of $\operatorname{RMSNorm}(x)$ with unit gain; the gain is
    folded into the next linear layer. ``z (..., d-1) -> (..., d-1)``; ``d`` is the implied size.
    See :cite:`jiang2023prermsnorm`.
    """

    def __init__(self, d: int, *, eps: float = 1e-6):
        super().__init__()
        if d < 2:
            raise ValueError(f"CRMSNorm needs the implied size d >= 2, got d={d}")
        self.d, self.eps = d, eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_last_dim(z, self.d - 1)
        mean_square = (z.pow(2).sum(dim=-1, keepdim=True) + z.sum(dim=-1, keepdim=True).pow(2)) / self.d
        return z * torch.rsqrt(mean_square + self.eps)


class BiasNorm(nn.Module):
    r"""Zipformer's BiasNorm: divide by the RMS of the input shifted by a learned bias, scale by $e^\gamma$.

    $$ \operatorname{BiasNorm}(x) = \frac{x}{\operatorname{RMS}(x - b)}\, e^{\gamma},\qquad
       \operatorname{RMS}(v) = \sqrt{\tfrac1d \textstyle\sum_i v_i^2} $$

    with a channel-wise bias $b \in \mathbb{R}^d$ (used only inside the RMS) and a scalar $\gamma$.
    Unlike LayerNorm the output is not invariant to the input's length $\lVert x\rVert$ when $b \neq 0$.
    ``x (..., d) -> (..., d)``. See :cite:`yao2024zipformer`.
    """

    def __init__(self, d: int):
        super().__init__()
        self.d = d
        self.bias = nn.Parameter(torch.zeros(d))
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim(x, self.d)
        return x * torch.rsqrt((x - self.bias).pow(2).mean(dim=-1, keepdim=True)) * self.log_scale.exp()
