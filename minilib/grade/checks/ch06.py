"""Chapter 06 questions: ZOH discretisation, the S4D kernel, the recurrent selective scan, the combine of a
linear recurrence, and the causal FFT convolution.

The references are independent float64 computations (a block matrix exponential, repeated
multiplication, plain loops), never ``minilib.ssm``; the answers may not call the library's own versions.
"""
from __future__ import annotations

import torch

from minilib.grade.questions import Case, Question

f32, f64, c64, c128 = torch.float32, torch.float64, torch.complex64, torch.complex128

SSM = ("minilib.ssm.discretize", "minilib.ssm.discretize_diagonal", "minilib.ssm.s4d_kernel",
       "minilib.ssm.s4d_recurrent", "minilib.ssm.fft_conv", "minilib.ssm.direct_causal_conv", "minilib.convolution.fft_conv",
       "minilib.convolution.direct_causal_conv",
       "minilib.ssm.monarch_fft_conv", "minilib.ssm.selective_scan_recurrent", "minilib.ssm.selective_scan_parallel",
       "minilib.ssm.selective_scan_chunked", "minilib.ssm.ssm_matrix", "minilib.ssm.linear_recurrence_combine",
       "minilib.scan.associative_scan")
CONV = ("torch.nn.functional.conv1d", "torch.conv1d")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(shape, seed, dtype=f64, scale=1.0):
    return torch.randn(shape, generator=_gen(seed), dtype=f64).mul(scale).to(dtype)


# --- 06.q1 zero-order hold --------------------------------------------------------------------

def _zoh_cases() -> list[Case]:
    def stable(N, seed):
        return _randn((N, N), seed, scale=0.5) - 1.5 * torch.eye(N, dtype=f64)

    singular = stable(3, 3)
    singular[:, 0] = 0.0
    return [
        Case("N=1, P=1, dt=0.1, float64", (torch.tensor([[-2.0]], dtype=f64), torch.tensor([[1.0]], dtype=f64), 0.1)),
        Case("diagonal A (N=3, P=1), dt=0.5, float64", (torch.diag(torch.tensor([-1.0, -2.0, -4.0], dtype=f64)),
                                                       _randn((3, 1), 1), 0.5),
             hint="for diagonal A, A_bar = exp(dt a_n) and B_bar_n = (exp(dt a_n) - 1) / a_n * B_n: "
             "Euler (1 + dt a) and dt * B are only first-order approximations"),
        Case("dense stable A (N=4, P=2), dt=0.3, float64", (stable(4, 2), _randn((4, 2), 2), 0.3),
             hint="A_bar = expm(dt A) (a matrix exponential, not elementwise exp); "
             "B_bar = A^{-1} (A_bar - I) B = integral_0^dt expm(s A) ds B"),
        Case("singular A (a zero column, N=3, P=1), dt=0.2, float64", (singular, _randn((3, 1), 4), 0.2),
             hint="A is not invertible here: read A_bar and B_bar off expm(dt [[A, B], [0, 0]]) = [[A_bar, B_bar], [0, I]]"),
        Case("large step dt=2 (N=2, P=1), float64", (stable(2, 5), _randn((2, 1), 5), 2.0)),
        Case("dense A (N=3, P=1), dt=0.1, float32", (stable(3, 6).to(f32), _randn((3, 1), 6, f32), 0.1)),
    ]


def _zoh_reference(A, B, dt):
    N, P = B.shape
    block = torch.zeros(N + P, N + P, dtype=f64)
    block[:N, :N], block[:N, N:] = A, B
    return torch.linalg.matrix_exp(dt * block)[:N]  # [A_bar | B_bar]


Q1 = Question(
    id="06.q1",
    name="zoh_discretize",
    arg_names=("A", "B", "dt"),
    title="zero-order hold: discretise a continuous SSM (A, B) with step dt",
    make_cases=_zoh_cases,
    reference=_zoh_reference,
    hint="A_bar = expm(dt A), B_bar = integral_0^dt expm(s A) ds B; both are blocks of "
    "expm(dt [[A, B], [0, 0]]); return torch.cat([A_bar, B_bar], dim=1)",
    forbidden=SSM,
)


# --- 06.q2 the S4D convolution kernel -----------------------------------------------------------

