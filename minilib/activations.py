r"""Pointwise activations beyond GELU/SiLU: Zipformer's SwooshR and SwooshL beside Swish, and the polynomial
composition activations PolyReLU and PolyNorm (chapter 09).

Swoosh functions are a softplus with a small negative linear term, so their slope is $-0.08$ far to
the left instead of $0$: a unit that is "off" still passes a gradient.
"""
from __future__ import annotations

import torch

from minilib._checks import require_tensor

__all__ = ["swish", "swoosh_r", "swoosh_l", "polyrelu", "polynorm"]

SWOOSH_SLOPE = 0.08


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # logaddexp is exact everywhere; F.softplus switches to x above a threshold (error up to e^-20).
    return torch.logaddexp(torch.zeros((), dtype=x.dtype, device=x.device), x)


def swish(x: torch.Tensor) -> torch.Tensor:
    r"""Swish / SiLU, the self-gated activation Zipformer compares against.

    $$ \operatorname{Swish}(x) = x\, \sigma(x) $$

    Elementwise, any shape. See :cite:`yao2024zipformer`.
    """
    require_tensor("x", x, floating=True)
    return x * torch.sigmoid(x)


def swoosh_r(x: torch.Tensor) -> torch.Tensor:
    r"""SwooshR, Zipformer's activation inside its feed-forward and convolution modules.

    $$ \operatorname{SwooshR}(x) = \log\!\big(1 + e^{x - 1}\big) - 0.08\,x - 0.313261687 $$

    The constant makes $\operatorname{SwooshR}(0) = 0$. Elementwise, any shape. See :cite:`yao2024zipformer`.
    """
    require_tensor("x", x, floating=True)
    return _softplus(x - 1.0) - SWOOSH_SLOPE * x - 0.313261687


def swoosh_l(x: torch.Tensor) -> torch.Tensor:
    r"""SwooshL, the "left-shifted" Swoosh that Zipformer uses where activations are mostly negative.

    $$ \operatorname{SwooshL}(x) = \log\!\big(1 + e^{x - 4}\big) - 0.08\,x - 0.035 $$

    Elementwise, any shape. See :cite:`yao2024zipformer`.
    """
    require_tensor("x", x, floating=True)
    return _softplus(x - 4.0) - SWOOSH_SLOPE * x - 0.035


def _check_coeffs(coeffs) -> None:
    require_tensor("coeffs", coeffs, ndim=1, floating=True)
    if len(coeffs) < 2:
        raise ValueError(f"coeffs must hold at least 2 coefficients (a_0, a_1), got shape {tuple(coeffs.shape)}")


def polyrelu(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    r"""PolyReLU of order $r$ = ``len(coeffs) - 1``: $\sum_{i=0}^{r} a_i \operatorname{relu}(x)^i$.

    Elementwise, any shape; ``coeffs (r + 1,)``. See :cite:`zhuo2024polycom`.
    """
    require_tensor("x", x, floating=True)
    _check_coeffs(coeffs)
    r = torch.relu(x)
    return sum(a * r ** i for i, a in enumerate(coeffs))


def polynorm(x: torch.Tensor, coeffs: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    r"""PolyNorm of order $r$: $a_0 + \sum_{i=1}^{r} a_i \operatorname{norm}(x^i)$ with
    $\operatorname{norm}(u) = u / \sqrt{\operatorname{mean}(u^2) + \epsilon}$ over the last axis (RMS
    normalisation of each power, so high powers do not blow up).

    ``x (..., n)``, ``coeffs (r + 1,)``. See :cite:`zhuo2024polycom`.
    """
    require_tensor("x", x, floating=True)
    _check_coeffs(coeffs)
    out = coeffs[0] + torch.zeros_like(x)
    for i in range(1, len(coeffs)):
        u = x ** i
        out = out + coeffs[i] * u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + eps)
    return out
