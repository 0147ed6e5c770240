"""minilib.ssm.lti: discretisation against an ODE integrator, S4D kernel = recurrence = naive powers, HiPPO/LMU (fp64)."""
import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.ssm import (discretize, discretize_diagonal, fft_conv, hippo_legs, legendre_readout, lmu_conv, lmu_matrices,
                         lmu_recurrent, s4d_init, s4d_kernel, s4d_recurrent)


def rk4_hold(A, B, h0, u, dt, steps=2000):
    """Integrate h' = A h + B u with u held constant over [0, dt] (numpy RK4, tiny steps)."""
    h, tau = h0.copy(), dt / steps
    f = lambda h: A @ h + B @ u  # noqa: E731
    for _ in range(steps):
        k1 = f(h)
        k2 = f(h + tau / 2 * k1)
        k3 = f(h + tau / 2 * k2)
        k4 = f(h + tau * k3)
        h = h + tau / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return h


@pytest.mark.parametrize("singular", [False, True])
def test_zoh_is_exact_for_inputs_held_over_the_step(singular):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4)) - 2 * np.eye(4)
    if singular:
        A[:, 0] = 0.0  # ZOH through the block exponential needs no inverse of A
    B, h0, u, dt = rng.standard_normal((4, 2)), rng.standard_normal(4), rng.standard_normal(2), 0.3
    A_bar, B_bar = discretize(torch.tensor(A), torch.tensor(B), dt)
    np.testing.assert_allclose(A_bar.numpy(), scipy.linalg.expm(dt * A), rtol=0, atol=1e-12)
    np.testing.assert_allclose(A_bar.numpy() @ h0 + B_bar.numpy() @ u, rk4_hold(A, B, h0, u, dt), rtol=0, atol=1e-10)


def test_bilinear_formula_batched_steps_and_second_order_agreement_with_zoh():
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((3, 3)) - 2 * np.eye(3), rng.standard_normal((3, 1))
    dts = torch.tensor([0.1, 0.01], dtype=torch.float64)
    A_bar, B_bar = discretize(torch.tensor(A), torch.tensor(B), dts, method="bilinear")
    assert A_bar.shape == (2, 3, 3) and B_bar.shape == (2, 3, 1)
    errors = []
    for i, dt in enumerate(dts.tolist()):
        inv = np.linalg.inv(np.eye(3) - dt / 2 * A)
        np.testing.assert_allclose(A_bar[i].numpy(), inv @ (np.eye(3) + dt / 2 * A), rtol=0, atol=1e-12)
        np.testing.assert_allclose(B_bar[i].numpy(), inv @ (dt * B), rtol=0, atol=1e-12)
        errors.append(np.abs(A_bar[i].numpy() - scipy.linalg.expm(dt * A)).max())
    assert errors[0] / errors[1] > 500  # local error O(dt^3): 10x smaller step, ~1000x smaller error


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_diagonal_discretization_equals_the_dense_one_on_a_diagonal_matrix(method):
    A = torch.complex(-torch.rand(5, dtype=torch.float64) - 0.1, torch.randn(5, dtype=torch.float64))
    B = torch.randn(5, dtype=torch.complex128)
    A_bar, B_bar = discretize_diagonal(A, B, 0.2, method=method)
    dense_A, dense_B = discretize(torch.diag(A), B[:, None], 0.2, method=method)
    torch.testing.assert_close(torch.diag(dense_A), A_bar, rtol=0, atol=1e-12)
    torch.testing.assert_close(dense_B[:, 0], B_bar, rtol=0, atol=1e-12)


def test_hippo_legs_entries_and_s4d_inits():
    A, B = hippo_legs(5)
    for n in range(5):
        assert B[n, 0] == pytest.approx((2 * n + 1) ** 0.5)
        for k in range(5):
            want = -((2 * n + 1) * (2 * k + 1)) ** 0.5 if n > k else -(n + 1) if n == k else 0.0
            assert A[n, k].item() == pytest.approx(want)
    lin, inv = s4d_init(4, kind="lin", channels=2), s4d_init(4, kind="inv")
    assert lin.shape == (2, 4) and torch.all(lin.real == -0.5)
    torch.testing.assert_close(lin[0].imag, torch.tensor([0, np.pi, 2 * np.pi, 3 * np.pi], dtype=torch.float64))
    torch.testing.assert_close(inv[0].imag, torch.tensor([4 / np.pi * (4 / (2 * n + 1) - 1) for n in range(4)],
                                                         dtype=torch.float64))


def naive_kernel(A, B, C, dt, L):
    """2 Re sum_n C_n B_bar_n A_bar_n^l with explicit repeated multiplication (numpy complex)."""
    A, B, C, dt = A.numpy(), B.numpy(), C.numpy(), dt.numpy()[:, None]
    A_bar = np.exp(dt * A)
    B_bar = (A_bar - 1) / A * B
    out, power = np.zeros((A.shape[0], L)), np.ones_like(A_bar)
    for l in range(L):
        out[:, l] = 2 * (C * B_bar * power).sum(-1).real
        power = power * A_bar
    return torch.tensor(out)


def random_s4d(channels, N, seed, kind="lin"):
    g = torch.Generator().manual_seed(seed)
    A = s4d_init(N, kind=kind, channels=channels)
    B = torch.randn(channels, N, dtype=torch.complex128, generator=g)
    C = torch.randn(channels, N, dtype=torch.complex128, generator=g)
    dt = torch.exp(torch.empty(channels, dtype=torch.float64).uniform_(np.log(1e-3), np.log(1e-1), generator=g))
    return A, B, C, dt