def _s4d_cases() -> list[Case]:
    def case(label, channels, N, L, seed, dtype=f64, hint=""):
        g = _gen(seed)
        n = torch.arange(N, dtype=f64)
        A = torch.complex(-0.5 * torch.ones(channels, N, dtype=f64), torch.pi * n.expand(channels, N))
        B = torch.complex(torch.randn(channels, N, generator=g, dtype=f64), torch.randn(channels, N, generator=g, dtype=f64))
        C = torch.complex(torch.randn(channels, N, generator=g, dtype=f64), torch.randn(channels, N, generator=g, dtype=f64))
        dt = torch.exp(torch.empty(channels, dtype=f64).uniform_(-5, -1, generator=g))
        cdtype = c128 if dtype == f64 else c64
        return Case(label, (A.to(cdtype), B.to(cdtype), C.to(cdtype), dt.to(dtype), L), hint=hint)

    return [
        case("one channel, N=1, L=5, float64", 1, 1, 5, 0,
             hint="K_0 = 2 Re(sum_n C_n B_bar_n) (A_bar^0 = 1, the kernel starts at the power 0; the factor 2 "
             "counts each mode's conjugate partner)"),
        case("channels=2, N=4, L=16, float64", 2, 4, 16, 1,
             hint="A holds one of each conjugate pair: K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l), the factor 2 included"),
        case("channels=3, N=8, L=1, float64", 3, 8, 1, 2),
        case("channels=2, N=3, L=40, float64", 2, 3, 40, 3,
             hint="B_bar = (exp(dt A) - 1) / A * B (ZOH), not dt * B"),
        case("channels=4, N=6, L=20, float32", 4, 6, 20, 4, f32),
    ]


def _s4d_reference(A, B, C, dt, L):
    A, B, C = A.to(c128), B.to(c128), C.to(c128)
    dtA = dt.to(f64)[:, None] * A
    A_bar, B_bar = torch.exp(dtA), (torch.exp(dtA) - 1) / A * B
    out, power = [], torch.ones_like(A_bar)
    for _ in range(L):
        out.append(2 * (C * B_bar * power).sum(-1).real)
        power = power * A_bar
    return torch.stack(out, dim=-1)


Q2 = Question(
    id="06.q2",
    name="s4d_kernel",
    arg_names=("A", "B", "C", "dt", "L"),
    title="the convolution kernel of a diagonal (S4D) SSM",
    make_cases=_s4d_cases,
    reference=_s4d_reference,
    hint="A_bar = exp(dt[:, None] * A), B_bar = (A_bar - 1) / A * B; K[c, l] = 2 Re sum_n C B_bar A_bar^l "
    "for l = 0..L-1 (powers by exp(dt A l)); return a real (channels, L) tensor in dt's dtype",
    forbidden=SSM,
)


# --- 06.q3 the recurrent selective scan --------------------------------------------------------

def _scan_cases() -> list[Case]:
    def case(label, Bt, L, Ch, N, seed, dtype=f64, hint=""):
        g = _gen(seed)
        u = torch.randn(Bt, L, Ch, generator=g, dtype=f64)
        delta = torch.nn.functional.softplus(torch.randn(Bt, L, Ch, generator=g, dtype=f64) - 1)
        A = -torch.rand(Ch, N, generator=g, dtype=f64) * 2 - 0.1
        B, C = torch.randn(Bt, L, N, generator=g, dtype=f64), torch.randn(Bt, L, N, generator=g, dtype=f64)
        return Case(label, tuple(t.to(dtype) for t in (u, delta, A, B, C)), hint=hint)

    return [
        case("L=1 (Bt=1, C=2, N=3), float64", 1, 1, 2, 3, 0,
             hint="update, then read: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t (the step size multiplies the "
             "input too), y_t = <C_t, h_t>; at L=1, y_0 = <C_0, delta_0 B_0 u_0>"),
        case("Bt=2, L=6, C=3, N=4, float64", 2, 6, 3, 4, 1,
             hint="h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t, then y_t = <C_t, h_t> (the new state)"),
        case("long decays (Bt=1, L=12, C=2, N=2), float64", 1, 12, 2, 2, 2,
             hint="A_bar = exp(delta A) (ZOH), not 1 + delta A: with large delta |A| the Euler factor is not even in (0, 1)"),
        case("Bt=3, L=9, C=4, N=5, float64", 3, 9, 4, 5, 3),
        case("Bt=2, L=7, C=3, N=4, float32", 2, 7, 3, 4, 4, f32),
    ]


def _scan_reference(u, delta, A, B, C):
    Bt, L, Ch = u.shape
    y = torch.zeros(Bt, L, Ch, dtype=f64)
    for b in range(Bt):
        h = torch.zeros(Ch, A.shape[1], dtype=f64)
        for t in range(L):
            for c in range(Ch):
                h[c] = torch.exp(delta[b, t, c] * A[c]) * h[c] + delta[b, t, c] * u[b, t, c] * B[b, t]
            y[b, t] = h @ C[b, t]
    return y


