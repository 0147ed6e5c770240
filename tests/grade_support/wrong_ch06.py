"""Plausible wrong answers to the chapter 06 questions, each with the text its failure must show."""
from __future__ import annotations

import torch


def zoh_euler(A, B, dt):
    """Forward Euler: A_bar = I + dt A, B_bar = dt B (first order only)."""
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return torch.cat([eye + dt * A, dt * B], dim=1)


def zoh_exp_a_euler_b(A, B, dt):
    """The right A_bar but Mamba's simplification dt B for B_bar (not what ZOH gives)."""
    return torch.cat([torch.linalg.matrix_exp(dt * A), dt * B], dim=1)


def zoh_elementwise_exp(A, B, dt):
    """exp applied entry by entry instead of the matrix exponential (right only for diagonal A)."""
    A_bar = torch.exp(dt * A) * torch.eye(A.shape[0], dtype=A.dtype) + dt * A * (1 - torch.eye(A.shape[0], dtype=A.dtype))
    return torch.cat([A_bar, torch.linalg.solve(A, (A_bar - torch.eye(A.shape[0], dtype=A.dtype)) @ B)], dim=1)


def zoh_inverse_formula(A, B, dt):
    """B_bar = A^{-1} (A_bar - I) B: right when A is invertible, inf/NaN or an error when it is singular."""
    A_bar = torch.linalg.matrix_exp(dt * A)
    return torch.cat([A_bar, torch.linalg.inv(A) @ (A_bar - torch.eye(A.shape[0], dtype=A.dtype)) @ B], dim=1)


def zoh_library(A, B, dt):
    from minilib.ssm import discretize
    A_bar, B_bar = discretize(A, B, dt)
    return torch.cat([A_bar, B_bar], dim=1)


def s4d_no_factor_two(A, B, C, dt, L):
    """Takes the real part without doubling: forgets the conjugate partner of each mode."""
    dtA = dt[:, None] * A
    B_bar = (torch.exp(dtA) - 1) / A * B
    powers = torch.exp(dtA[..., None] * torch.arange(L, dtype=dt.dtype))
    return torch.einsum("cn,cnl->cl", C * B_bar, powers).real


def s4d_euler_b(A, B, C, dt, L):
    """B_bar = dt B instead of the ZOH integral."""
    dtA = dt[:, None] * A
    powers = torch.exp(dtA[..., None] * torch.arange(L, dtype=dt.dtype))
    return 2 * torch.einsum("cn,cnl->cl", C * dt[:, None] * B, powers).real


def s4d_powers_from_one(A, B, C, dt, L):
    """Off by one: K_l uses A_bar^(l+1), as if the input entered the state one step before it is read."""
    dtA = dt[:, None] * A
    B_bar = (torch.exp(dtA) - 1) / A * B
    powers = torch.exp(dtA[..., None] * torch.arange(1, L + 1, dtype=dt.dtype))
    return 2 * torch.einsum("cn,cnl->cl", C * B_bar, powers).real


def _scan(u, delta, A, B, C, *, euler=False, read_before_update=False, no_delta_on_b=False):
    Bt, L, Ch = u.shape
    h = torch.zeros(Bt, Ch, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(L):
        dA = delta[:, t, :, None] * A
        a = 1 + dA if euler else torch.exp(dA)
        inp = (u[:, t] if no_delta_on_b else delta[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        if read_before_update:
            ys.append((h * C[:, t, None, :]).sum(-1))
        h = a * h + inp
        if not read_before_update:
            ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1)


def scan_read_before_update(u, delta, A, B, C):
    """Off-by-one update order: y_t reads h_{t-1}."""
    return _scan(u, delta, A, B, C, read_before_update=True)


def scan_euler_a(u, delta, A, B, C):
    """1 + delta A instead of exp(delta A)."""
    return _scan(u, delta, A, B, C, euler=True)


def scan_no_delta_on_b(u, delta, A, B, C):
    """Forgets the step size on the input: B_t u_t instead of delta_t B_t u_t."""
    return _scan(u, delta, A, B, C, no_delta_on_b=True)


def scan_library(u, delta, A, B, C):
    from minilib.ssm import selective_scan_recurrent
    return selective_scan_recurrent(u, delta, A, B, C)


def combine_reversed(a1, b1, a2, b2):
    """Composes in the wrong order: (a2, b2) first."""
    return torch.stack([a1 * a2, a1 * b2 + b1])


def combine_no_decay(a1, b1, a2, b2):
    """Adds the offsets without decaying the earlier one."""
    return torch.stack([a1 * a2, b1 + b2])


def combine_added_slopes(a1, b1, a2, b2):
    """Adds the slopes as if the maps were summed, not composed."""
    return torch.stack([a1 + a2, a2 * b1 + b2])


def conv_circular(u, k):
    """No zero padding: the DFT's circular convolution wraps the tail around."""
    L = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=L) * torch.fft.rfft(k, n=L), n=L)


def conv_pad_too_short(u, k):
    """Pads to L + 1 only: still wraps for kernels longer than 2."""
    n = u.shape[-1] + 1
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :u.shape[-1]]


def conv_correlation(u, k):
    """Cross-correlation (the kernel not flipped): y_t = sum_s k_s u_{t+s}... computed via the conjugate spectrum."""
    L, n = u.shape[-1], 2 * u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n).conj(), n=n)[..., :L]


def conv_full_length(u, k):
    """Returns all L + L_k - 1 outputs of the linear convolution instead of the first L."""
    n = u.shape[-1] + k.shape[-1] - 1
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)


def conv_conv1d(u, k):
    import torch.nn.functional as F
    L = u.shape[-1]
    x = F.pad(u.reshape(-1, *u.shape[-2:]), (k.shape[-1] - 1, 0))
    return F.conv1d(x, k.flip(-1)[:, None], groups=k.shape[0]).reshape(u.shape)


WRONG = [
    ("06.q1", zoh_euler, "max abs error"),
    ("06.q1", zoh_exp_a_euler_b, "max abs error"),
    ("06.q1", zoh_elementwise_exp, "case 3/6"),
    ("06.q1", zoh_inverse_formula, "singular"),
    ("06.q1", zoh_library, "forbidden"),
    ("06.q2", s4d_no_factor_two, "case 1/5"),
    ("06.q2", s4d_euler_b, "max abs error"),
    ("06.q2", s4d_powers_from_one, "case 1/5"),
    ("06.q3", scan_read_before_update, "case 1/5"),
    ("06.q3", scan_euler_a, "max abs error"),
    ("06.q3", scan_no_delta_on_b, "max abs error"),
    ("06.q3", scan_library, "forbidden"),
    ("06.q4", combine_reversed, "case 1/4"),
    ("06.q4", combine_no_decay, "max abs error"),
    ("06.q4", combine_added_slopes, "max abs error"),
    ("06.q5", conv_circular, "case 1/5"),
    ("06.q5", conv_pad_too_short, "max abs error"),
    ("06.q5", conv_correlation, "max abs error"),
    ("06.q5", conv_full_length, "wrong shape"),
    ("06.q5", conv_conv1d, "forbidden"),
]
