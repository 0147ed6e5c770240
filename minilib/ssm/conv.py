r"""Causal long convolution with the DFT written as dense matrix products (:func:`monarch_fft_conv`, FlashFFTConv
:cite:`fu2024flashfftconv`); :func:`~minilib.convolution.fft_conv` and the direct form it is checked against live in
the core module :mod:`minilib.convolution` and are re-exported from :mod:`minilib.ssm`.

A linear time-invariant SSM is a convolution with its kernel, $y = h * u$; the FFT computes it in
$O(L \log L)$ instead of $O(L^2)$ as long as both signals are zero-padded to at least $L + L_h - 1$
points, so that the circular convolution the DFT computes has no wrap-around.
"""
from __future__ import annotations

import math

import torch

from minilib._checks import check_positive_int, require_tensor
from minilib.convolution import _check_conv, _linear_conv_length

__all__ = ["monarch_fft_conv"]


def _dft_matrix(n: int, dtype) -> torch.Tensor:
    r"""The ``(n, n)`` DFT matrix $F_{jk} = e^{-2\pi i jk/n}$, built in float64 and cast to ``dtype``."""
    j = torch.arange(n, dtype=torch.float64)
    return torch.polar(torch.ones(n, n, dtype=torch.float64), -2 * math.pi * torch.outer(j, j) / n).to(dtype)


def _monarch_dft(x, F1, F2, tw):
    """Length N1*N2 DFT of the last axis as two matmuls: the result sits at [k1, k2] for frequency k1 + N1*k2.

    ``F1`` may hold only some rows k1 (frequency-sparse); the output then holds those rows.
    """
    X = x.reshape(*x.shape[:-1], F1.shape[1], F2.shape[0])  # X[n1, n2] = x[N2*n1 + n2]
    return ((F1 @ X) * tw) @ F2


def _monarch_idft(Y, F1i, F2i, twi, N):
    """Inverse of :func:`_monarch_dft`: [k1, k2] layout in (rows as kept by ``F1i``'s columns), signal of length N out."""
    return (F1i @ ((Y @ F2i) * twi)).reshape(*Y.shape[:-2], N) / N


def monarch_fft_conv(u, kernel, *, n1, n2, freq_mask=None):
    r"""Causal long convolution by FFT, the DFT done as dense matrix products (Monarch form).

    $$ y_t = \sum_{s=0}^{t} h_s\, u_{t-s},\qquad y = \mathcal{F}_N^{-1}\big(\mathcal{F}_N \tilde u
       \odot \mathcal{F}_N \tilde h\big)_{[0, L)} $$

    with $\tilde u, \tilde h$ zero-padded to $N = n_1 n_2 \ge L + L_h - 1$ (no wrap-around).  The
    length-$N$ DFT is Cooley-Tukey in two matmul stages: reshape $x$ to the $(n_1, n_2)$ matrix
    $X_{ab} = x_{n_2 a + b}$, then

    $$ Y = \big((F_{n_1} X) \odot \Omega\big) F_{n_2},\qquad \Omega_{k_1 b} = \omega_N^{k_1 b},\qquad
       \hat x_{k_1 + n_1 k_2} = Y_{k_1 k_2}, $$

    and the inverse runs the same stages backwards with conjugate matrices, so no permutation
    is ever applied.  ``u (B, L, C)``, ``kernel (L_h, C)`` with ``L_h <= L`` -> ``(B, L, C)``;
    a short filter (a *partial* convolution) allows a smaller ``N``.

    ``freq_mask`` (bool ``(n1, n2)``, entry ``[k1, k2]`` for frequency ``k1 + n1 k2``) makes the
    convolution *frequency-sparse*: the product spectrum is zeroed where it is False, and rows
    ``k1`` that are False throughout are never computed (the rows of $F_{n_1}$ in the forward and
    the columns of $\bar F_{n_1}$ in the inverse are skipped); the real part is returned.
    See :cite:`fu2024flashfftconv`.
    """
    require_tensor("u", u, ndim=3, floating=True)
    require_tensor("kernel", kernel, floating=True)
    check_positive_int("n1", n1)
    check_positive_int("n2", n2)
    L, Lh = _check_conv(u, kernel, u_layout="(B, L, C)", kernel_layout="(L_h, C)", length_dim=-2, channel_dim=1)
    B, _, C = u.shape
    N = n1 * n2
    if N < _linear_conv_length(L, Lh):
        raise ValueError(f"n1*n2 = {N} must be at least L + L_h - 1 = {_linear_conv_length(L, Lh)} to avoid wrap-around")
    if freq_mask is not None:
        require_tensor("freq_mask", freq_mask, ndim=2)
        if freq_mask.dtype != torch.bool or tuple(freq_mask.shape) != (n1, n2):
            raise ValueError(f"freq_mask must be a bool tensor of shape ({n1}, {n2}), got {freq_mask.dtype} "
                             f"{tuple(freq_mask.shape)}")
    cdtype = torch.complex128 if torch.promote_types(u.dtype, kernel.dtype) == torch.float64 else torch.complex64
    F1, F2 = _dft_matrix(n1, cdtype).to(u.device), _dft_matrix(n2, cdtype).to(u.device)
    idx = torch.arange(n1, dtype=torch.float64)[:, None] * torch.arange(n2, dtype=torch.float64)[None, :]
    tw = torch.polar(torch.ones_like(idx), -2 * math.pi * idx / N).to(cdtype).to(u.device)
    u_pad = torch.zeros(B, C, N, dtype=cdtype, device=u.device)
    u_pad[..., :L] = u.transpose(1, 2)
    h_pad = torch.zeros(C, N, dtype=cdtype, device=u.device)
    h_pad[:, :Lh] = kernel.T
    F1i, twi = F1.conj(), tw.conj()
    if freq_mask is not None:
        rows = freq_mask.any(dim=1).nonzero().flatten().to(u.device)  # frequency rows k1 that survive
        F1, tw, F1i, twi = F1[rows], tw[rows], F1i[:, rows], twi[rows]
    spectrum = _monarch_dft(u_pad, F1, F2, tw) * _monarch_dft(h_pad, F1, F2, tw)
    if freq_mask is not None:
        spectrum = spectrum * freq_mask[rows].to(u.device)
    y = _monarch_idft(spectrum, F1i, F2.conj(), twi, N)
    return y[..., :L].real.transpose(1, 2).to(u.dtype)

