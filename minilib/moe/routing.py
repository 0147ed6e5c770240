r"""Routers of a mixture of experts: which experts see which tokens, with what weight, and the auxiliary losses.

Tokens are flattened to ``N`` rows; a router's logits are ``(N, E)`` for ``E`` experts. Two ways to route:

- token choice (:func:`top_k_routing`): every token picks its ``k`` most probable experts
  :cite:`shazeer2017outrageously`; with a capacity (:func:`expert_capacity`) an expert takes at most ``C`` tokens
  and the rest are dropped (:func:`capacity_keep`) :cite:`fedus2022switch`;
- expert choice (:func:`expert_choice_routing`): every expert picks its ``C`` highest-scoring tokens, so the load
  is balanced by construction :cite:`zhou2022expertchoice`.

:func:`load_balancing_loss` (Switch) and :func:`router_z_loss` (ST-MoE :cite:`zoph2022stmoe`) are the auxiliary
losses a trainer adds to the language-model loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minilib._checks import check_number, check_positive_int, require_tensor

__all__ = ["top_k_routing", "expert_capacity", "capacity_keep", "expert_choice_routing", "load_balancing_loss",
           "router_z_loss"]


def _check_logits(logits) -> None:
    require_tensor("logits", logits, ndim=2, floating=True)


def _check_top_k(top_k, n_experts: int) -> None:
    check_positive_int("top_k", top_k)
    if top_k > n_experts:
        raise ValueError(f"top_k must be at most n_experts ({n_experts}), got {top_k}")


def top_k_routing(logits: torch.Tensor, top_k: int, *, renormalize: bool = True):
    r"""Token choice: softmax over the experts, then each token keeps its ``top_k`` largest probabilities.

    $$ p = \operatorname{softmax}(\ell),\qquad \mathcal{T} = \operatorname{topk}(p, k),\qquad
       g_e = \frac{p_e}{\sum_{j \in \mathcal T} p_j}\ (e \in \mathcal T) $$

    (without ``renormalize`` the weights are the raw $p_e$, as in Switch with $k = 1$). ``logits (N, E)`` ->
    ``probs (N, E)``, ``weights (N, k)``, ``experts (N, k)`` (int64, the most probable first).
    See :cite:`shazeer2017outrageously`, :cite:`fedus2022switch`.
    """
    _check_logits(logits)
    _check_top_k(top_k, logits.shape[-1])
    probs = torch.softmax(logits, dim=-1)
    weights, experts = probs.topk(top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return probs, weights, experts


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    r"""Tokens one expert may take: $C = \lceil c \cdot N k / E \rceil$, at most $N$ (``c`` = ``capacity_factor``).

    $c = 1$ is exactly enough for a perfectly balanced load. See :cite:`fedus2022switch`.
    """
    check_positive_int("n_tokens", n_tokens)
    check_positive_int("n_experts", n_experts)
    _check_top_k(top_k, n_experts)
    check_number("capacity_factor", capacity_factor, positive=True)
    return min(n_tokens, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def capacity_keep(experts: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    r"""Which assignments of ``experts (N, k)`` fit: an expert takes at most ``capacity`` of them.

    Priority is slot-major, as in GShard/Switch: every token's first choice (in token order), then every token's
    second choice, and so on; an assignment beyond an expert's ``capacity`` is dropped (the token keeps only its
    residual path for it). Returns ``keep (N, k)`` bool. See :cite:`fedus2022switch`.
    """
    require_tensor("experts", experts, ndim=2)
    check_positive_int("n_experts", n_experts)
    check_positive_int("capacity", capacity)
    slot_major = experts.T.reshape(-1)                                   # (k N,)
    one_hot = F.one_hot(slot_major, n_experts)                           # (k N, E)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1                 # 0-based place in its expert's queue
    return (position < capacity).reshape(experts.shape[1], experts.shape[0]).T


def expert_choice_routing(logits: torch.Tensor, capacity: int):
    r"""Expert choice: each expert takes the ``capacity`` tokens with the highest router probability for it.

    $$ p = \operatorname{softmax}(\ell) \in \mathbb{R}^{N \times E},\qquad
       \mathcal{S}_e = \operatorname{topk}_{\text{tokens}}(p_{:,e}, C),\qquad g_{te} = p_{te}\ (t \in \mathcal S_e) $$

    A token may be taken by several experts or by none. ``logits (N, E)`` -> ``probs (N, E)``,
    ``weights (E, C)``, ``tokens (E, C)``. It reads every token of the batch, so it is not causal.
    See :cite:`zhou2022expertchoice`.
    """
    _check_logits(logits)
    check_positive_int("capacity", capacity)
    if capacity > logits.shape[0]:
        raise ValueError(f"capacity must be at most the number of tokens ({logits.shape[0]}), got {capacity}")
    probs = torch.softmax(logits, dim=-1)
    weights, tokens = probs.T.topk(capacity, dim=-1)
    return probs, weights, tokens


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    r"""Switch's auxiliary loss: $E \sum_e f_e P_e$, 1 for a perfectly uniform router.

    $f_e$ = fraction of the $N k$ token-to-expert assignments in ``experts (N, k)`` that go to expert $e$
    (not differentiable), $P_e$ = mean router probability of $e$ over the tokens, from ``probs (N, E)``
    (differentiable: the gradient lowers the probability of overloaded experts). See :cite:`fedus2022switch`.
    """
    require_tensor("probs", probs, ndim=2, floating=True)
    require_tensor("experts", experts, ndim=2)
    if experts.shape[0] != probs.shape[0]:
        raise ValueError(f"experts must have one row per token of probs, got experts {tuple(experts.shape)} "
                         f"and probs {tuple(probs.shape)}")
    n_experts = probs.shape[-1]
    counts = torch.bincount(experts.reshape(-1), minlength=n_experts).to(probs.dtype)
    fraction = counts / experts.numel()
    return n_experts * (fraction * probs.mean(dim=0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    r"""ST-MoE's router z-loss $\frac1N \sum_t \big(\log \sum_e e^{\ell_{te}}\big)^2$: keeps router logits small.

    ``logits (N, E)`` -> a scalar. See :cite:`zoph2022stmoe`.
    """
    _check_logits(logits)
    return torch.logsumexp(logits, dim=-1).pow(2).mean()
