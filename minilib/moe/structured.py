r"""Structured linear layers for the FFN: low-rank and block-diagonal, with a dense guide blended out early.

- :class:`LowRankLinear`: $y = (x V) U$ with $V \in \mathbb{R}^{d_\text{in} \times r}$,
  $U \in \mathbb{R}^{r \times d_\text{out}}$: $r (d_\text{in} + d_\text{out})$ weights instead of
  $d_\text{in} d_\text{out}$.
- :class:`BlockDiagonalLinear`: $b$ independent blocks of size $d_\text{in}/b \times d_\text{out}/b$:
  $d_\text{in} d_\text{out} / b$ weights.
- :class:`SelfGuided`: $y = \alpha\, W x + (1 - \alpha)\, \operatorname{structured}(x)$ with $\alpha$ decayed from 1
  to 0 over the first steps of training (self-guided training), after which the dense $W$ can be dropped.

See :cite:`wei2024structured`.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_divisible, check_last_dim, check_nonnegative_int, check_positive_int

__all__ = ["LowRankLinear", "BlockDiagonalLinear", "SelfGuided"]


class LowRankLinear(nn.Module):
    """``x (..., d_in) -> (..., d_out)`` through a rank-``rank`` factorisation, no bias. See :cite:`wei2024structured`."""

    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("rank", rank)):
            check_positive_int(name, value)
        self.d_in, self.d_out = d_in, d_out
        self.v = nn.Linear(d_in, rank, bias=False)
        self.u = nn.Linear(rank, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d_in, size_name="d_in")
        return self.u(self.v(x))

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``(d_out, d_in)`` matrix, of rank at most ``rank``."""
        return self.u.weight @ self.v.weight


class BlockDiagonalLinear(nn.Module):
    """``x (..., d_in) -> (..., d_out)`` with ``n_blocks`` diagonal blocks, no bias. See :cite:`wei2024structured`."""

    def __init__(self, d_in: int, d_out: int, n_blocks: int):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("n_blocks", n_blocks)):
            check_positive_int(name, value)
        check_divisible("d_in", d_in, "n_blocks", n_blocks)
        check_divisible("d_out", d_out, "n_blocks", n_blocks)
        self.d_in, self.d_out, self.n_blocks = d_in, d_out, n_blocks
        self.weight = nn.Parameter(torch.randn(n_blocks, d_in // n_blocks, d_out // n_blocks) * (d_in / n_blocks) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d_in, size_name="d_in")
        blocks = x.reshape(*x.shape[:-1], self.n_blocks, self.d_in // self.n_blocks)
        return torch.einsum("...bi,bio->...bo", blocks, self.weight).reshape(*x.shape[:-1], self.d_out)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``(d_out, d_in)`` block-diagonal matrix."""
        return torch.block_diag(*self.weight).T


class SelfGuided(nn.Module):
    r"""$\alpha\, \operatorname{dense}(x) + (1 - \alpha) \operatorname{structured}(x)$, $\alpha$ linear from 1 to 0 over
    ``guide_steps`` calls of :meth:`step` (call it once per optimiser step); at $\alpha = 0$ the dense path is skipped.
    See :cite:`wei2024structured`."""

    def __init__(self, structured: nn.Module, d_in: int, d_out: int, guide_steps: int):
        super().__init__()
        check_positive_int("d_in", d_in)
        check_positive_int("d_out", d_out)
        check_nonnegative_int("guide_steps", guide_steps)
        if not isinstance(structured, nn.Module):
            raise TypeError(f"structured must be an nn.Module, got {type(structured).__name__}")
        self.structured, self.dense = structured, nn.Linear(d_in, d_out, bias=False)
        self.guide_steps, self.steps_taken = guide_steps, 0

    @property
    def alpha(self) -> float:
        return max(0.0, 1.0 - self.steps_taken / self.guide_steps) if self.guide_steps else 0.0

    def step(self) -> None:
        self.steps_taken += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        out = self.structured(x)
        return out if alpha == 0.0 else alpha * self.dense(x) + (1 - alpha) * out
