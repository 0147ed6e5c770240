r"""Linear time-invariant state-space models: discretisation, initialisations, kernel and recurrence.

A continuous SSM $\dot h(t) = A h(t) + B u(t)$, $y(t) = C h(t)$ sampled with step $\Delta$ becomes
$h_t = \bar A h_{t-1} + \bar B u_t$, $y_t = C h_t$, and, unrolled from $h_{-1} = 0$, the convolution

$$ y_t = \sum_{s \le t} \bar K_{t-s}\, u_s, \qquad \bar K_\ell = C \bar A^{\ell} \bar B . $$

The same model can therefore be trained as a convolution (:func:`~minilib.ssm.fft_conv` with
:func:`s4d_kernel`) and run as a recurrence (:func:`s4d_recurrent`) :cite:`gu2023mamba`.
HiPPO-LegS and the Legendre delay system of the LMU :cite:`voelker2019lmu` give matrices $A, B$ whose
state is a compressed record of the input history; S4D uses diagonal $A$ :cite:`gu2022s4d`.
"""
from __future__ import annotations

import math

import torch

from minilib._checks import check_positive_int, require_tensor
from minilib.convolution import fft_conv

__all__ = ["DISCRETIZATIONS", "discretize", "discretize_diagonal", "hippo_legs", "s4d_init", "s4d_kernel",
           "s4d_recurrent", "lmu_matrices", "legendre_readout", "lmu_recurrent", "lmu_conv"]

DISCRETIZATIONS = ("zoh", "bilinear")


def _check_method(method: str) -> None:
    if method not in DISCRETIZATIONS:
        raise ValueError(f"method must be one of {DISCRETIZATIONS}, got {method!r}")


def _require_float_or_complex(name: str, x) -> None:
    require_tensor(name, x)
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating-point or complex tensor, got dtype {x.dtype}")


def _as_tensor(dt, like: torch.Tensor) -> torch.Tensor:
    dt = torch.as_tensor(dt, dtype=like.real.dtype if like.is_complex() else like.dtype, device=like.device)
    if (dt <= 0).any():
        raise ValueError("dt must be positive")
    return dt


def discretize(A: torch.Tensor, B: torch.Tensor, dt, *, method: str = "zoh") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Discretise a dense SSM: ``A (..., N, N)``, ``B (..., N, P)``, step ``dt`` (float or tensor of shape ``(...)``).

    Zero-order hold (the input held constant over each step):
    $\bar A = e^{\Delta A}$, $\bar B = \int_0^\Delta e^{sA} ds\, B$, both read off one matrix exponential
    $\exp\!\big(\Delta \left[\begin{smallmatrix} A & B \\ 0 & 0 \end{smallmatrix}\right]\big)
    = \left[\begin{smallmatrix} \bar A & \bar B \\ 0 & I \end{smallmatrix}\right]$ (no inverse of $A$ needed).
    Bilinear (Tustin): $\bar A = (I - \tfrac{\Delta}{2}A)^{-1}(I + \tfrac{\Delta}{2}A)$,
    $\bar B = (I - \tfrac{\Delta}{2}A)^{-1}\Delta B$. Returns ``(A_bar, B_bar)``.
    """
    _check_method(method)
    for name, x in (("A", A), ("B", B)):
        _require_float_or_complex(name, x)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2] or B.ndim < 2 or B.shape[-2] != A.shape[-1]:
        raise ValueError(f"A must be (..., N, N) and B (..., N, P), got A {tuple(A.shape)} and B {tuple(B.shape)}")
    N, P = B.shape[-2:]
    dt = _as_tensor(dt, A)
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2], dt.shape)
    dtype = torch.promote_types(A.dtype, B.dtype)
    A, B = A.to(dtype).expand(*batch, N, N), B.to(dtype).expand(*batch, N, P)
    dt = dt.expand(batch)[..., None, None]
    if method == "zoh":
        top = torch.cat([A, B], dim=-1) * dt
        block = torch.cat([top, torch.zeros(*batch, P, N + P, dtype=dtype, device=A.device)], dim=-2)
        E = torch.linalg.matrix_exp(block)
        return E[..., :N, :N], E[..., :N, N:]
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    lhs = eye - dt / 2 * A
    return torch.linalg.solve(lhs, eye + dt / 2 * A), torch.linalg.solve(lhs, dt * B)


def discretize_diagonal(A: torch.Tensor, B: torch.Tensor, dt, *, method: str = "zoh") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Discretise a diagonal SSM elementwise: ``A``, ``B``, ``dt`` broadcastable (``A`` real or complex, nonzero).

    ZOH: $\bar A = e^{\Delta A}$, $\bar B = (e^{\Delta A} - 1) A^{-1} B$; bilinear:
    $\bar A = \frac{1 + \Delta A/2}{1 - \Delta A/2}$, $\bar B = \frac{\Delta B}{1 - \Delta A/2}$.
    """
    _check_method(method)
    for name, x in (("A", A), ("B", B)):
        _require_float_or_complex(name, x)
    if (A == 0).any():
        raise ValueError("A must have no zero entries (a diagonal ZOH divides by A)")
    dt = _as_tensor(dt, A)
    try:
        torch.broadcast_shapes(A.shape, B.shape, dt.shape)
    except RuntimeError:
        raise ValueError(f"A, B and dt must broadcast together, got A {tuple(A.shape)}, B {tuple(B.shape)}, "
                         f"dt {tuple(dt.shape)}") from None
    if method == "zoh":
        A_bar = torch.exp(dt * A)
        return A_bar, (A_bar - 1) / A * B
    return (1 + dt * A / 2) / (1 - dt * A / 2), dt * B / (1 - dt * A / 2)


