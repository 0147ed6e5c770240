r"""Weight factorisation: truncated SVD with the rank chosen by the share of energy it keeps, and a dense factor
times an N:M-sparse factor.

``w (out, in)`` becomes a product with $r(\text{out} + \text{in})$ parameters for rank $r$ (SVD), or
$r\,\text{out} + r\,\text{in}\,n/m$ nonzeros (dense times N:M sparse).
"""
from __future__ import annotations

import torch

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.compress.prune import nm_mask

__all__ = ["svd_factorize", "energy_rank", "dense_sparse_factorize"]


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


def dense_sparse_factorize(w: torch.Tensor, rank: int, *, n: int = 2, m: int = 4, steps: int = 300, lr: float = 1e-2
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Dense times N:M-sparse factorisation (DSFormer): $W \approx D\,(S \odot M(S))$, $M$ the :func:`nm_mask` of $S$.

    $$ \min_{D, S}\ \lVert W - D\,(S \odot M(S)) \rVert_F^2, \qquad D \in \mathbb R^{\text{out}\times r},\
       S \in \mathbb R^{r \times \text{in}} $$

    Starts from the rank-$r$ SVD split evenly ($D = U_r\Sigma_r^{1/2}$, $S = \Sigma_r^{1/2}V_r^\top$), then ``steps``
    Adam steps on both factors with the mask re-selected at every step and the gradient passed straight through it
    (the straight-through factorizer), and finally refits $D$ by least squares for the last mask. ``w (out, in)``,
    ``in`` divisible by ``m`` -> ``(D (out, rank), S_sparse (rank, in))`` with exactly ``n`` nonzeros of every ``m``
    in each row of ``S_sparse``: $r\,\text{out} + r\,\text{in}\,n/m$ stored values (plus the mask's indices). The
    paper learns the factors with the task loss; here they fit the weight alone :cite:`chand2023dsformer`.
    """
    require_tensor("w", w, ndim=2, floating=True)
    out_f, in_f = w.shape
    if not 1 <= check_positive_int("rank", rank) <= min(out_f, in_f):
        raise ValueError(f"rank must be in [1, min(out, in) = {min(out_f, in_f)}], got {rank}")
    check_positive_int("n", n)
    if check_positive_int("m", m) < n:
        raise ValueError(f"n must be at most m, got n={n}, m={m}")
    if in_f % m:
        raise ValueError(f"the input size of w {tuple(w.shape)} must be divisible by m={m}")
    check_positive_int("steps", steps)
    lr = check_number("lr", lr, positive=True)
    target = w.detach()
    U, sigma, Vh = torch.linalg.svd(target, full_matrices=False)
    root = sigma[:rank].sqrt()
    dense = (U[:, :rank] * root).clone().requires_grad_(True)
    sparse = (root[:, None] * Vh[:rank]).clone().requires_grad_(True)
    scale = target.pow(2).mean().clamp_min(torch.finfo(target.dtype).tiny)
    opt = torch.optim.Adam([dense, sparse], lr=lr * target.abs().max().sqrt().item())
    with torch.enable_grad():
        for _ in range(steps):
            masked = sparse + (sparse.masked_fill(~nm_mask(sparse, n, m), 0.0) - sparse).detach()
            loss = (target - dense @ masked).pow(2).mean() / scale
            opt.zero_grad()
            loss.backward()
            opt.step()
    s_sparse = sparse.detach() * nm_mask(sparse, n, m)
    dense = torch.linalg.lstsq(s_sparse.T.double(), target.T.double(), driver="gelsd").solution.T.to(target.dtype)
    return dense, s_sparse