@settings(max_examples=20, deadline=None)
@given(L=st.integers(1, 50), N=st.integers(1, 8), kind=st.sampled_from(["lin", "inv"]), seed=st.integers(0, 999))
def test_convolution_equals_recurrence(L, N, kind, seed):
    """S4's identity: fft_conv(u, K) = the recurrence h_t = A_bar h + B_bar u_t, y = 2 Re C h, to 1e-10 (fp64)."""
    A, B, C, dt = random_s4d(3, N, seed, kind)
    K = s4d_kernel(A, B, C, dt, L)
    torch.testing.assert_close(K, naive_kernel(A, B, C, dt, L), rtol=0, atol=1e-10)
    u = torch.randn(2, 3, L, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(fft_conv(u, K), s4d_recurrent(u, A, B, C, dt), rtol=0, atol=1e-10)


def test_recurrent_state_carries_over():
    A, B, C, dt = random_s4d(2, 4, 7)
    u = torch.randn(1, 2, 20, dtype=torch.float64)
    y1, h = s4d_recurrent(u[..., :8], A, B, C, dt, return_state=True)
    y2 = s4d_recurrent(u[..., 8:], A, B, C, dt, state=h)
    torch.testing.assert_close(torch.cat([y1, y2], -1), s4d_recurrent(u, A, B, C, dt), rtol=0, atol=1e-12)


def test_legendre_readout_matches_numpy_and_lmu_remembers_a_delayed_input():
    r = torch.linspace(0, 1, 7, dtype=torch.float64)
    P = legendre_readout(6, r)
    for i in range(6):
        np.testing.assert_allclose(P[:, i].numpy(), np.polynomial.legendre.legval(2 * r.numpy() - 1, np.eye(6)[i]),
                                   rtol=0, atol=1e-12)
    # a smooth input; the LMU's state must hold the window u(t - r theta), r in [0, 1]
    theta, dt, order = 1.0, 1e-3, 12
    A, B = lmu_matrices(order, theta)
    A_bar, B_bar = discretize(A, B, dt)
    t = torch.arange(0, 4, dt, dtype=torch.float64)
    u = torch.sin(2 * np.pi * 0.7 * t) + 0.5 * torch.cos(2 * np.pi * 1.3 * t)
    m, states = torch.zeros(order, dtype=torch.float64), []
    for x in u:
        m = A_bar @ m + B_bar[:, 0] * x
        states.append(m)
    m_end = states[-1]
    delays = torch.linspace(0, 1, 11, dtype=torch.float64)
    recon = legendre_readout(order, delays) @ m_end
    want = torch.sin(2 * np.pi * 0.7 * (t[-1] - delays * theta)) + 0.5 * torch.cos(2 * np.pi * 1.3 * (t[-1] - delays * theta))
    assert (recon - want).abs().max() < 0.05


def test_bad_input():
    A, B, C, dt = random_s4d(2, 3, 0)
    with pytest.raises(ValueError, match="method"):
        discretize_diagonal(A, B, 0.1, method="euler")
    with pytest.raises(ValueError, match=r"A must be \(\.\.\., N, N\)"):
        discretize(torch.randn(3, 4), torch.randn(3, 1), 0.1)
    with pytest.raises(ValueError, match="dt must be positive"):
        discretize(torch.randn(3, 3), torch.randn(3, 1), -0.1)
    with pytest.raises(ValueError, match="A must have no zero entries"):
        discretize_diagonal(torch.zeros(3), torch.ones(3), 0.1)
    with pytest.raises(ValueError, match=r"B must have the shape of A"):
        s4d_kernel(A, B[:, :2], C, dt, 5)
    with pytest.raises(ValueError, match=r"dt must be \(channels,\)"):
        s4d_kernel(A, B, C, dt[:1], 5)
    with pytest.raises(ValueError, match="L must be a positive int"):
        s4d_kernel(A, B, C, dt, 0)
    with pytest.raises(ValueError, match=r"u must be \(\.\.\., channels=2, L\)"):
        s4d_recurrent(torch.randn(1, 3, 5), A, B, C, dt)
    with pytest.raises(ValueError, match="kind"):
        s4d_init(3, kind="legs")
    with pytest.raises(ValueError, match="theta"):
        lmu_matrices(3, 0.0)


def test_lmu_recurrent_equals_its_convolution_and_reconstructs_the_delayed_input():
    """LMU row: recurrent = convolution form (1e-10 in fp64, 1e-5 in fp32); u(t - theta) read from the state."""
    t = torch.arange(0, 3, 2e-3, dtype=torch.float64)
    u = torch.stack([torch.sin(2 * np.pi * 0.7 * t), torch.cos(2 * np.pi * 1.1 * t)])
    rec = lmu_recurrent(u, order=10, theta=1.0, dt=2e-3)
    torch.testing.assert_close(lmu_conv(u, order=10, theta=1.0, dt=2e-3), rec, rtol=0, atol=1e-10)
    torch.testing.assert_close(lmu_conv(u.float(), order=10, theta=1.0, dt=2e-3), rec.float(), rtol=0, atol=1e-5)
    delayed = rec[:, -1] @ legendre_readout(10, torch.ones(1, dtype=torch.float64))[0]
    want = torch.stack([torch.sin(2 * np.pi * 0.7 * (t[-1] - 1.0)), torch.cos(2 * np.pi * 1.1 * (t[-1] - 1.0))])
    assert (delayed - want).abs().max() < 0.05
