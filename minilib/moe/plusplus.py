r"""MoE++: zero-computation experts beside the FFN experts.

Besides ``n_ffn`` FFN experts the router may choose a *zero* expert ($E(x) = 0$: the token skips the layer's
update), a *copy* expert ($E(x) = x$) and a *constant* expert
($E(x) = \alpha_1 x + \alpha_2 v$, $[\alpha_1, \alpha_2] = \operatorname{softmax}(W_c x)$, a learned $v$). A token
routed to them costs (almost) nothing, so the mean number of FFN experts per token falls below $k$
(:meth:`MoEPlusPlus.ffn_experts_per_token`) :cite:`jin2024moeplusplus`. The gating residuals of the paper
(adding the previous layer's router logits) are not built here.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_last_dim, check_nonnegative_int, check_positive_int, require_tensor
from minilib.feedforward import register_ffn
from minilib.moe.layer import MoE, ffn_flops

__all__ = ["ZeroExpert", "CopyExpert", "ConstantExpert", "MoEPlusPlus"]


class ZeroExpert(nn.Module):
    """$E(x) = 0$. See :cite:`jin2024moeplusplus`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, floating=True)
        return torch.zeros_like(x)


class CopyExpert(nn.Module):
    """$E(x) = x$. See :cite:`jin2024moeplusplus`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, floating=True)
        return x


class ConstantExpert(nn.Module):
    r"""$E(x) = \alpha_1 x + \alpha_2 v$ with $[\alpha_1, \alpha_2] = \operatorname{softmax}(W_c x)$. See :cite:`jin2024moeplusplus`."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.gate = nn.Linear(d_model, 2, bias=False)
        self.v = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d_model)
        a = torch.softmax(self.gate(x), dim=-1)
        return a[..., :1] * x + a[..., 1:] * self.v


class MoEPlusPlus(MoE):
    """:class:`~minilib.moe.MoE` (token choice) over ``n_ffn`` FFN experts followed by ``n_zero`` zero, ``n_copy``
    copy and ``n_constant`` constant experts. Other arguments as for ``MoE``. See :cite:`jin2024moeplusplus`."""

    def __init__(self, d_model: int, d_ff: int | None, n_ffn: int, top_k: int = 2, *, n_zero: int = 1,
                 n_copy: int = 1, n_constant: int = 1, **kwargs):
        check_positive_int("n_ffn", n_ffn)
        for name, value in (("n_zero", n_zero), ("n_copy", n_copy), ("n_constant", n_constant)):
            check_nonnegative_int(name, value)
        super().__init__(d_model, d_ff, n_ffn + n_zero + n_copy + n_constant, top_k, **kwargs)
        if self.router_kind != "topk":
            raise ValueError(f"router must be 'topk' for MoE++, got {self.router_kind!r}")
        self.n_ffn = n_ffn
        self.experts = nn.ModuleList([*self.experts[:n_ffn], *(ZeroExpert() for _ in range(n_zero)),
                                      *(CopyExpert() for _ in range(n_copy)),
                                      *(ConstantExpert(d_model) for _ in range(n_constant))])

    def ffn_experts_per_token(self) -> float:
        """Mean number of FFN experts a token of the last forward ran (at most ``top_k``)."""
        if self.routing is None:
            raise ValueError("ffn_experts_per_token needs a forward first")
        return float(self.routing.load[:self.n_ffn].sum()) / self.routing.probs.shape[0]

    def flops_per_token(self) -> float:
        """Counted FLOPs per token of the last forward: the router plus the FFN experts actually run (the
        zero-computation experts' $O(d)$ work is left out)."""
        return 2 * self.d_model * self.n_experts + self.ffn_experts_per_token() * ffn_flops(self.d_model, self.d_ff,
                                                                                           self.kind)


def _moe_plus_plus_factory(config, layer: int) -> MoEPlusPlus:
    kwargs = dict(config.ffn_kwargs)
    if "n_ffn" not in kwargs:
        raise ValueError("ffn='moe++' needs ffn_kwargs={'n_ffn': ...}")
    return MoEPlusPlus(config.d_model, config.d_ff, kwargs.pop("n_ffn"), **kwargs)


register_ffn("moe++", _moe_plus_plus_factory)
