r"""MoE++: zero-computation experts beside the FFN experts.

Besides ``n_ffn`` FFN experts the router may choose a *zero* expert ($E(x) = 0$: the token skips the layer's
update), a *copy* expert ($E(x) = x$) and a *constant* expert
($E(x) = \alpha_1 x + \alpha_2 v$, $[\alpha_1, \alpha_2] = \operatorname{softmax}(W_c x)$, a learned $v$). A token
routed to them costs (almost) nothing, so the mean number of FFN experts per token falls below $k$
(:meth:`MoEPlusPlus.ffn_experts_per_token`) :cite:`jin2024moeplusplus`.

*Gating residuals* (``gating_residual=True``) let a layer's router see where the previous layer sent the token:
layer $j$'s logits are

$$ G^{(j)}(x) = W^{(j)} x + W_g^{(j)}\, G^{(j-1)}, $$

$G^{(j-1)}$ the previous MoE++ layer's logits for the same token (including its own residual) and
$W_g^{(j)} \in \mathbb{R}^{E \times E}$ learned (zero at the start, so a new model routes as without it).
:func:`link_gating_residuals` chains the MoE++ layers of a model in order; the first layer has no residual.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import (check_flag, check_last_dim, check_nonnegative_int, check_positive_int,
                             require_tensor)
from minilib.feedforward import register_ffn
from minilib.moe.layer import MoE, ffn_flops

__all__ = ["ZeroExpert", "CopyExpert", "ConstantExpert", "MoEPlusPlus", "link_gating_residuals"]


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
    copy and ``n_constant`` constant experts. Other arguments as for ``MoE``.

    ``gating_residual=True`` adds $W_g G^{(j-1)}$ to the router logits (see the module docstring): ``layer`` is the
    layer's index in its model, and every layer after the first must be linked to its predecessor with
    :meth:`follow` (or :func:`link_gating_residuals`) before a forward. See :cite:`jin2024moeplusplus`."""

    def __init__(self, d_model: int, d_ff: int | None, n_ffn: int, top_k: int = 2, *, n_zero: int = 1,
                 n_copy: int = 1, n_constant: int = 1, gating_residual: bool = False, layer: int = 0, **kwargs):
        check_positive_int("n_ffn", n_ffn)
        for name, value in (("n_zero", n_zero), ("n_copy", n_copy), ("n_constant", n_constant), ("layer", layer)):
            check_nonnegative_int(name, value)
        check_flag("gating_residual", gating_residual)
        super().__init__(d_model, d_ff, n_ffn + n_zero + n_copy + n_constant, top_k, **kwargs)
        if self.router_kind != "topk":
            raise ValueError(f"router must be 'topk' for MoE++, got {self.router_kind!r}")
        self.n_ffn = n_ffn
        self.experts = nn.ModuleList([*self.experts[:n_ffn], *(ZeroExpert() for _ in range(n_zero)),
                                      *(CopyExpert() for _ in range(n_copy)),
                                      *(ConstantExpert(d_model) for _ in range(n_constant))])
        self.layer = layer
        self.gate_residual = None
        if gating_residual and layer > 0:
            self.gate_residual = nn.Linear(self.n_experts, self.n_experts, bias=False)
            nn.init.zeros_(self.gate_residual.weight)
        self._previous: list[MoEPlusPlus] = []  # a list, so the previous layer is not registered as a submodule

    def follow(self, previous: "MoEPlusPlus") -> None:
        """Take the gating residual from ``previous`` (the MoE++ layer before this one, same number of experts)."""
        if not isinstance(previous, MoEPlusPlus) or previous is self:
            raise TypeError(f"previous must be another MoEPlusPlus layer, got {type(previous).__name__}")
        if previous.n_experts != self.n_experts:
            raise ValueError(f"previous must have {self.n_experts} experts like this layer, got {previous.n_experts}")
        self._previous = [previous]

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        r"""$W x$, plus $W_g G^{(j-1)}$ with a gating residual, $G^{(j-1)}$ the previous layer's last logits."""
        logits = self.router(x)
        if self.gate_residual is None:
            return logits
        if not self._previous:
            raise ValueError(f"gating_residual: layer {self.layer} has no previous layer; call follow() or "
                             "link_gating_residuals(model) first")
        previous = self._previous[0].routing
        if previous is None or previous.logits.shape != logits.shape:
            raise ValueError("gating_residual: the previous layer's logits must come from the same tokens (run the "
                             f"layers in order), got {None if previous is None else tuple(previous.logits.shape)} "
                             f"for x of {tuple(x.shape)}")
        return logits + self.gate_residual(previous.logits)

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


def link_gating_residuals(model: nn.Module) -> int:
    """Chain the :class:`MoEPlusPlus` layers of ``model`` in module order: each takes its gating residual from the
    one before (:meth:`MoEPlusPlus.follow`). Returns the number of layers linked. See :cite:`jin2024moeplusplus`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, MoEPlusPlus)]
    for previous, layer in zip(layers, layers[1:]):
        layer.follow(previous)
    return len(layers) - 1 if layers else 0


def _moe_plus_plus_factory(config, layer: int) -> MoEPlusPlus:
    kwargs = dict(config.ffn_kwargs)
    if "n_ffn" not in kwargs:
        raise ValueError("ffn='moe++' needs ffn_kwargs={'n_ffn': ...}")
    return MoEPlusPlus(config.d_model, config.d_ff, kwargs.pop("n_ffn"), layer=layer, **kwargs)


register_ffn("moe++", _moe_plus_plus_factory)
