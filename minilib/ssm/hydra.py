r"""Hydra's bidirectional mixer: a quasiseparable matrix as two SSD scans and a diagonal :cite:`hwang2024hydra`.

A causal SSM mixes with a lower-triangular semiseparable matrix (:func:`~minilib.ssm.ssd_matrix`). Hydra
makes it bidirectional with a *quasiseparable* matrix: a semiseparable strictly-lower part from a forward
scan, a semiseparable strictly-upper part from a scan of the reversed sequence, and a free diagonal,

$$ y = \mathrm{shift}\big(\mathrm{SS}_f(x)\big) + \mathrm{flip}\Big(\mathrm{shift}\big(\mathrm{SS}_b(\mathrm{flip}\,x)\big)\Big) + D \odot x, $$

where $\mathrm{shift}$ moves a sequence one position later (so neither scan touches the diagonal). It costs
two $O(L)$ scans, not an $L \times L$ matrix.
"""
from __future__ import annotations

import torch

from minilib._checks import require_tensor
from minilib.ssm.selective import ssd_chunked, ssd_matrix

__all__ = ["hydra", "hydra_matrix"]


def _check_diag(x, D):
    require_tensor("D", D, ndim=1, floating=True)
    if D.shape[0] != x.shape[2]:
        raise ValueError(f"D must be (H,) = ({x.shape[2]},) for x {tuple(x.shape)}, got {tuple(D.shape)}")


def _shift(y):
    """``y (Bt, L, ...)`` one position later along dim 1, a zero row first."""
    return torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1)


def hydra(x, forward: tuple, backward: tuple, D, *, chunk_size: int = 64):
    r"""Bidirectional quasiseparable mixing in $O(L)$: ``x (Bt, L, H, P)``, ``forward = (log_a, B, C)`` and
    ``backward`` the same for the reversed direction (positions in the original order), ``D (H,)``.

    The backward parameters are given in the original order and flipped here, so position $s$'s
    $B^b_s$ writes $x_s$ into the backward state and $C^b_t$ reads it at $t < s$.
    """
    _check_diag(x, D)
    flip = lambda t: t.flip(1)  # noqa: E731
    y = _shift(ssd_chunked(x, *forward, chunk_size=chunk_size))
    y = y + flip(_shift(ssd_chunked(flip(x), *map(flip, backward), chunk_size=chunk_size)))
    return y + D[:, None] * x


def hydra_matrix(forward: tuple, backward: tuple, D) -> torch.Tensor:
    r"""The ``(Bt, H, L, L)`` quasiseparable matrix of :func:`hydra`: ``y[:, t] = sum_s M[t, s] x[:, s]`` per head.

    $M_{ts} = \mathrm{SS}_f[t-1, s]$ for $s < t$, $D$ on the diagonal, $\mathrm{SS}_b$ of the reversed
    sequence (flipped back) above it.
    """
    lower = ssd_matrix(*forward)  # (Bt, H, L, L)
    upper = ssd_matrix(*(t.flip(1) for t in backward)).flip(-1).flip(-2)
    L = lower.shape[-1]
    shift = torch.diag(torch.ones(L - 1, dtype=lower.dtype, device=lower.device), -1)  # (S y)_t = y_{t-1}
    _check_diag(forward[1][..., :1], D)
    return shift @ lower + shift.T @ upper + torch.diag_embed(D[None, :, None].expand(lower.shape[0], -1, L))