def hippo_legs(N: int, *, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    r"""HiPPO-LegS matrices ``(A (N, N), B (N, 1))`` :cite:`gu2020hippo`:

    $A_{nk} = -\sqrt{(2n+1)(2k+1)}$ for $n > k$, $-(n+1)$ for $n = k$, $0$ above the diagonal;
    $B_n = \sqrt{2n+1}$. With $\dot c = \frac{1}{t}(A c + B u)$ the state $c(t)$ holds the Legendre
    coefficients of the whole history $u|_{[0,t]}$ rescaled to $[0, 1]$.
    """
    check_positive_int("N", N)
    r = torch.sqrt(2 * torch.arange(N, dtype=dtype) + 1)
    A = -torch.tril(torch.outer(r, r), diagonal=-1) - torch.diag(torch.arange(1, N + 1, dtype=dtype))
    return A, r[:, None].clone()


def s4d_init(N: int, *, kind: str = "lin", channels: int = 1) -> torch.Tensor:
    r"""Diagonal $A$ of S4D :cite:`gu2022s4d`, one of each conjugate pair, shape ``(channels, N)`` complex128.

    S4D-Lin: $A_n = -\tfrac12 + i\pi n$; S4D-Inv: $A_n = -\tfrac12 + i\frac{N}{\pi}\big(\frac{N}{2n+1} - 1\big)$.
    """
    check_positive_int("N", N)
    check_positive_int("channels", channels)
    n = torch.arange(N, dtype=torch.float64)
    if kind == "lin":
        imag = math.pi * n
    elif kind == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    else:
        raise ValueError(f"kind must be 'lin' or 'inv', got {kind!r}")
    return torch.complex(torch.full_like(n, -0.5), imag).expand(channels, N).clone()


def _check_diagonal_ssm(A, B, C, dt) -> None:
    require_tensor("A", A, ndim=2)
    C_ch, N = A.shape
    for name, x in (("B", B), ("C", C)):
        require_tensor(name, x, ndim=2)
        if x.shape != A.shape:
            raise ValueError(f"{name} must have the shape of A {tuple(A.shape)} (channels, N), got {tuple(x.shape)}")
    require_tensor("dt", dt, ndim=1)
    if dt.shape[0] != C_ch:
        raise ValueError(f"dt must be (channels,) = ({C_ch},), got {tuple(dt.shape)}")


def s4d_kernel(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, dt: torch.Tensor, L: int) -> torch.Tensor:
    r"""Convolution kernel of a diagonal SSM with ZOH: ``(channels, L)`` real,

    $$ \bar K_{c,\ell} = 2\,\mathrm{Re} \sum_{n} C_{cn}\, \bar B_{cn}\, \bar A_{cn}^{\,\ell},\qquad
       \bar A = e^{\Delta_c A_{cn}},\ \bar B = (\bar A - 1) A^{-1} B, $$

    a Vandermonde product. ``A, B, C (channels, N)`` (complex; ``A`` holds one of each conjugate
    pair, hence the factor 2 and the real output), ``dt (channels,)`` :cite:`gu2022s4d`.
    """
    _check_diagonal_ssm(A, B, C, dt)
    check_positive_int("L", L)
    _, B_bar = discretize_diagonal(A, B, dt[:, None])
    powers = torch.exp((dt[:, None] * A)[..., None] * torch.arange(L, device=A.device))  # A_bar^l, (channels, N, L)
    return 2 * torch.einsum("cn,cnl->cl", C * B_bar, powers).real


def s4d_recurrent(u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, dt: torch.Tensor, *,
                  state: torch.Tensor | None = None, return_state: bool = False):
    r"""The same SSM as :func:`s4d_kernel` run step by step: $h_t = \bar A h_{t-1} + \bar B u_t$,
    $y_t = 2\,\mathrm{Re}\,\langle C, h_t\rangle$.

    ``u (..., channels, L)`` real; ``state (..., channels, N)`` complex (default zeros). Returns ``y`` shaped
    like ``u``, and the final state too if ``return_state``.
    """
    _check_diagonal_ssm(A, B, C, dt)
    require_tensor("u", u, floating=True)
    if u.ndim < 2 or u.shape[-2] != A.shape[0]:
        raise ValueError(f"u must be (..., channels={A.shape[0]}, L), got {tuple(u.shape)}")
    A_bar, B_bar = discretize_diagonal(A, B, dt[:, None])
    h = torch.zeros(*u.shape[:-1], A.shape[1], dtype=A_bar.dtype, device=u.device) if state is None else state
    if h.shape != (*u.shape[:-1], A.shape[1]):
        raise ValueError(f"state must be {(*u.shape[:-1], A.shape[1])}, got {tuple(h.shape)}")
    ys = []
    for t in range(u.shape[-1]):
        h = A_bar * h + B_bar * u[..., t, None]
        ys.append(2 * (C * h).sum(-1).real)
    y = torch.stack(ys, dim=-1).to(u.dtype)
    return (y, h) if return_state else y


def lmu_matrices(order: int, theta: float, *, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The Legendre delay system of the LMU :cite:`voelker2019lmu`: ``(A (d, d), B (d, 1))``,

    $A_{ij} = \frac{2i+1}{\theta}\begin{cases} -1 & i < j \\ (-1)^{i-j+1} & i \ge j\end{cases}$,
    $B_i = \frac{2i+1}{\theta}(-1)^i$. Its state $m(t)$ holds the shifted-Legendre coefficients of the
    window $u(t - \theta'),\ 0 \le \theta' \le \theta$ (read back with :func:`legendre_readout`).
    """
    check_positive_int("order", order)
    if not theta > 0:
        raise ValueError(f"theta must be positive, got {theta!r}")
    i = torch.arange(order, dtype=dtype)
    scale = (2 * i + 1)[:, None] / theta
    diff = i[:, None] - i[None, :]
    A = scale * torch.where(diff < 0, -torch.ones_like(diff), (-1.0) ** (diff + 1))
    return A, ((2 * i + 1) * (-1.0) ** i / theta)[:, None]


def legendre_readout(order: int, r: torch.Tensor) -> torch.Tensor:
    r"""Shifted Legendre polynomials $\tilde P_i(r) = P_i(2r - 1)$ at ``r (M,)`` in $[0, 1]$: ``(M, order)``.

    $u(t - r\theta) \approx \sum_i \tilde P_i(r)\, m_i(t)$ reads the LMU/HiPPO memory back. Built by
    the three-term recurrence $(i+1) P_{i+1}(x) = (2i+1) x P_i(x) - i P_{i-1}(x)$.
    """
    check_positive_int("order", order)
    require_tensor("r", r, ndim=1, floating=True)
    x = 2 * r - 1
    P = [torch.ones_like(x), x]
    for i in range(1, order - 1):
        P.append(((2 * i + 1) * x * P[i] - i * P[i - 1]) / (i + 1))
    return torch.stack(P[:order], dim=-1)


def _lmu_discrete(order: int, theta: float, dt: float, dtype):
    A, B = lmu_matrices(order, theta, dtype=dtype)
    return discretize(A, B, dt)


def lmu_recurrent(u: torch.Tensor, *, order: int, theta: float, dt: float, state: torch.Tensor | None = None,
                  return_state: bool = False):
    r"""The LMU memory run step by step, $m_t = \bar A m_{t-1} + \bar B u_t$ (ZOH): ``u (..., L)`` -> ``(..., L, order)``.

    ``state (..., order)`` continues from an earlier call (default zeros); ``return_state`` also returns the last one.
    :cite:`voelker2019lmu`; read the window back with :func:`legendre_readout`.
    """
    require_tensor("u", u, floating=True)
    A_bar, B_bar = _lmu_discrete(order, theta, dt, u.dtype)
    m = u.new_zeros(*u.shape[:-1], order) if state is None else state
    if m.shape != (*u.shape[:-1], order):
        raise ValueError(f"state must be (..., order) = {(*u.shape[:-1], order)} for u {tuple(u.shape)}, "
                         f"got {tuple(m.shape)}")
    out = []
    for t in range(u.shape[-1]):
        m = m @ A_bar.T + u[..., t, None] * B_bar[:, 0]
        out.append(m)
    ms = torch.stack(out, dim=-2) if out else u.new_zeros(*u.shape, order)
    return (ms, m) if return_state else ms


def lmu_conv(u: torch.Tensor, *, order: int, theta: float, dt: float) -> torch.Tensor:
    r"""The same memory as a convolution: $m_t = \sum_{s \le t} \bar A^{t-s} \bar B\, u_s$, all ``order`` components
    at once by :func:`~minilib.ssm.fft_conv` with the kernels $H_\ell = \bar A^{\ell} \bar B$ (LMUFormer's
    parallel training form :cite:`liu2024lmuformer`). ``u (..., L)`` -> ``(..., L, order)``.
    """
    require_tensor("u", u, floating=True)
    L = u.shape[-1]
    A_bar, B_bar = _lmu_discrete(order, theta, dt, u.dtype)
    powers, H = B_bar[:, 0], []
    for _ in range(L):
        H.append(powers)
        powers = A_bar @ powers
    kernels = torch.stack(H, dim=-1)  # (order, L): component i of every lag
    return fft_conv(u[..., None, :].expand(*u.shape[:-1], order, L), kernels).transpose(-1, -2)
