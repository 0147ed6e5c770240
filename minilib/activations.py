r"""Pointwise activations beyond GELU/SiLU: Zipformer's SwooshR and SwooshL beside Swish.

Swoosh functions are a softplus with a small negative linear term, so their slope is $-0.08$ far to
the left instead of $0$: a unit that is "off" still passes a gradient.
"""
from __future__ import annotations

import torch

from minilib._checks import require_tensor

__all__ = ["swish", "swoosh_r", "swoosh_l"]

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
