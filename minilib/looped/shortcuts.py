r"""Reading and rewiring the residual stream across depth: linear shortcuts to the last layer and the ladder residual."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from minilib._checks import check_nonnegative_int, require_tensor

__all__ = ["fit_linear_shortcuts", "ladder_forward"]


def fit_linear_shortcuts(hidden_states: Sequence[torch.Tensor], final: torch.Tensor) -> list[torch.Tensor]:
    r"""Least-squares maps from each layer's hidden states to the final layer's ("Jump to Conclusions").

    $$ A_\ell = \arg\min_A \lVert H_\ell A - H_L \rVert_F^2 = (H_\ell^\top H_\ell)^{-1} H_\ell^\top H_L $$

    ``hidden_states``: a list of ``(N, d)`` matrices (one row per token, layer $\ell$), ``final (N, d_out)`` the
    last layer's states; returns one ``(d, d_out)`` map per layer, solved from the normal equations in float64
    (``N >= d`` rows of full column rank). $H_\ell A_\ell$ then stands in for the final state: read it through
    the output head to exit early. See :cite:`yomdin2024jump`.
    """
    require_tensor("final", final, ndim=2, floating=True)
    if not isinstance(hidden_states, (list, tuple)) or not hidden_states:
        raise TypeError(f"hidden_states must be a non-empty list of (N, d) tensors, got {type(hidden_states).__name__}")
    maps = []
    y = final.double()
    for i, h in enumerate(hidden_states):
        require_tensor(f"hidden_states[{i}]", h, ndim=2, floating=True)
        if h.shape[0] != final.shape[0]:
            raise ValueError(f"hidden_states[{i}] {tuple(h.shape)} and final {tuple(final.shape)} must have the same rows N")
        if h.shape[0] < h.shape[1]:
            raise ValueError(f"hidden_states[{i}] needs at least as many rows N as columns d, got {tuple(h.shape)}")
        h = h.double()
        maps.append(torch.linalg.solve(h.T @ h, h.T @ y).to(final.dtype))
    return maps


def ladder_forward(updates: Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, *, offset: int = 1) -> torch.Tensor:
    r"""Run residual sublayers with a ladder residual: sublayer $i$ reads the stream without the last ``offset`` updates.

    $$ o_i = f_i\Big(x_0 + \sum_{j < i - k} o_j\Big),\qquad y = x_0 + \sum_i o_i \qquad (k = \text{offset}) $$

    ``offset=0`` is the standard residual $x_{i+1} = x_i + f_i(x_i)$. With ``offset=1`` sublayer $i$ need not
    wait for sublayer $i-1$'s output (its all-reduce under tensor parallelism), so that communication can overlap
    the next computation. ``updates`` are the residual branches $f_i$ (e.g. the attention and FFN branches of
    each block), ``x (B, T, d) -> (B, T, d)``. See :cite:`zhang2025ladder`.
    """
    require_tensor("x", x, floating=True)
    check_nonnegative_int("offset", offset)
    if not isinstance(updates, (list, tuple)) or not all(callable(f) for f in updates):
        raise TypeError(f"updates must be a list of callables (the residual branches), got {type(updates).__name__}")
    outputs = []
    for i, f in enumerate(updates):
        visible = outputs[:max(0, i - offset)]
        outputs.append(f(x + sum(visible)) if visible else f(x))
    return x + sum(outputs) if outputs else x
