"""minilib.ssm.distill: MOHAWK stage 1 fits an SSD mixing matrix to a causal softmax attention matrix."""
import pytest
import torch

from minilib.ssm import SSDMatrixStudent, fit_ssd_to_attention, ssd_recurrent


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
