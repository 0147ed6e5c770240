r"""Test-time memories: a linear memory updated by gradient steps while it reads (ATLAS's Omega rule).

Titans :cite:`behrouz2025titans` and ATLAS :cite:`behrouz2025atlas` treat a layer's state as the weights of a
memory $M$ trained *during inference* on an associative loss. ATLAS's Omega rule optimises the loss over a
sliding window of the last $c$ tokens instead of only the current one,

$$ M_t = M_{t-1} - \eta \nabla_M \sum_{i=t-c+1}^{t} \tfrac12\lVert M k_i - v_i\rVert^2
       = M_{t-1} - \eta \sum_{i=t-c+1}^{t} (M_{t-1} k_i - v_i)\, k_i^\top,\qquad y_t = M_t q_t . $$

With $c = 1$ this is the delta rule $M_t = M_{t-1}(I - \eta k_t k_t^\top) + \eta\, v_t k_t^\top$.
"""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int, require_tensor

__all__ = ["omega_memory"]


def omega_memory(k: torch.Tensor, v: torch.Tensor, q: torch.Tensor, *, window: int = 1, lr: float = 0.5,
                 state: torch.Tensor | None = None, return_state: bool = False):
    r"""Read ``q`` from a linear memory trained online with the Omega rule over the last ``window`` pairs.

    ``k, q (B, L, d_k)``, ``v (B, L, d_v)``, ``state`` ``(B, d_v, d_k)`` (default zeros) -> ``y (B, L, d_v)``
    (and the final memory if ``return_state``). The memory has the same size for every ``window``.
    """
    for name, x in (("k", k), ("v", v), ("q", q)):
        require_tensor(name, x, ndim=3, floating=True)
    check_positive_int("window", window)
    if q.shape != k.shape or v.shape[:2] != k.shape[:2]:
        raise ValueError(f"k and q must be (B, L, d_k) and v (B, L, d_v) alike, got k {tuple(k.shape)}, "
                         f"q {tuple(q.shape)}, v {tuple(v.shape)}")
    B, L, dk = k.shape
    M = k.new_zeros(B, v.shape[-1], dk) if state is None else state
    ys = []
    for t in range(L):
        lo = max(0, t - window + 1)
        kw, vw = k[:, lo:t + 1], v[:, lo:t + 1]  # (B, c, d)
        residual = torch.einsum("bvk,bck->bcv", M, kw) - vw
        M = M - lr * torch.einsum("bcv,bck->bvk", residual, kw)
        ys.append(torch.einsum("bvk,bk->bv", M, q[:, t]))
    y = torch.stack(ys, dim=1) if ys else v.new_zeros(B, 0, v.shape[-1])
    return (y, M) if return_state else y
