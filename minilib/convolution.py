r"""Causal long convolutions along the sequence, by FFT (:func:`fft_conv`) and directly (:func:`direct_causal_conv`).

$$ y_t = \sum_{s=0}^{t} h_{t-s}\, u_s $$

The FFT computes a *circular* convolution in $O(L \log L)$; zero-padding both signals to at least
$L + L_h - 1$ points makes it equal the linear, causal one. Shared by the state-space models of chapter 06
(:mod:`minilib.ssm`, whose LTI kernels and Hyena filters it applies) and the token mixers of chapter 07
(:mod:`minilib.mixers`, AFF's causal global filter), so it lives in the core. See :cite:`fu2023h3`.
"""
from __future__ import annotations

import torch

from minilib._checks import require_tensor

__all__ = ["fft_conv", "direct_causal_conv"]


def _check_conv(u, kernel, *, u_layout: str, kernel_layout: str, length_dim: int, channel_dim: int) -> tuple[int, int]:
    """Shared argument check of the causal convolutions: returns ``(L, L_h)`` with ``L_h <= L``."""
    require_tensor("u", u, floating=True)
    require_tensor("kernel", kernel, ndim=2)
    if not (kernel.is_floating_point() or kernel.is_complex()):
        raise TypeError(f"kernel must be a floating-point or complex tensor, got dtype {kernel.dtype}")
    if u.ndim < 2:
        raise ValueError(f"u must be {u_layout}, got shape {tuple(u.shape)}")
    L, Lh = u.shape[length_dim], kernel.shape[1 - channel_dim]
    if kernel.shape[channel_dim] != u.shape[-1 if length_dim == -2 else -2] or Lh > L or Lh == 0:
        raise ValueError(f"kernel must be {kernel_layout} with 1 <= L_h <= L, got u {tuple(u.shape)} and "
                         f"kernel {tuple(kernel.shape)}")
    return L, Lh


def _linear_conv_length(L: int, Lh: int) -> int:
    """Fewest transform points for which a circular convolution equals the linear one on ``[0, L)``."""
    return L + Lh - 1


def fft_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    r"""Causal convolution along the last dim by FFT: $y_t = \sum_{s=0}^{t} h_{t-s}\, u_s$.

    $$ y = \mathcal{F}_n^{-1}\!\big(\mathcal{F}_n \tilde u \odot \mathcal{F}_n \tilde h\big)_{[0, L)},
       \qquad n \ge L + L_h - 1, $$

    with $\tilde u, \tilde h$ zero-padded to $n$ points (a power of two), so no output wraps around.
    ``u (..., C, L)``, ``kernel (C, L_h)`` with ``L_h <= L`` (real or complex) -> ``(..., C, L)``,
    real when both inputs are real. $O(L \log L)$ per channel.
    """
    L, Lh = _check_conv(u, kernel, u_layout="(..., C, L)", kernel_layout="(C, L_h)", length_dim=-1, channel_dim=0)
    n = 1 << (_linear_conv_length(L, Lh) - 1).bit_length()
    if u.is_complex() or kernel.is_complex():
        return torch.fft.ifft(torch.fft.fft(u, n=n) * torch.fft.fft(kernel, n=n), n=n)[..., :L]
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(kernel.to(u.dtype), n=n), n=n)[..., :L]


def direct_causal_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    r"""The same causal convolution as :func:`fft_conv`, one lag at a time: $O(L\, L_h)$ work.

    $y_{t} = \sum_{s=0}^{\min(t, L_h - 1)} h_s\, u_{t-s}$; ``u (..., C, L)``, ``kernel (C, L_h)`` -> ``(..., C, L)``.
    The reference :func:`fft_conv` is timed against.
    """
    L, Lh = _check_conv(u, kernel, u_layout="(..., C, L)", kernel_layout="(C, L_h)", length_dim=-1, channel_dim=0)
    y = torch.zeros(torch.broadcast_shapes(u.shape, kernel[:, :1].shape), dtype=torch.promote_types(u.dtype, kernel.dtype),
                    device=u.device)
    for s in range(Lh):
        y[..., s:] += kernel[:, s:s + 1] * u[..., :L - s]
    return y
