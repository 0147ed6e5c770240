r"""Mixture-of-Head attention: a router picks, per token, which heads work and how much each counts."""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_nonnegative_int, check_positive_int, require_tensor
from minilib.attention.multihead import MultiHeadAttention, _attention_mixer
from minilib.mixing import register_mixer

__all__ = ["MixtureOfHeadAttention"]


class MixtureOfHeadAttention(MultiHeadAttention):
    r"""Mixture-of-Head attention: a router weights each token's heads and keeps only its top-k routed heads.

    $$ \operatorname{MoH}(x_t) = \sum_{h=1}^{H} g_h(x_t)\, \text{head}_h(x_t)\, W_O^h, \qquad
       g_h = \begin{cases} \alpha_1 \operatorname{Softmax}(W_s x_t)_h & h \le H_s \text{ (shared)} \\
       \alpha_2 \operatorname{Softmax}(W_r x_t)_h & h > H_s,\ (W_r x_t)_h \in \operatorname{TopK}(W_r x_t) \\
       0 & \text{otherwise,} \end{cases} \qquad [\alpha_1, \alpha_2] = \operatorname{Softmax}(W_h x_t) $$

    The first ``n_shared`` heads $H_s$ are always on; a router $W_r$ (``d_model -> n_heads - n_shared``)
    picks ``top_k`` of the rest per token, and their weights are the router's softmax over *all* routed
    heads (not renormalised over the chosen ones). With ``n_shared = 0`` there is no $\alpha$: $g_h$ is the
    routed line with $\alpha_2 = 1$. So ``n_shared + top_k`` of the ``n_heads`` heads work for each token.
    Everything else (projections, GQA via ``n_kv_heads``, RoPE, caches, ``kv=``) is
    :class:`MultiHeadAttention`'s; ``**kwargs`` go to it. This teaching form computes every head and
    zeroes the unchosen ones, so it saves no FLOPs: the saving needs the chosen heads gathered per token.
    The paper's load-balancing loss is left out. By default the weights are the paper's equation, whose
    routed weights sum to less than one, so at initialisation (a near-uniform router) each head enters
    the output about $1/H$ as strongly as in MHA. ``renormalize=True`` follows the authors' released code
    instead: the chosen routed weights are divided by their sum and multiplied by ``top_k``, the shared
    weights multiplied by ``n_shared``, and $\alpha$ by 2, so a uniform router gives every working head
    weight 1, as in MHA.

    ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`jin2024moh`.
    """

    def __init__(self, d_model: int, n_heads: int, *, top_k: int, n_shared: int = 0, n_kv_heads: int | None = None,
                 rope: bool = False, renormalize: bool = False, **kwargs):
        super().__init__(d_model, n_heads, n_kv_heads=n_kv_heads, rope=rope, **kwargs)
        if check_nonnegative_int("n_shared", n_shared) >= self.n_heads:
            raise ValueError(f"n_shared must be an int in [0, n_heads={self.n_heads}), got {n_shared!r}")
        n_routed = self.n_heads - n_shared
        if check_positive_int("top_k", top_k) > n_routed:
            raise ValueError(f"top_k must be an int in [1, {n_routed}] (the n_heads={self.n_heads} minus "
                             f"n_shared={n_shared} routed heads), got {top_k!r}")
        self.top_k, self.n_shared, self.renormalize = top_k, n_shared, renormalize
        self.router = nn.Linear(d_model, n_routed, bias=False)
        self.shared_router = nn.Linear(d_model, n_shared, bias=False) if n_shared > 1 else None  # softmax of one is 1
        self.group_router = nn.Linear(d_model, 2, bias=False) if n_shared else None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Head weights $g$ and the heads switched on, both ``(B, T, n_heads)``, for tokens ``x (B, T, d_model)``.

        ``active`` is True for the shared heads and the ``top_k`` routed heads of each token (a head with a
        tiny softmax weight still counts as working).
        """
        require_tensor("x", x, ndim=3, floating=True)
        logits = self.router(x)
        chosen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(self.top_k, dim=-1).indices, True)
        routed = torch.softmax(logits, dim=-1) * chosen
        if self.renormalize:
            routed = self.top_k * routed / routed.sum(dim=-1, keepdim=True)
        if self.n_shared == 0:
            return routed, chosen
        alpha = torch.softmax(self.group_router(x), dim=-1)
        shared = torch.ones_like(alpha[..., :1]) if self.shared_router is None else torch.softmax(self.shared_router(x), dim=-1)
        if self.renormalize:
            alpha, shared = 2 * alpha, self.n_shared * shared
        gates = torch.cat([alpha[..., :1] * shared, alpha[..., 1:] * routed], dim=-1)
        return gates, torch.cat([torch.ones_like(shared, dtype=torch.bool), chosen], dim=-1)

    def combine(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Weight the head outputs ``(B, H, T, D)`` by :meth:`route` of ``x``, then gate (if any) and project as MHA does."""
        gates, _ = self.route(x)
        return super().combine(x, heads * gates.transpose(1, 2)[..., None])


register_mixer("moh", _attention_mixer(MixtureOfHeadAttention))
