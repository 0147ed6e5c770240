"""minilib.ssm.distill: MOHAWK stage 1 fits an SSD mixing matrix to a causal softmax attention matrix; `align` (stages
1-2) pulls a student onto a frozen teacher; the stage-3 loss is the KL divergence written out."""
import numpy as np
import pytest
import torch

from minilib.ssm import SSDMatrixStudent, align, distillation_loss, fit_ssd_to_attention, ssd_recurrent


def teacher_attention(seed, B=2, L=24, d=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, d, dtype=torch.float64, generator=g)
    wq, wk = (torch.randn(d, d, dtype=torch.float64, generator=g) / d ** 0.5 for _ in range(2))
    scores = (x @ wq) @ (x @ wk).transpose(1, 2) / d ** 0.5
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    return x, torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stage_one_error_falls_steadily(seed):
    x, T = teacher_attention(seed)
    student, errors = fit_ssd_to_attention(T, x, d_state=8, steps=150, lr=2e-2, seed=seed)
    assert errors[-1] < 0.6 * errors[0]
    thirds = [min(errors[i * 50:(i + 1) * 50 + 1]) for i in range(3)]
    assert thirds[0] > thirds[1] > thirds[2], thirds
    # the fitted matrix is a real SSD: the student's matrix times x equals running its recurrence
    with torch.no_grad():
        M = student(x)
        log_a = -torch.nn.functional.softplus(student.to_log_a(x))
        y = ssd_recurrent(x[..., None, :], log_a, student.to_B(x)[:, :, None], student.to_C(x)[:, :, None])
    torch.testing.assert_close(M @ x, y[:, :, 0], rtol=0, atol=1e-10)


def test_bad_input():
    x, T = teacher_attention(0)
    with pytest.raises(ValueError, match=r"teacher must be \(B, L, L\)"):
        fit_ssd_to_attention(T[:, :5], x)
    with pytest.raises(ValueError, match="d_state must be a positive int"):
        SSDMatrixStudent(8, 0)


def test_align_pulls_a_student_onto_a_frozen_teacher_and_trains_only_its_params():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(6, 4).double(), torch.nn.Linear(6, 4).double()
    frozen = student.bias.detach().clone()
    teacher_before = teacher.weight.detach().clone()
    g = torch.Generator().manual_seed(1)
    inputs = iter(lambda: torch.randn(32, 6, dtype=torch.float64, generator=g), None)
    errors = align(student, teacher, inputs, [student.weight], steps=300, lr=5e-2)
    assert len(errors) == 300 and errors[-1] < 0.3 * errors[0]
    x = torch.randn(8, 6, dtype=torch.float64)
    with torch.no_grad():  # the error it reports is the relative Frobenius error, recomputed here
        want = ((student(x) - teacher(x)).norm() / teacher(x).norm()).item()
    assert want < 0.5 * errors[0]
    torch.testing.assert_close(student.bias, frozen, rtol=0, atol=0)  # only the params passed train
    torch.testing.assert_close(teacher.weight, teacher_before, rtol=0, atol=0)  # the teacher stays frozen


def test_distillation_loss_is_the_kl_divergence_written_out():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 7, dtype=torch.float64, generator=g), torch.randn(3, 5, 7, dtype=torch.float64, generator=g)
    for tau in (1.0, 2.0):
        p = torch.softmax(t / tau, -1).numpy()
        q = torch.softmax(s / tau, -1).numpy()
        want = tau ** 2 * float((p * (np.log(p) - np.log(q))).sum(-1).mean())
        assert abs(distillation_loss(s, t, temperature=tau).item() - want) < 1e-12
    assert distillation_loss(t, t).abs().item() < 1e-12
    s.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: distillation_loss(z, t, temperature=2.0), (s,))


def test_stage_two_and_three_bad_input():
    with pytest.raises(ValueError, match="student_logits and teacher_logits"):
        distillation_loss(torch.randn(2, 5), torch.randn(2, 6))
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(torch.randn(2, 5), torch.randn(2, 5), temperature=0.0)
    with pytest.raises(ValueError, match="params"):
        align(torch.nn.Identity(), torch.nn.Identity(), iter([torch.ones(2)]), [], steps=1)
    lin = torch.nn.Linear(2, 3)
    with pytest.raises(ValueError, match="student and teacher outputs must match"):
        align(lin, torch.nn.Identity(), iter([torch.ones(1, 2)]), lin.parameters(), steps=1)
