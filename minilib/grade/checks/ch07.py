"""Chapter 07 questions: the PoolFormer mixer, the FNet mixer, the AFF filter as a global convolution, PoNet's
segment max pooling.

The references are loops over positions written from the equations and float64 DFT matrices, never
``minilib.mixers``; the answers may not call the library's own mixers either.
"""
from __future__ import annotations

import math

import torch

from minilib.grade.questions import Case, Question

f32, f64 = torch.float32, torch.float64

MIXERS = ("minilib.mixers.pool_mix", "minilib.mixers.local.pool_mix", "minilib.mixers.fourier_mix",
          "minilib.mixers.fourier.fourier_mix", "minilib.mixers.aff_mix", "minilib.mixers.fourier.aff_mix",
          "minilib.convolution.fft_conv", "minilib.ssm.fft_conv",
          "minilib.mixers.segment_max_pool", "minilib.mixers.local.segment_max_pool",
          "minilib.mixers.ponet_mix", "minilib.mixers.local.ponet_mix")


def _randn(shape, dtype, seed, scale=1.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64) * scale).to(dtype)


# --- 07.q1 PoolFormer ---------------------------------------------------------------------

def _pool_cases() -> list[Case]:
    return [
        Case("(2, 7, 3), pool_size=3, float64", (_randn((2, 7, 3), f64, 1), 3)),
        Case("(1, 8, 2), pool_size=5, float64", (_randn((1, 8, 2), f64, 2), 5),
             hint="at the ends the window is cut: divide by the number of real tokens in it, not by pool_size"),
        Case("(3, 5, 4), pool_size=3, float32", (_randn((3, 5, 4), f32, 3), 3)),
        Case("L=1 (2, 1, 3), pool_size=3, float64", (_randn((2, 1, 3), f64, 4), 3)),
        Case("pool_size=1 (1, 6, 2): nothing to mix, float64", (_randn((1, 6, 2), f64, 5), 1),
             hint="with pool_size=1 the window is the token itself: avgpool(x) - x = 0"),
        Case("(2, 9, 3), pool_size=4 (even: 2 left, 1 right), float32", (_randn((2, 9, 3), f32, 6), 4),
             hint="an even window starts pool_size // 2 positions before t and ends pool_size - 1 - pool_size // 2 after"),
    ]


