"""Plausible wrong answers to the chapter 07 questions, each with the text its failure must show."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_forgets_to_subtract_x(x, pool_size):
    """Returns the average itself: the block then adds a blurred copy of x instead of the difference."""
    return F.avg_pool1d(x.transpose(1, 2), pool_size, stride=1, padding=pool_size // 2,
                        count_include_pad=False).transpose(1, 2)[:, : x.shape[1]]


def pool_counts_padding(x, pool_size):
    """Divides by pool_size at the ends too (zero padding counted)."""
    left = pool_size // 2
    padded = F.pad(x.transpose(1, 2), (left, pool_size - 1 - left))
    return (padded.unfold(2, pool_size, 1).mean(-1).transpose(1, 2)) - x


def pool_causal_window(x, pool_size):
    """Averages the pool_size tokens ending at t (the causal window) instead of the centred one."""
    out = torch.empty_like(x)
    for t in range(x.shape[1]):
        out[:, t] = x[:, max(0, t - pool_size + 1): t + 1].mean(1) - x[:, t]
    return out


def pool_uses_the_library(x, pool_size):
    from minilib.mixers import pool_mix

    return pool_mix(x, pool_size)


def fnet_sequence_only(x):
    """FFT along the sequence only: the hidden dimension is not transformed."""
    return torch.fft.fft(x, dim=1).real


def fnet_wrong_dims(x):
    """FFT over the batch and sequence dims (fft2's default is the last two; this picks the first two)."""
    return torch.fft.fft2(x, dim=(0, 1)).real


def fnet_keeps_imaginary(x):
    """Returns the imaginary part instead of the real part."""
    return torch.fft.fft2(x, dim=(1, 2)).imag


def fnet_magnitude(x):
    """Returns the magnitude |FFT| instead of the real part."""
    return torch.fft.fft2(x, dim=(1, 2)).abs()


def conv_without_n(x, h):
    """irfft without n: for odd L it returns L - 1 positions."""
    return torch.fft.irfft(torch.fft.rfft(x, dim=1) * torch.fft.rfft(h, dim=0), dim=1)


def conv_correlation(x, h):
    """Multiplies by the conjugate spectrum: a circular cross-correlation (the kernel flipped)."""
    return torch.fft.irfft(torch.fft.rfft(x, dim=1) * torch.fft.rfft(h, dim=0).conj(), n=x.shape[1], dim=1)


def conv_linear_truncated(x, h):
    """Zero-pads to 2L: the causal linear convolution, without the wrap-around."""
    L = x.shape[1]
    return torch.fft.irfft(torch.fft.rfft(x, n=2 * L, dim=1) * torch.fft.rfft(h, n=2 * L, dim=0), n=2 * L, dim=1)[:, :L]


def segment_zero_padding(x, segment):
    """Pads a short last segment with zeros: wrong when its values are all negative."""
    B, L, C = x.shape
    n = -(-L // segment)
    padded = F.pad(x, (0, 0, 0, n * segment - L)).reshape(B, n, segment, C)
    return padded.amax(2, keepdim=True).expand(-1, -1, segment, -1).reshape(B, n * segment, C)[:, :L]


def segment_not_broadcast(x, segment):
    """Returns one max per segment, (B, ceil(L / segment), C), instead of one per token."""
    return F.max_pool1d(x.transpose(1, 2), segment, stride=segment, ceil_mode=True).transpose(1, 2)


def segment_sliding(x, segment):
    """A sliding window of segment tokens around t, PoNet's local pooling, not its segment pooling."""
    left = segment // 2
    padded = F.pad(x.transpose(1, 2), (left, segment - 1 - left), value=float("-inf"))
    return padded.unfold(2, segment, 1).amax(-1).transpose(1, 2)


WRONG = [
    ("07.q1", pool_forgets_to_subtract_x, "max abs error"),
    ("07.q1", pool_counts_padding, "case 1/6"),
    ("07.q1", pool_causal_window, "max abs error"),
    ("07.q1", pool_uses_the_library, "forbidden"),
    ("07.q2", fnet_sequence_only, "max abs error"),
    ("07.q2", fnet_wrong_dims, "max abs error"),
    ("07.q2", fnet_keeps_imaginary, "max abs error"),
    ("07.q2", fnet_magnitude, "max abs error"),
    ("07.q3", conv_without_n, "wrong shape"),
    ("07.q3", conv_correlation, "max abs error"),
    ("07.q3", conv_linear_truncated, "max abs error"),
    ("07.q4", segment_zero_padding, "case 3/6"),
    ("07.q4", segment_not_broadcast, "wrong shape"),
    ("07.q4", segment_sliding, "max abs error"),
]
