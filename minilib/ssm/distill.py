r"""MOHAWK's first stage: fit an SSM's mixing matrix to a teacher's attention matrix :cite:`bick2024mohawk`.

Distilling a Transformer into an SSM starts with *matrix orientation*: for the same inputs $x$, the
student's materialised mixing matrix (:func:`~minilib.ssm.ssd_matrix`, with $B = x W_B$, $C = x W_C$,
$\log a = -\mathrm{softplus}(x w_a + b)$) is trained to match the teacher's causal attention matrix $T$,

$$ \min_{W_B, W_C, w_a, b}\ \frac{\lVert M(x) - T(x)\rVert_F}{\lVert T(x)\rVert_F} . $$

Later stages (matching block outputs, then end-to-end logits) are not implemented here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib._checks import check_positive_int, require_tensor
from minilib.ssm.selective import ssd_matrix

__all__ = ["SSDMatrixStudent", "fit_ssd_to_attention"]


class SSDMatrixStudent(torch.nn.Module):
    """One SSD head whose ``(B, L, L)`` mixing matrix is a function of ``x (B, L, d)``."""

    def __init__(self, d: int, d_state: int):
        super().__init__()
        check_positive_int("d", d)
        check_positive_int("d_state", d_state)
        self.to_B = torch.nn.Linear(d, d_state, bias=False)
        self.to_C = torch.nn.Linear(d, d_state, bias=False)
        self.to_log_a = torch.nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_a = -F.softplus(self.to_log_a(x))  # (B, L, 1): one head
        return ssd_matrix(log_a, self.to_B(x)[:, :, None], self.to_C(x)[:, :, None])[:, 0]


def fit_ssd_to_attention(teacher: torch.Tensor, x: torch.Tensor, *, d_state: int = 8, steps: int = 200,
                         lr: float = 1e-2, seed: int = 0) -> tuple[SSDMatrixStudent, list[float]]:
    """Stage 1 on fixed inputs: ``teacher (B, L, L)`` attention matrices of ``x (B, L, d)``; returns the student
    and its relative Frobenius error at every step (before each update, then after the last)."""
    require_tensor("teacher", teacher, ndim=3, floating=True)
    require_tensor("x", x, ndim=3, floating=True)
    if teacher.shape != (x.shape[0], x.shape[1], x.shape[1]):
        raise ValueError(f"teacher must be (B, L, L) for x {tuple(x.shape)}, got {tuple(teacher.shape)}")
    check_positive_int("steps", steps)
    torch.manual_seed(seed)
    student = SSDMatrixStudent(x.shape[-1], d_state).to(x.dtype)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    scale, errors = teacher.norm(), []
    for _ in range(steps):
        err = (student(x) - teacher).norm() / scale
        errors.append(err.item())
        opt.zero_grad()
        err.backward()
        opt.step()
    with torch.no_grad():
        errors.append(((student(x) - teacher).norm() / scale).item())
    return student, errors
