r"""The mixture-of-experts feed-forward layer: a router sends each token to a few expert FFNs.

$$ y_t = \sum_{e} g_{te}\, \operatorname{FFN}_e(x_t) $$

with $g_{te} \ne 0$ only for the experts routed to token $t$ (:mod:`minilib.moe.routing`). The sparse forward runs
each expert only on its tokens (dispatch, then a weighted scatter-add: combine); :meth:`MoE.dense_reference` runs
every expert on every token and combines with the same weights, the definition the sparse forward must equal.
Registered as the FFN ``"moe"`` (:func:`minilib.feedforward.register_ffn`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minilib._checks import check_flag, check_last_dim, check_number, check_positive_int, require_tensor
from minilib.feedforward import FFN_KINDS, GATED_KINDS, FeedForward, default_d_ff, register_ffn
from minilib.moe.routing import (capacity_keep, expert_capacity, expert_choice_routing, load_balancing_loss,
                                 router_z_loss, top_k_routing)

__all__ = ["Routing", "MoE", "ffn_flops"]

#: The routers of :class:`MoE`: token choice (``"topk"``) and expert choice.
ROUTERS = ("topk", "expert_choice")


def ffn_flops(d_model: int, d_ff: int, kind: str) -> int:
    r"""Multiply-add FLOPs per token of one :class:`~minilib.feedforward.FeedForward`: $2 d\, d_\text{ff}$ per matrix,
    two matrices (three for a gated kind)."""
    check_positive_int("d_model", d_model)
    check_positive_int("d_ff", d_ff)
    if kind not in FFN_KINDS:
        raise ValueError(f"kind must be one of {FFN_KINDS}, got {kind!r}")
    return 2 * d_model * d_ff * (3 if kind in GATED_KINDS else 2)


@dataclass
class Routing:
    """Where the tokens of one forward went: ``tokens[e]`` (int64) and ``weights[e]`` for each expert ``e``,
    the router's ``logits``/``probs (N, E)``, and the number of token-to-expert assignments ``dropped``."""

    logits: torch.Tensor
    probs: torch.Tensor
    tokens: list[torch.Tensor]
    weights: list[torch.Tensor]
    dropped: int

    def __post_init__(self):
        require_tensor("logits", self.logits, ndim=2, floating=True)
        require_tensor("probs", self.probs, ndim=2, floating=True)
        if len(self.tokens) != self.probs.shape[1] or len(self.weights) != self.probs.shape[1]:
            raise ValueError(f"tokens and weights must hold one entry per expert ({self.probs.shape[1]}), "
                             f"got {len(self.tokens)} and {len(self.weights)}")

    @property
    def load(self) -> torch.Tensor:
        """Tokens each expert processes, ``(E,)`` int64."""
        return torch.tensor([len(t) for t in self.tokens])

    def combine_matrix(self) -> torch.Tensor:
        """The weights as a dense ``(N, E)`` matrix $G$, zero where a token was not routed (or was dropped)."""
        g = torch.zeros_like(self.probs)
        for e, (tok, w) in enumerate(zip(self.tokens, self.weights)):
            g[tok, e] += w
        return g