def _pool_reference(x, pool_size):
    out = torch.empty_like(x)
    L = x.shape[1]
    for t in range(L):
        lo = max(0, t - pool_size // 2)
        hi = min(L, t - pool_size // 2 + pool_size)
        out[:, t] = x[:, lo:hi].mean(dim=1) - x[:, t]
    return out


Q1 = Question(
    id="07.q1",
    name="pool_mixer",
    arg_names=("x", "pool_size"),
    title="PoolFormer's token mixer: average of the window minus the token",
    make_cases=_pool_cases,
    reference=_pool_reference,
    hint="y_t = mean(x_s for s in the window around t, cut at the ends) - x_t; the window starts at "
    "t - pool_size // 2; divide by the number of positions inside the sequence",
    forbidden=MIXERS,
)


# --- 07.q2 FNet ---------------------------------------------------------------------------

def _fnet_cases() -> list[Case]:
    return [
        Case("(2, 8, 4), float64", (_randn((2, 8, 4), f64, 10),)),
        Case("(1, 5, 6): L != C, float64", (_randn((1, 5, 6), f64, 11),),
             hint="transform along the sequence (dim 1) AND the hidden dim (dim 2), never along the batch"),
        Case("(3, 7, 3), float32", (_randn((3, 7, 3), f32, 12),)),
        Case("(1, 1, 5): one token, float64", (_randn((1, 1, 5), f64, 13),)),
        Case("(4, 6, 2), batch > 1, float64", (_randn((4, 6, 2), f64, 14),),
             hint="each example is transformed on its own: the batch dim is not mixed"),
    ]


def _dft(n):
    j = torch.arange(n, dtype=f64)
    return torch.polar(torch.ones(n, n, dtype=f64), -2 * math.pi * torch.outer(j, j) / n)


def _fnet_reference(x):
    z = torch.complex(x, torch.zeros_like(x))
    return (_dft(x.shape[1]) @ z @ _dft(x.shape[2]).T).real


Q2 = Question(
    id="07.q2",
    name="fnet_mixer",
    arg_names=("x",),
    title="FNet's token mixer: real part of the 2-D DFT over sequence and hidden dims",
    make_cases=_fnet_cases,
    reference=_fnet_reference,
    hint="y = Re(FFT over dim 1 of (FFT over dim 2 of x)): torch.fft.fft2(x, dim=(1, 2)).real, a real tensor",
    forbidden=MIXERS,
)


# --- 07.q3 AFF as a global convolution ----------------------------------------------------

def _conv_cases() -> list[Case]:
    def case(label, B, L, C, dtype, seed, hint=""):
        return Case(label, (_randn((B, L, C), dtype, seed), _randn((L, C), dtype, seed + 50)), hint=hint)

    return [
        case("(2, 8, 3), float64", 2, 8, 3, f64, 20),
        case("odd L (1, 7, 2), float64", 1, 7, 2, f64, 21,
             hint="pass n=L to the inverse real FFT: from L // 2 + 1 frequencies it cannot tell L = 7 from L = 6"),
        case("(3, 5, 4), float32", 3, 5, 4, f32, 22),
        case("L=1 (2, 1, 3), float64", 2, 1, 3, f64, 23),
        case("(1, 12, 2), float64", 1, 12, 2, f64, 24,
             hint="the convolution is circular: y_t = sum_s h[(t - s) mod L] x_s, the kernel wraps around"),
    ]


def _conv_reference(x, h):
    out = torch.zeros_like(x)
    L = x.shape[1]
    for t in range(L):
        for s in range(L):
            out[:, t] += h[(t - s) % L] * x[:, s]
    return out


Q3 = Question(
    id="07.q3",
    name="global_conv",
    arg_names=("x", "h"),
    title="an AFF filter is a global circular convolution: compute it in the frequency domain",
    make_cases=_conv_cases,
    reference=_conv_reference,
    hint="multiply the spectra along the sequence: irfft(rfft(x, dim=1) * rfft(h, dim=0), n=L, dim=1)",
    forbidden=MIXERS,
)


# --- 07.q4 PoNet segment max pooling ------------------------------------------------------

def _segment_cases() -> list[Case]:
    return [
        Case("(2, 8, 3), segment=4, float64", (_randn((2, 8, 3), f64, 30), 4)),
        Case("(1, 10, 2), segment=4: the last segment holds 2 tokens, float64", (_randn((1, 10, 2), f64, 31), 4),
             hint="when segment does not divide L the last segment is shorter; its tokens still get its max"),
        Case("all negative (1, 7, 2), segment=3, float32", (_randn((1, 7, 2), f32, 32).abs().neg() - 1.0, 3),
             hint="pad a short last segment with -inf, not 0: a zero would beat every negative value"),
        Case("segment=1 (2, 5, 3): every token its own segment, float64", (_randn((2, 5, 3), f64, 33), 1)),
        Case("segment > L (1, 4, 2), float64", (_randn((1, 4, 2), f64, 34), 6)),
        Case("(3, 9, 4), segment=3, float32", (_randn((3, 9, 4), f32, 35), 3),
             hint="segments are consecutive, non-overlapping blocks [kK, (k+1)K), not a sliding window around t"),
    ]


def _segment_reference(x, segment):
    out = torch.empty_like(x)
    for t in range(x.shape[1]):
        start = t // segment * segment
        out[:, t] = x[:, start:start + segment].amax(dim=1)
    return out


Q4 = Question(
    id="07.q4",
    name="segment_max",
    arg_names=("x", "segment"),
    title="PoNet's segment pooling: the max of each token's segment, broadcast back to its tokens",
    make_cases=_segment_cases,
    reference=_segment_reference,
    hint="y_t = max of x over the segment [floor(t / segment) * segment, ... + segment) cut at L; the output has "
    "x's shape (B, L, C)",
    forbidden=MIXERS,
)

QUESTIONS = [Q1, Q2, Q3, Q4]
