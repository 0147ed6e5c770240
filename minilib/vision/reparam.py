r"""Structural reparameterisation: parallel linear branches while training, one linear map at inference.

$$ \sum_{b=1}^{K} (x W_b + c_b) = x \Big(\sum_b W_b\Big) + \sum_b c_b $$

holds exactly because nothing non-linear sits between the branches and their sum, so a trained
:class:`BranchedLinear` folds into one :class:`torch.nn.Linear` (:func:`merge_branches`). :cite:`zhou2025rethinking`
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from minilib._checks import check_positive_int

__all__ = ["BranchedLinear", "merge_branches"]


class BranchedLinear(nn.Module):
    r"""``n_branches`` parallel linear maps whose outputs are summed: $y = \sum_b (x W_b + c_b)$, ``(..., d_in) -> (..., d_out)``."""

    def __init__(self, d_in: int, d_out: int, n_branches: int):
        super().__init__()
        check_positive_int("d_in", d_in)
        check_positive_int("d_out", d_out)
        self.branches = nn.ModuleList(nn.Linear(d_in, d_out) for _ in range(check_positive_int("n_branches", n_branches)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)

    def merged(self) -> nn.Linear:
        """The single :class:`torch.nn.Linear` with the summed weights and biases."""
        first = self.branches[0]
        out = nn.Linear(first.in_features, first.out_features, device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(sum(b.weight for b in self.branches))
            out.bias.copy_(sum(b.bias for b in self.branches))
        return out


def merge_branches(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`BranchedLinear` replaced by its merged :class:`torch.nn.Linear`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, BranchedLinear):
        return model.merged()
    merged = copy.deepcopy(model)
    for name, child in list(merged.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, BranchedLinear):
                setattr(child, attr, sub.merged())
    return merged
