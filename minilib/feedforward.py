r"""Position-wise feed-forward networks: the channel MLP that every Transformer block applies to each token alone.

Chapter 01 uses the GELU and SwiGLU forms; chapter 09 adds ReLU and the other GLU variants (GEGLU, ReGLU), and
the mixtures of experts of :mod:`minilib.moe` register themselves beside them. A model names the FFN of
its blocks in its config (``ffn="swiglu"``, :class:`minilib.models.TransformerConfig`): a name registered here
with :func:`register_ffn` or a factory, built as ``factory(config, layer)`` like a token mixer
(:mod:`minilib.mixing`); the factory reads ``config.d_model``, ``config.d_ff`` and ``config.ffn_kwargs``. Any
``nn.Module`` mapping ``(B, T, d_model) -> (B, T, d_model)`` position-wise is an FFN. The kinds of
:class:`FeedForward` (``"gelu"``, ``"swiglu"``, ``"relu"``, ``"geglu"``, ``"reglu"``) are registered here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from typing import Callable

from minilib._checks import check_last_dim, check_positive_int
from minilib.activations import polynorm, polyrelu
from minilib.registry import Registry

__all__ = ["default_d_ff", "FeedForward", "PolynomialFeedForward", "FFNFactory", "register_ffn", "ffn_factory", "registered_ffns"]

#: The kinds of :class:`FeedForward`: plain two-matrix MLPs and gated linear units (three matrices).
FFN_KINDS = ("gelu", "swiglu", "relu", "geglu", "reglu")
#: The activation of each kind; a gated kind multiplies it by a second linear map of the input.
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "swiglu": F.silu, "geglu": F.gelu, "reglu": F.relu}
#: The gated linear units among :data:`FFN_KINDS`.
GATED_KINDS = ("swiglu", "geglu", "reglu")
FFNFactory = Callable[[object, int], nn.Module]
_REGISTRY = Registry("feed-forward network", "ffn")


def default_d_ff(d_model: int, kind: str) -> int:
    r"""The usual hidden width: $4d$ for a plain MLP (GELU, ReLU); for a gated kind (SwiGLU, GEGLU, ReGLU)
    $\tfrac83 d$ rounded up to a multiple of 8 (the "2/3 rule": three matrices of width $\tfrac23 \cdot 4d$).

    Both then hold about the same number of weights ($8d^2$) :cite:`shazeer2020glu`.
    """
    check_positive_int("d_model", d_model)
    _check_kind(kind)
    return 8 * ((8 * d_model // 3 + 7) // 8) if kind in GATED_KINDS else 4 * d_model


def _check_kind(kind: str) -> None:
    if kind not in FFN_KINDS:
        raise ValueError(f"ffn kind must be one of {FFN_KINDS}, got {kind!r}")


class FeedForward(nn.Module):
    r"""Position-wise feed-forward network.

    $$ \text{plain: } W_2\, \phi(W_1 x) \qquad
       \text{gated (GLU): } W_2\, \big(\phi(W_1 x) \odot W_3 x\big) $$

    with $\phi$ = GELU (``"gelu"``, ``"geglu"``), ReLU (``"relu"``, ``"reglu"``) or SiLU (``"swiglu"``).

    ``x (B, T, d_model) -> (B, T, d_model)``; hidden width ``d_ff`` (default :func:`default_d_ff`).
    See :cite:`vaswani2017attention`, :cite:`shazeer2020glu`.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, *, kind: str = "swiglu"):
        super().__init__()
        check_positive_int("d_model", d_model)
        _check_kind(kind)
        d_ff = default_d_ff(d_model, kind) if d_ff is None else check_positive_int("d_ff", d_ff)
        self.kind = kind
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False) if kind in GATED_KINDS else None
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.w1.in_features)
        return self.w2(self.hidden(x))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden activations ``(..., d_ff)`` that ``w2`` reads (probed for sparsity in chapter 09)."""
        h = _ACTIVATIONS[self.kind](self.w1(x))
        return h if self.w3 is None else h * self.w3(x)


#: The polynomial composition activations of :class:`PolynomialFeedForward`.
POLY_KINDS = {"polyrelu": polyrelu, "polynorm": polynorm}


class PolynomialFeedForward(nn.Module):
    r"""$W_2\, \phi(W_1 x)$ with $\phi$ = :func:`~minilib.activations.polyrelu` or
    :func:`~minilib.activations.polynorm` of order ``order`` and learned coefficients (initialised to
    $a_0 = 0$, $a_i = 1/r$). Hidden width ``d_ff`` (default $4d$, the weights of a plain MLP plus $r + 1$).
    See :cite:`zhuo2024polycom`.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, *, kind: str = "polynorm", order: int = 3):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("order", order)
        if kind not in POLY_KINDS:
            raise ValueError(f"kind must be one of {tuple(POLY_KINDS)}, got {kind!r}")
        d_ff = 4 * d_model if d_ff is None else check_positive_int("d_ff", d_ff)
        self.kind = kind
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.coeffs = nn.Parameter(torch.cat([torch.zeros(1), torch.full((order,), 1.0 / order)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.w1.in_features)
        return self.w2(POLY_KINDS[self.kind](self.w1(x), self.coeffs))


def register_ffn(name: str, factory: FFNFactory) -> FFNFactory:
    """Make ``config.ffn = name`` build ``factory(config, layer)``; returns ``factory``. Names are unique."""
    return _REGISTRY.register(name, factory)


def ffn_factory(ffn: str | FFNFactory) -> FFNFactory:
    """The factory a config's ``ffn`` field stands for: a registered name, or a factory given directly."""
    return _REGISTRY.factory(ffn)


def registered_ffns() -> list[str]:
    """Names usable as ``config.ffn``, in registration order."""
    return _REGISTRY.names()


def _feedforward_factory(kind: str) -> FFNFactory:
    def build(config, layer: int) -> FeedForward:
        return FeedForward(config.d_model, config.d_ff, kind=kind, **config.ffn_kwargs)
    return build


for _kind in FFN_KINDS:
    register_ffn(_kind, _feedforward_factory(_kind))


def _polynomial_factory(kind: str) -> FFNFactory:
    def build(config, layer: int) -> PolynomialFeedForward:
        return PolynomialFeedForward(config.d_model, config.d_ff, kind=kind, **config.ffn_kwargs)
    return build


for _kind in POLY_KINDS:
    register_ffn(_kind, _polynomial_factory(_kind))
