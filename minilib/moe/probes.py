r"""Activation sparsity: how many hidden units of an FFN are zero, and Top-k ReLU that makes it exact.

:func:`activation_sparsity` records the hidden activations of every :class:`~minilib.feedforward.FeedForward` in a
model (the input of its ``w2``) during one forward and returns, per FFN, the fraction of entries with
$|h| \le$ ``threshold``: for ReLU FFNs, the "lazy neurons" that do not fire :cite:`li2023lazy`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.feedforward import FeedForward

__all__ = ["activation_sparsity", "topk_relu"]


@torch.no_grad()
def activation_sparsity(model: nn.Module, run: Callable[[nn.Module], object], *, threshold: float = 0.0) -> list[float]:
    """Fraction of hidden activations with ``|h| <= threshold`` in each ``FeedForward`` of ``model`` (in module
    order) while ``run(model)`` executes one forward. See :cite:`li2023lazy`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_number("threshold", threshold, low=0.0)
    ffns = [m for m in model.modules() if isinstance(m, FeedForward)]
    if not ffns:
        raise ValueError("model has no minilib.feedforward.FeedForward to probe")
    counts = [[0, 0] for _ in ffns]

    def hook(i):
        def record(module, inputs):
            h = inputs[0]
            counts[i][0] += int((h.abs() <= threshold).sum())
            counts[i][1] += h.numel()
        return record

    handles = [ffn.w2.register_forward_pre_hook(hook(i)) for i, ffn in enumerate(ffns)]
    try:
        run(model)
    finally:
        for handle in handles:
            handle.remove()
    return [zero / total if total else float("nan") for zero, total in counts]


def topk_relu(x: torch.Tensor, k: int) -> torch.Tensor:
    r"""Top-k ReLU: $\operatorname{relu}(x)$ with all but the ``k`` largest entries of the last axis set to 0, so
    at most ``k`` units fire per token. ``x (..., n)``. See :cite:`li2023lazy`."""
    require_tensor("x", x, floating=True)
    check_positive_int("k", k)
    if k > x.shape[-1]:
        raise ValueError(f"k must be at most the last dimension of x ({x.shape[-1]}), got {k}")
    top = x.topk(k, dim=-1)
    return torch.zeros_like(x).scatter(-1, top.indices, torch.relu(top.values))
