"""Chapter 06 questions: each reference against a computation of its own (scipy, numpy, the library's
independent forms), hints for specific mistakes, forbidden library calls. The solution / stub / wrong-answer
proof tests are in ``test_grade_proofs.py``.
"""
import numpy as np
import scipy.linalg
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get
from minilib.scan import associative_scan
from minilib.ssm import selective_scan_parallel

QUESTIONS = for_chapter("06")


def _f64(case):
    return [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in case.args]


def test_chapter_06_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"06.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["zoh_discretize", "s4d_kernel", "selective_scan", "recurrence_combine",
                                          "causal_fft_conv"]


def test_zoh_reference_equals_scipy_and_the_inverse_formula_where_a_is_invertible():
    for case in get("06.q1").cases():
        A, B, dt = _f64(case)
        out = get("06.q1").reference(A, B, dt)
        A_bar = scipy.linalg.expm(dt * A.numpy())
        np.testing.assert_allclose(out[:, :A.shape[0]].numpy(), A_bar, rtol=0, atol=1e-12)
        if abs(np.linalg.det(A.numpy())) > 1e-8:
            B_bar = np.linalg.solve(A.numpy(), (A_bar - np.eye(A.shape[0])) @ B.numpy())
            np.testing.assert_allclose(out[:, A.shape[0]:].numpy(), B_bar, rtol=0, atol=1e-10)


def test_kernel_reference_convolved_equals_the_recurrence():
    case = get("06.q2").cases()[1]
    A, B, C, dt, L = case.args
    K = get("06.q2").reference(A, B, C, dt, L)
    u = torch.randn(2, A.shape[0], L, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    A_bar, B_bar = torch.exp(dt[:, None] * A), (torch.exp(dt[:, None] * A) - 1) / A * B
    h, ys = torch.zeros(2, *A.shape, dtype=torch.complex128), []
    for t in range(L):
        h = A_bar * h + B_bar * u[..., t, None]
        ys.append(2 * (C * h).sum(-1).real)
    conv = torch.stack([sum(K[:, s] * u[..., t - s] for s in range(t + 1)) for t in range(L)], dim=-1)
    torch.testing.assert_close(conv, torch.stack(ys, -1), rtol=0, atol=1e-10)


def test_scan_reference_equals_the_library_parallel_scan():
    for case in get("06.q3").cases():
        u, delta, A, B, C = _f64(case)
        torch.testing.assert_close(get("06.q3").reference(u, delta, A, B, C),
                                   selective_scan_parallel(u, delta, A, B, C), rtol=0, atol=1e-10)


def test_combine_reference_drives_a_scan_that_solves_the_recurrence():
    combine = get("06.q4").reference

    def pairs(first, second):
        out = combine(first[0], first[1], second[0], second[1])
        return out[0], out[1]

    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(13, 2, dtype=torch.float64, generator=g), torch.randn(13, 2, dtype=torch.float64, generator=g)
    _, h = associative_scan(pairs, (a, b), dim=0)
    want, state = [], torch.zeros(2, dtype=torch.float64)
    for t in range(13):
        state = a[t] * state + b[t]
        want.append(state)
    torch.testing.assert_close(h, torch.stack(want), rtol=0, atol=1e-12)


def test_conv_reference_equals_numpy_convolve():
    for case in get("06.q5").cases():
        u, k = _f64(case)
        want = np.zeros(u.shape)
        for idx in np.ndindex(*u.shape[:-1]):
            want[idx] = np.convolve(u[idx].numpy(), k[idx[-1]].numpy())[:u.shape[-1]]
        np.testing.assert_allclose(get("06.q5").reference(u, k).numpy(), want, rtol=0, atol=1e-12)


def test_circular_convolution_gets_the_padding_hint():
    from tests.grade_support.wrong_ch06 import conv_circular

    assert "zero-pad" in grade.check("06.q5", conv_circular).details["hint"]


def test_singular_a_gets_the_block_exponential_hint():
    from tests.grade_support.wrong_ch06 import zoh_inverse_formula

    assert "expm(dt [[A, B], [0, 0]])" in grade.check("06.q1", zoh_inverse_formula).details["hint"]


def test_answers_follow_the_input_dtype():
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id