class MoE(nn.Module):
    r"""Mixture of ``n_experts`` FFN experts (each a :class:`~minilib.feedforward.FeedForward` of width ``d_ff``).

    ``router="topk"``: every token goes to its ``top_k`` most probable experts with renormalised weights
    :cite:`shazeer2017outrageously`; with ``capacity_factor`` $c$ an expert takes at most
    $\lceil c N k / E \rceil$ tokens of the $N$ in the batch and drops the rest :cite:`fedus2022switch`.
    ``router="expert_choice"``: every expert takes its $\lceil c N k / E \rceil$ best tokens ($c$ = 1 by default)
    :cite:`zhou2022expertchoice` (not causal: a token's routing depends on the whole batch).

    ``x (..., d_model) -> (..., d_model)``. After each forward ``self.routing`` holds the :class:`Routing` and, with
    ``aux_loss=True``, ``self.aux_loss`` = ``balance_coef`` x :func:`~minilib.moe.routing.load_balancing_loss`
    (token choice only) + ``z_coef`` x :func:`~minilib.moe.routing.router_z_loss` :cite:`zoph2022stmoe`, which
    :func:`minilib.models.train` adds to the loss (through ``TransformerLM.aux_loss``).
    """

    def __init__(self, d_model: int, d_ff: int | None, n_experts: int, top_k: int = 2, *,
                 capacity_factor: float | None = None, router: str = "topk", aux_loss: bool = True,
                 kind: str = "swiglu", balance_coef: float = 0.01, z_coef: float = 1e-3):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_experts", n_experts)
        check_positive_int("top_k", top_k)
        if top_k > n_experts:
            raise ValueError(f"top_k must be at most n_experts ({n_experts}), got {top_k}")
        if capacity_factor is not None:
            check_number("capacity_factor", capacity_factor, positive=True)
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
        check_flag("aux_loss", aux_loss)
        check_number("balance_coef", balance_coef, low=0.0)
        check_number("z_coef", z_coef, low=0.0)
        d_ff = default_d_ff(d_model, kind) if d_ff is None else d_ff
        self.d_model, self.d_ff, self.kind = d_model, d_ff, kind
        self.n_experts, self.top_k, self.capacity_factor, self.router_kind = n_experts, top_k, capacity_factor, router
        self.use_aux_loss, self.balance_coef, self.z_coef = aux_loss, balance_coef, z_coef
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, kind=kind) for _ in range(n_experts))
        self.routing: Routing | None = None
        self.aux_loss: torch.Tensor | None = None

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The router's logits $W_r x$ ``(N, n_experts)`` for the tokens ``x (N, d_model)``."""
        return self.router(x)

    def route(self, x: torch.Tensor) -> Routing:
        """Route the tokens ``x (N, d_model)``; sets ``self.aux_loss``."""
        logits = self.router_logits(x)
        n = x.shape[0]
        if self.router_kind == "expert_choice":
            capacity = expert_capacity(n, self.n_experts, self.top_k, self.capacity_factor or 1.0)
            probs, weights, tokens = expert_choice_routing(logits, capacity)
            routing = Routing(logits, probs, list(tokens), list(weights), dropped=0)
            balance = None
        else:
            probs, weights, experts = top_k_routing(logits, self.top_k)
            keep = torch.ones_like(experts, dtype=torch.bool)
            if self.capacity_factor is not None:
                keep = capacity_keep(experts, self.n_experts,
                                     expert_capacity(n, self.n_experts, self.top_k, self.capacity_factor))
            chosen = [(experts == e) & keep for e in range(self.n_experts)]
            routing = Routing(logits, probs, [m.nonzero()[:, 0] for m in chosen], [weights[m] for m in chosen],
                              dropped=int((~keep).sum()))
            balance = load_balancing_loss(probs, experts)
        self.aux_loss = None
        if self.use_aux_loss:
            self.aux_loss = self.z_coef * router_z_loss(logits)
            if balance is not None:
                self.aux_loss = self.aux_loss + self.balance_coef * balance
        self.routing = routing
        return routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d_model)
        flat = x.reshape(-1, self.d_model)
        routing = self.route(flat)
        out = torch.zeros_like(flat)
        for expert, tok, w in zip(self.experts, routing.tokens, routing.weights):
            if len(tok):
                out.index_add_(0, tok, w[:, None] * expert(flat[tok]))
        return out.reshape(x.shape)

    def dense_reference(self, x: torch.Tensor) -> torch.Tensor:
        r"""Every expert on every token, combined with the routed weights: $y = \sum_e G_{:,e} \odot \operatorname{FFN}_e(x)$
        with $G$ = :meth:`Routing.combine_matrix`. $E/k$ times the FLOPs of :meth:`forward`, same output."""
        check_last_dim("x", x, self.d_model)
        flat = x.reshape(-1, self.d_model)
        g = self.route(flat).combine_matrix()
        out = sum(g[:, e:e + 1] * expert(flat) for e, expert in enumerate(self.experts))
        return out.reshape(x.shape)

    def flops_per_token(self) -> int:
        """Counted multiply-add FLOPs per token: the router ($2 d E$) plus ``top_k`` experts."""
        return 2 * self.d_model * self.n_experts + self.top_k * ffn_flops(self.d_model, self.d_ff, self.kind)


def _moe_factory(config, layer: int) -> MoE:
    kwargs = dict(config.ffn_kwargs)
    if "n_experts" not in kwargs:
        raise ValueError("ffn='moe' needs ffn_kwargs={'n_experts': ...}")
    return MoE(config.d_model, config.d_ff, kwargs.pop("n_experts"), **kwargs)


register_ffn("moe", _moe_factory)
