r"""TokenFormer's Pattention: a linear projection replaced by attention from the tokens to learnable parameter tokens.

$$ \operatorname{Pattention}(X) = \operatorname{gelu}\!\Big(\tau\, \frac{S}{\lVert S \rVert_{2,\text{row}}}\Big) V_P,
   \qquad S = X K_P^\top $$

with $m$ parameter tokens $K_P \in \mathbb{R}^{m \times d_\text{in}}$, $V_P \in \mathbb{R}^{m \times d_\text{out}}$
and a fixed scale $\tau$. A parameter token whose key is zero scores 0 for every input, adds nothing to the row
norm and gets $\operatorname{gelu}(0) = 0$: appending zero-key tokens (:meth:`Pattention.grow`) leaves the function
unchanged, so a model can grow without restarting :cite:`wang2024tokenformer`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_last_dim, check_nonnegative_int, check_number, check_positive_int, require_tensor
from minilib.feedforward import register_ffn

__all__ = ["pattention", "Pattention"]


def pattention(x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, tau: float) -> torch.Tensor:
    r"""``x (..., d_in)``, ``keys (m, d_in)``, ``values (m, d_out)`` -> ``(..., d_out)``; see the module equation.

    A row of all-zero scores (``x = 0``) gives 0. See :cite:`wang2024tokenformer`.
    """
    require_tensor("x", x, floating=True)
    require_tensor("keys", keys, ndim=2, floating=True)
    require_tensor("values", values, ndim=2, floating=True)
    check_last_dim("x", x, keys.shape[1], size_name="keys.shape[1]")
    if values.shape[0] != keys.shape[0]:
        raise ValueError(f"keys and values must hold the same number of parameter tokens, got keys "
                         f"{tuple(keys.shape)} and values {tuple(values.shape)}")
    check_number("tau", tau, positive=True)
    s = x @ keys.T
    a = tau * s / s.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    return F.gelu(a) @ values


class Pattention(nn.Module):
    r"""A Pattention layer with ``n_tokens`` parameter tokens mapping ``d_in -> d_out``.

    $\tau = \sqrt{m_0}$ for the initial ``n_tokens`` $m_0$ (or ``tau``), kept fixed when the layer grows.
    Keys and values are drawn from $\mathcal N(0, 0.02^2)$. See :cite:`wang2024tokenformer`.
    """

    def __init__(self, d_in: int, d_out: int, n_tokens: int, *, tau: float | None = None):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("n_tokens", n_tokens)):
            check_positive_int(name, value)
        self.tau = math.sqrt(n_tokens) if tau is None else check_number("tau", tau, positive=True)
        self.keys = nn.Parameter(torch.randn(n_tokens, d_in) * 0.02)
        self.values = nn.Parameter(torch.randn(n_tokens, d_out) * 0.02)

    @property
    def n_tokens(self) -> int:
        return self.keys.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pattention(x, self.keys, self.values, self.tau)

    @torch.no_grad()
    def grow(self, n_new: int) -> None:
        """Append ``n_new`` parameter tokens with zero keys (and $\\mathcal N(0, 0.02^2)$ values, so the keys get a
        gradient): the layer computes exactly the same function afterwards. Parameters are replaced, so build the
        optimiser again after growing."""
        check_nonnegative_int("n_new", n_new)
        keys, values = self.keys, self.values
        self.keys = nn.Parameter(torch.cat([keys, keys.new_zeros(n_new, keys.shape[1])]))
        self.values = nn.Parameter(torch.cat([values, torch.randn(n_new, values.shape[1], dtype=values.dtype,
                                                                  device=values.device) * 0.02]))


def _pattention_factory(config, layer: int) -> Pattention:
    kwargs = dict(config.ffn_kwargs)
    n_tokens = kwargs.pop("n_tokens", config.d_ff or 4 * config.d_model)
    return Pattention(config.d_model, config.d_model, n_tokens, **kwargs)


register_ffn("pattention", _pattention_factory)
