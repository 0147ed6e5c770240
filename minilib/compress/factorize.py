r"""Weight factorisation: truncated SVD with the rank chosen by the share of energy it keeps.

``w (out, in)`` becomes a product with $r(\text{out} + \text{in})$ parameters for rank $r$.
"""
from __future__ import annotations

import torch

from minilib._checks import check_number, check_positive_int, require_tensor

__all__ = ["svd_factorize", "energy_rank"]


def energy_rank(w: torch.Tensor, energy: float) -> int:
    r"""Smallest rank $r$ whose singular values keep a fraction ``energy`` of $\lVert W\rVert_F^2$: $\sum_{i \le r}\sigma_i^2 \ge e \sum_i \sigma_i^2$.

    ``w (out, in)`` -> int in ``[1, min(out, in)]``. See :cite:`mehta2019lowrank`.
    """
    require_tensor("w", w, ndim=2, floating=True)
    energy = check_number("energy", energy, low=0.0, high=1.0)
    s2 = torch.linalg.svdvals(w.detach().double()).pow(2)
    cumulative = torch.cumsum(s2, 0) / s2.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return int(min(int((cumulative < energy - 1e-12).sum()) + 1, len(s2)))


def svd_factorize(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Best rank-$r$ approximation (Eckart-Young): $W \approx A B$, $A = U_r \Sigma_r$ ``(out, r)``, $B = V_r^\top$ ``(r, in)``.

    $r(\text{out} + \text{in})$ parameters; at full rank $AB = W$ up to rounding. See :cite:`mehta2019lowrank`.
    """
    require_tensor("w", w, ndim=2, floating=True)
    if not 1 <= check_positive_int("rank", rank) <= min(w.shape):
        raise ValueError(f"rank must be in [1, min(out, in) = {min(w.shape)}], got {rank}")
    U, S, Vh = torch.linalg.svd(w.detach(), full_matrices=False)
    return U[:, :rank] * S[:rank], Vh[:rank]
