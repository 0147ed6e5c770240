r"""Model fusion with optimal transport: align the hidden units of two layers before averaging them.

Two independently trained networks compute the same function with their hidden units in different orders, so a
naive average of their weights mixes unrelated units. An entropy-regularised transport plan between the units of
the two layers, computed by Sinkhorn iterations on a similarity cost, maps one layer's units onto the other's.
"""
from __future__ import annotations

import math

import torch

from minilib._checks import check_number, check_positive_int, require_tensor

__all__ = ["sinkhorn", "align_units"]


def sinkhorn(cost: torch.Tensor, *, epsilon: float = 0.05, n_iters: int = 200) -> torch.Tensor:
    r"""Entropy-regularised optimal transport between two uniform distributions (Sinkhorn iterations, log domain).

    $$ T = \arg\min_{T \mathbf 1 = \frac1n \mathbf 1,\ T^\top \mathbf 1 = \frac1m \mathbf 1}
           \langle T, C\rangle - \varepsilon H(T), \qquad T_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon} $$

    ``cost (n, m)`` -> plan ``(n, m)``, rows summing to $1/n$ and columns to $1/m$ (after ``n_iters`` alternating
    updates of $f$ and $g$); $\varepsilon \to 0$ tends to the optimal assignment. See :cite:`imfeld2024fusion`.
    """
    require_tensor("cost", cost, ndim=2, floating=True)
    epsilon = check_number("epsilon", epsilon, positive=True)
    check_positive_int("n_iters", n_iters)
    n, m = cost.shape
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((m,), -math.log(m), dtype=cost.dtype, device=cost.device)
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(n_iters):
        f = epsilon * (log_a - torch.logsumexp((g[None, :] - cost) / epsilon, dim=1))
        g = epsilon * (log_b - torch.logsumexp((f[:, None] - cost) / epsilon, dim=0))
    return torch.exp((f[:, None] + g[None, :] - cost) / epsilon)


def align_units(features_a: torch.Tensor, features_b: torch.Tensor, *, epsilon: float = 0.05, n_iters: int = 200
                ) -> torch.Tensor:
    r"""Soft permutation that maps the hidden units of layer B onto those of layer A.

    Each row of ``features_a, features_b (m, f)`` describes one hidden unit (e.g. its input and output weights
    concatenated). With the cost $C_{ij} = 1 - \cos(a_i, b_j)$ and the Sinkhorn plan $T$ of :func:`sinkhorn`,
    $P = m\,T$ ``(m, m)`` is doubly stochastic: ``P @ w_in_b`` and ``w_out_b @ P.T`` are layer B with its units
    in A's order, ready to be averaged with A. See :cite:`imfeld2024fusion`.
    """
    require_tensor("features_a", features_a, ndim=2, floating=True)
    require_tensor("features_b", features_b, ndim=2, floating=True)
    if features_a.shape != features_b.shape:
        raise ValueError(f"features_a {tuple(features_a.shape)} and features_b {tuple(features_b.shape)} must match")
    a = torch.nn.functional.normalize(features_a, dim=1)
    b = torch.nn.functional.normalize(features_b, dim=1)
    return features_a.shape[0] * sinkhorn(1 - a @ b.T, epsilon=epsilon, n_iters=n_iters)
