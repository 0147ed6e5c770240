r"""MOHAWK's three stages of distilling a Transformer into an SSM :cite:`bick2024mohawk`.

Distilling a Transformer into an SSM starts with *matrix orientation*: for the same inputs $x$, the
student's materialised mixing matrix (:func:`~minilib.ssm.ssd_matrix`, with $B = x W_B$, $C = x W_C$,
$\log a = -\mathrm{softplus}(x w_a + b)$) is trained to match the teacher's causal attention matrix $T$,

$$ \min_{W_B, W_C, w_a, b}\ \frac{\lVert M(x) - T(x)\rVert_F}{\lVert T(x)\rVert_F} . $$

(:func:`fit_ssd_to_attention` for one head on fixed inputs). Stage 2, *hidden-state alignment*, trains each
student block to produce the teacher block's output from the teacher's own block input $h_\ell$,
$\min \lVert S_\ell(h_\ell) - T_\ell(h_\ell)\rVert_F / \lVert T_\ell(h_\ell)\rVert_F$. Both stages are the same
loop, :func:`align`: a student function pulled towards a frozen teacher function on a stream of inputs, layer by
layer and independently of the others. Stage 3 trains the whole student end to end on
:func:`distillation_loss`, the KL divergence from the teacher's next-token distribution.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.ssm.selective import ssd_matrix

__all__ = ["SSDMatrixStudent", "fit_ssd_to_attention", "align", "distillation_loss"]


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


def align(student: Callable[[torch.Tensor], torch.Tensor], teacher: Callable[[torch.Tensor], torch.Tensor],
          inputs: Iterable[torch.Tensor], params, *, steps: int, lr: float = 1e-3) -> list[float]:
    r"""MOHAWK stages 1 and 2: Adam on ``params`` for ``steps`` steps, each on the next input $x$ of ``inputs``,
    minimising $\lVert \mathrm{student}(x) - \mathrm{teacher}(x)\rVert_F / \lVert \mathrm{teacher}(x)\rVert_F$ (the
    teacher's output taken without gradient). Returns that relative error at every step, before its update.

    Stage 1: ``student``/``teacher`` map a layer's input to the mixing matrices (the student's SSD matrix, the
    teacher's attention); stage 2: to the block outputs. Several layers at once: return them stacked.
    """
    check_positive_int("steps", steps)
    check_number("lr", lr, positive=True)
    params = list(params)
    if not params:
        raise ValueError("params must hold at least one tensor to train")
    opt = torch.optim.Adam(params, lr=lr)
    stream, errors = iter(inputs), []
    for _ in range(steps):
        x = next(stream)
        with torch.no_grad():
            target = teacher(x)
        out = student(x)
        if out.shape != target.shape:
            raise ValueError(f"student and teacher outputs must match, got {tuple(out.shape)} and {tuple(target.shape)}")
        err = (out - target).norm() / target.norm()
        errors.append(err.item())
        opt.zero_grad()
        err.backward()
        opt.step()
    return errors


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                      temperature: float = 1.0) -> torch.Tensor:
    r"""MOHAWK stage 3 (knowledge distillation): the mean over positions of
    $\tau^2\, \mathrm{KL}\big(p_T \,\Vert\, p_S\big) = \tau^2 \sum_v p_T(v)\,(\log p_T(v) - \log p_S(v))$ with
    $p = \mathrm{softmax}(\text{logits}/\tau)$. ``(..., V)`` logits of the same shape -> a scalar; the teacher's
    side carries no gradient.
    """
    require_tensor("student_logits", student_logits, floating=True)
    require_tensor("teacher_logits", teacher_logits, floating=True)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    tau = check_number("temperature", temperature, positive=True)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    return tau ** 2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean()
