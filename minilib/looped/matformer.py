r"""MatFormer's nested feed-forward network: the first ``m`` hidden units of one FFN form a valid smaller FFN.

Registered as the FFN ``"matformer"`` (``TransformerConfig(ffn="matformer", ffn_kwargs={"widths": ...})``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_last_dim, check_positive_int
from minilib.feedforward import FeedForward, default_d_ff, register_ffn

__all__ = ["MatFFN", "nested_widths"]


def nested_widths(d_ff: int, n: int = 4) -> tuple[int, ...]:
    """MatFormer's granularities ``(d_ff / 2^(n-1), ..., d_ff / 2, d_ff)``, smallest first (``d_ff`` divisible by ``2^(n-1)``)."""
    check_positive_int("d_ff", d_ff)
    check_positive_int("n", n)
    if d_ff % 2 ** (n - 1):
        raise ValueError(f"d_ff={d_ff} must be divisible by 2^(n-1)={2 ** (n - 1)} for {n} nested widths")
    return tuple(d_ff >> i for i in reversed(range(n)))


class MatFFN(nn.Module):
    r"""Nested FFN: run at width $m \le d_\text{ff}$, it uses hidden units $1..m$ only.

    $$ \operatorname{FFN}_m(x) = W_2[:, :m]\, \big(\operatorname{silu}(W_1[:m]\, x) \odot W_3[:m]\, x\big) $$

    (GELU: $W_2[:, :m]\,\operatorname{gelu}(W_1[:m] x)$). The active width is ``self.width`` (default ``d_ff``) or
    ``forward(x, width=m)``; training samples a width from ``widths`` per step so every prefix learns to be an FFN.
    Mix'n'Match sets a different ``width`` per layer. :meth:`extract` copies the first ``m`` units into a plain
    :class:`~minilib.feedforward.FeedForward`. ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`devvrit2023matformer`.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, *, kind: str = "swiglu", widths: tuple[int, ...] | None = None):
        super().__init__()
        self.full = FeedForward(d_model, d_ff, kind=kind)
        self.d_ff = self.full.w1.out_features
        self.widths = nested_widths(self.d_ff) if widths is None else tuple(self.check_width(m, "widths") for m in widths)
        self.width = self.d_ff

    def check_width(self, m: int, name: str = "width") -> int:
        check_positive_int(name, m)
        if m > self.d_ff:
            raise ValueError(f"{name} must be at most d_ff={self.d_ff}, got {m}")
        return m

    def forward(self, x: torch.Tensor, *, width: int | None = None) -> torch.Tensor:
        check_last_dim("x", x, self.full.w1.in_features)
        m = self.check_width(self.width if width is None else width)
        f = self.full
        up = F.linear(x, f.w1.weight[:m])
        hidden = F.gelu(up) if f.w3 is None else F.silu(up) * F.linear(x, f.w3.weight[:m])
        return F.linear(hidden, f.w2.weight[:, :m])

    def extract(self, width: int) -> FeedForward:
        """A standalone :class:`~minilib.feedforward.FeedForward` of hidden width ``width``: the first ``width`` units."""
        m = self.check_width(width)
        f = self.full
        small = FeedForward(f.w1.in_features, m, kind=f.kind).to(f.w1.weight)
        with torch.no_grad():
            small.w1.weight.copy_(f.w1.weight[:m])
            small.w2.weight.copy_(f.w2.weight[:, :m])
            if f.w3 is not None:
                small.w3.weight.copy_(f.w3.weight[:m])
        return small


def _matformer_ffn(config, layer: int) -> MatFFN:
    kwargs = dict(config.ffn_kwargs)
    kind = kwargs.pop("kind", "swiglu")
    d_ff = config.d_ff if config.d_ff is not None else default_d_ff(config.d_model, kind)
    return MatFFN(config.d_model, d_ff, kind=kind, **kwargs)


register_ffn("matformer", _matformer_ffn)
