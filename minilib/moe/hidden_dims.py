r"""Mixture of hidden dimensions (MoHD): one FFN whose hidden units are split into a shared part, always active,
and ``n_groups`` specialised groups of which a router activates ``top_k`` per token.

$$ h = \phi(W_1 x),\qquad y = W_2 \big(h \odot m(x)\big),\qquad
   m_j(x) = \begin{cases} 1 & j \text{ shared} \\ s\, g_{g(j)}(x) & j \in \text{a chosen group} \\ 0 & \text{otherwise}\end{cases} $$

with $g$ the renormalised top-$k$ router gates and the activation scaling $s = G/k$ (so the routed part keeps the
magnitude of a dense one) :cite:`chen2024mohd`. Active hidden units per token: shared $+\, k \times$ group size
(:meth:`MoHD.active_fraction`). This toy computes every unit and masks; a fast kernel would compute only the active
ones. Group fusion is not built. Registered as the FFN ``"mohd"``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_divisible, check_last_dim, check_number, check_positive_int
from minilib.feedforward import register_ffn
from minilib.moe.routing import top_k_routing

__all__ = ["MoHD"]


class MoHD(nn.Module):
    """Mixture of hidden dimensions over ``d_ff`` GELU hidden units: ``shared_fraction`` of them shared, the rest in
    ``n_groups`` groups, ``top_k`` of them routed per token. ``x (..., d_model) -> (..., d_model)``.
    See :cite:`chen2024mohd`."""

    def __init__(self, d_model: int, d_ff: int, n_groups: int, top_k: int, *, shared_fraction: float = 0.25):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_ff", d_ff), ("n_groups", n_groups), ("top_k", top_k)):
            check_positive_int(name, value)
        if top_k > n_groups:
            raise ValueError(f"top_k must be at most n_groups ({n_groups}), got {top_k}")
        check_number("shared_fraction", shared_fraction, low=0.0, high=1.0)
        self.n_shared = round(shared_fraction * d_ff)
        check_divisible("d_ff - shared units", d_ff - self.n_shared, "n_groups", n_groups)
        self.d_model, self.d_ff, self.n_groups, self.top_k = d_model, d_ff, n_groups, top_k
        self.group_size = (d_ff - self.n_shared) // n_groups
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.router = nn.Linear(d_model, n_groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d_model)
        flat = x.reshape(-1, self.d_model)
        h = F.gelu(self.w1(flat))
        _, weights, groups = top_k_routing(self.router(flat), self.top_k)
        gates = torch.zeros(flat.shape[0], self.n_groups, dtype=h.dtype, device=h.device)
        gates = gates.scatter(1, groups, weights * (self.n_groups / self.top_k))
        mask = torch.cat([torch.ones_like(h[:, :self.n_shared]), gates.repeat_interleave(self.group_size, dim=1)], 1)
        return self.w2(h * mask).reshape(x.shape)

    def active_fraction(self) -> float:
        """Hidden units a token uses, as a fraction of ``d_ff``."""
        return (self.n_shared + self.top_k * self.group_size) / self.d_ff


def _mohd_factory(config, layer: int) -> MoHD:
    kwargs = dict(config.ffn_kwargs)
    for name in ("n_groups", "top_k"):
        if name not in kwargs:
            raise ValueError(f"ffn='mohd' needs ffn_kwargs with n_groups and top_k, missing {name}")
    return MoHD(config.d_model, config.d_ff or 4 * config.d_model, kwargs.pop("n_groups"), kwargs.pop("top_k"), **kwargs)


register_ffn("mohd", _mohd_factory)