Q3 = Question(
    id="06.q3",
    name="selective_scan",
    arg_names=("u", "delta", "A", "B", "C"),
    title="the selective scan as a recurrence: input-dependent delta, B, C",
    make_cases=_scan_cases,
    reference=_scan_reference,
    hint="h = zeros(Bt, C, N); for t: h = exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] "
    "* B[:, t, None, :]; y[:, t] = (h * C[:, t, None, :]).sum(-1)",
    forbidden=SSM,
)


# --- 06.q4 the combine of a linear recurrence ----------------------------------------------------

def _combine_cases() -> list[Case]:
    def case(label, shape, seed, dtype=f64, hint=""):
        g = _gen(seed)
        a1, a2 = torch.rand(shape, generator=g, dtype=f64), torch.rand(shape, generator=g, dtype=f64)
        b1, b2 = torch.randn(shape, generator=g, dtype=f64), torch.randn(shape, generator=g, dtype=f64)
        return Case(label, tuple(t.to(dtype) for t in (a1, b1, a2, b2)), hint=hint)

    return [
        case("scalars as (1,), float64", (1,), 0,
             hint="(a1, b1) is applied first: h -> a2 (a1 h + b1) + b2 = (a1 a2) h + (a2 b1 + b2)"),
        case("shape (5,), float64", (5,), 1,
             hint="the earlier offset b1 is decayed by the later a2, not the other way round"),
        case("shape (2, 3), float64", (2, 3), 2),
        case("shape (4,), float32", (4,), 3, f32),
    ]


def _combine_reference(a1, b1, a2, b2):
    h = torch.stack([torch.zeros_like(b1), torch.ones_like(b1)])  # apply both maps to h = 0 and h = 1
    after = a2 * (a1 * h + b1) + b2
    return torch.stack([after[1] - after[0], after[0]])  # the composed map's slope and offset


Q4 = Question(
    id="06.q4",
    name="recurrence_combine",
    arg_names=("a1", "b1", "a2", "b2"),
    title="the associative combine of h -> a h + b: first (a1, b1), then (a2, b2)",
    make_cases=_combine_cases,
    reference=_combine_reference,
    hint="return torch.stack([a1 * a2, a2 * b1 + b2])",
    forbidden=SSM,
)


# --- 06.q5 causal FFT convolution ------------------------------------------------------------------

def _conv_cases() -> list[Case]:
    def case(label, lead, Ch, L, Lk, seed, dtype=f64, hint=""):
        return Case(label, (_randn((*lead, Ch, L), seed, dtype), _randn((Ch, Lk), seed + 1, dtype)), hint=hint)

    impulse = torch.zeros(1, 8, dtype=f64)
    impulse[0, -1] = 1.0
    return [
        Case("an impulse at the last position, kernel of ones (C=1, L=8), float64", (impulse, torch.ones(1, 8, dtype=f64)),
             hint="the DFT computes a circular convolution: zero-pad u and the kernel to n >= L + L_k - 1 "
             "points, or the tail wraps around to the front; multiply the two spectra as they are (a conjugate "
             "gives a correlation) and keep the first L outputs"),
        case("C=2, L=16, L_k=16, float64", (), 2, 16, 16, 1),
        case("batch (3,), C=2, L=10, short kernel L_k=4, float64", (3,), 2, 10, 4, 2,
             hint="y_t = sum_s k_s u_{t-s}: the kernel is flipped relative to a correlation; keep the first L outputs"),
        case("L=1 (C=3), float64", (), 3, 1, 1, 3),
        case("batch (2, 2), C=1, L=33, L_k=33, float32", (2, 2), 1, 33, 33, 4, f32),
    ]


def _conv_reference(u, k):
    L, Lk = u.shape[-1], k.shape[-1]
    y = torch.zeros_like(u)
    for t in range(L):
        for s in range(min(t + 1, Lk)):
            y[..., t] += k[:, s] * u[..., t - s]
    return y


Q5 = Question(
    id="06.q5",
    name="causal_fft_conv",
    arg_names=("u", "k"),
    title="causal convolution by FFT, zero-padded (no wrap-around)",
    make_cases=_conv_cases,
    reference=_conv_reference,
    hint="n = L + L_k - 1 (or the next power of two); y = irfft(rfft(u, n=n) * rfft(k, n=n), n=n)[..., :L]",
    forbidden=SSM + CONV,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
