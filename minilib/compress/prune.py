r"""Pruning: unstructured masks (magnitude, activation-aware), N:M semi-structured masks, sublayer redundancy.

A mask is a bool tensor of the weight's shape, ``True`` where the weight is kept; apply it as ``w * mask``.
"""
from __future__ import annotations

import torch

from minilib._checks import check_number, check_positive_int, require_tensor

__all__ = ["magnitude_mask", "wanda_mask", "nm_mask", "sublayer_redundancy"]


def _check_sparsity(sparsity) -> float:
    return check_number("sparsity", sparsity, low=0.0, high=1.0)


def _keep_largest(score: torch.Tensor, n_drop: int) -> torch.Tensor:
    """Mask of ``score (rows, cols)`` dropping the ``n_drop`` smallest entries of every row (ties: lower index kept)."""
    mask = torch.ones_like(score, dtype=torch.bool)
    if n_drop:
        order = torch.sort(score, dim=-1, stable=True, descending=True).indices
        mask.scatter_(-1, order[..., score.shape[-1] - n_drop:], False)
    return mask


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    r"""Unstructured magnitude pruning: drop the $\lfloor s\,n \rfloor$ entries of smallest $|w|$ in the whole tensor.

    ``w`` any shape -> bool mask of the same shape. See :cite:`zafrir2021prune`.
    """
    require_tensor("w", w, floating=True)
    sparsity = _check_sparsity(sparsity)
    flat = w.detach().abs().reshape(1, -1)
    return _keep_largest(flat, int(sparsity * flat.shape[1])).reshape(w.shape)


def wanda_mask(w: torch.Tensor, input_norms: torch.Tensor, sparsity: float) -> torch.Tensor:
    r"""Activation-aware (Wanda-style) pruning: score $S_{ij} = |W_{ij}|\,\lVert X_{:,j}\rVert_2$, dropped per output row.

    ``w (out, in)``, ``input_norms (in,)`` the norm of each input feature over calibration tokens -> bool mask
    ``(out, in)`` keeping the ``in - floor(s * in)`` largest scores of every row. See :cite:`sun2024wanda`.
    """
    require_tensor("w", w, ndim=2, floating=True)
    require_tensor("input_norms", input_norms, ndim=1, floating=True)
    if input_norms.shape[0] != w.shape[1]:
        raise ValueError(f"input_norms must have w's in={w.shape[1]} entries, got shape {tuple(input_norms.shape)}")
    sparsity = _check_sparsity(sparsity)
    score = w.detach().abs() * input_norms.detach()[None, :]
    return _keep_largest(score, int(sparsity * w.shape[1]))


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4, *, score: torch.Tensor | None = None) -> torch.Tensor:
    r"""N:M semi-structured mask: in every run of ``m`` consecutive entries of the last dimension keep the ``n`` largest.

    $$ \text{mask}_{g} = \operatorname{top}_n\big(\{\,|w_{g,1}|, \dots, |w_{g,m}|\,\}\big) \quad \text{for each group } g $$

    ``score`` (same shape as ``w``) replaces $|w|$ as the ranking (e.g. Wanda's). ``w (..., in)`` with ``in``
    divisible by ``m`` -> bool mask, exactly ``n`` kept per group (2:4 is what sparse tensor cores run).
    See :cite:`huang2024pruning`.
    """
    require_tensor("w", w, floating=True)
    check_positive_int("n", n)
    check_positive_int("m", m)
    if n > m:
        raise ValueError(f"n must be at most m, got n={n}, m={m}")
    if w.ndim < 1 or w.shape[-1] % m:
        raise ValueError(f"the last dimension of w {tuple(w.shape)} must be divisible by m={m}")
    ranking = w.detach().abs() if score is None else score.detach()
    if ranking.shape != w.shape:
        raise ValueError(f"score must have w's shape {tuple(w.shape)}, got {tuple(ranking.shape)}")
    return _keep_largest(ranking.reshape(-1, m), m - n).reshape(w.shape)


def sublayer_redundancy(x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    r"""Redundancy of a (sub)layer: one minus the mean cosine similarity of its input and output hidden states.

    $$ r = 1 - \frac{1}{BT}\sum_{b,t} \frac{\langle x^{\text{in}}_{bt},\, x^{\text{out}}_{bt}\rangle}
                                          {\lVert x^{\text{in}}_{bt}\rVert\,\lVert x^{\text{out}}_{bt}\rVert} $$

    ``x_in, x_out (..., d_model)`` (the residual stream before and after the sublayer) -> 0-d tensor. A score
    near 0 means the sublayer barely changes the stream and is a candidate to drop. See :cite:`he2024matters`.
    """
    require_tensor("x_in", x_in, floating=True)
    require_tensor("x_out", x_out, floating=True)
    if x_in.shape != x_out.shape:
        raise ValueError(f"x_in {tuple(x_in.shape)} and x_out {tuple(x_out.shape)} must have the same shape")
    return 1 - torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1).mean()
