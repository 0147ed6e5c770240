"""FNet, AFF, the causal FFT convolution and the DCT against explicit DFT/DCT matrices and convolution loops."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.mixers import AFFMixer, DCTLowpassMixer, FourierMixer, aff_mix, dct, dct_downsample, dct_matrix, fourier_mix, idct

f64 = torch.float64


def dft(n):
    j = torch.arange(n, dtype=f64)
    return torch.exp(-2j * math.pi * torch.outer(j, j) / n)


def dct_cosines(n):
    """The orthonormal DCT-II written entry by entry, independent of dct_matrix's vectorised form."""
    out = torch.empty(n, n, dtype=f64)
    for k in range(n):
        for j in range(n):
            out[k, j] = math.sqrt((1 if k == 0 else 2) / n) * math.cos(math.pi * (2 * j + 1) * k / (2 * n))
    return out


def circular_conv(x, h):
    out = torch.zeros_like(x)
    L = x.shape[1]
    for t in range(L):
        for s in range(L):
            out[:, t] += h[(t - s) % L] * x[:, s]
    return out


@settings(deadline=None, max_examples=20)
@given(L=st.integers(1, 12), C=st.integers(1, 6))
def test_fourier_mix_is_the_real_part_of_both_dft_matrices(L, C):
    x = torch.randn(2, L, C, dtype=f64)
    want = (dft(L) @ x.to(torch.complex128) @ dft(C).T).real
    torch.testing.assert_close(fourier_mix(x), want)


@settings(deadline=None, max_examples=20)
@given(L=st.integers(1, 12))
def test_aff_mix_is_a_circular_convolution_with_the_filters_kernel(L):
    x = torch.randn(2, L, 3, dtype=f64)
    h = torch.randn(L, 3, dtype=f64)
    filt = torch.fft.rfft(h, dim=0)[None]
    torch.testing.assert_close(aff_mix(x, filt), circular_conv(x, h))


@settings(deadline=None, max_examples=20)
@given(L=st.integers(1, 12), max_len=st.integers(12, 15))
def test_causal_aff_mixer_is_the_causal_convolution_with_its_kernel(L, max_len):
    torch.manual_seed(L)
    mixer = AFFMixer(3, max_len=max_len, causal=True).double()
    h = mixer.kernel.detach()
    x = torch.randn(2, L, 3, dtype=f64)
    want = torch.zeros_like(x)
    for t in range(L):
        for s in range(t + 1):
            want[:, t] += h[t - s] * x[:, s]
    torch.testing.assert_close(mixer(x), want)


@settings(deadline=None, max_examples=20)
@given(n=st.integers(1, 17))
def test_dct_by_fft_equals_the_cosine_matrix_and_inverts(n):
    torch.testing.assert_close(dct_matrix(n), dct_cosines(n), rtol=0, atol=1e-13)
    x = torch.randn(2, n, 3, dtype=f64)
    X = dct(x, dim=1)
    torch.testing.assert_close(X, torch.einsum("kj,bjc->bkc", dct_cosines(n), x), rtol=0, atol=1e-12)
    torch.testing.assert_close(idct(X, dim=1), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(dct(x.transpose(1, 2), dim=2), X.transpose(1, 2))


def test_dct_in_float32_is_within_1e_5_of_the_matrix():
    x = torch.randn(3, 64, 8)
    torch.testing.assert_close(dct(x).double(), torch.einsum("kj,bjc->bkc", dct_cosines(64), x.double()),
                               rtol=0, atol=1e-5)


def test_dct_downsample_keeps_a_smooth_sequence_and_its_mean():
    L, keep = 16, 8
    t = (torch.arange(L, dtype=f64) + 0.5) / L
    x = torch.stack([torch.cos(math.pi * t), torch.full((L,), 2.0, dtype=f64)], dim=-1)[None]
    y = dct_downsample(x, keep)
    assert y.shape == (1, keep, 2)
    torch.testing.assert_close(y[..., 1], torch.full((1, keep), 2.0, dtype=f64))  # a constant survives exactly
    tk = (torch.arange(keep, dtype=f64) + 0.5) / keep  # a lowest-frequency cosine is resampled on the coarse grid
    torch.testing.assert_close(y[0, :, 0], torch.cos(math.pi * tk))
    torch.testing.assert_close(dct_downsample(x, L), x)


def test_dct_lowpass_mixer_is_a_projection():
    x = torch.randn(2, 10, 3, dtype=f64)
    mixer = DCTLowpassMixer(keep_frac=0.3)
    y = mixer(x)
    torch.testing.assert_close(mixer(y), y)
    D = dct_cosines(10)
    torch.testing.assert_close(y, torch.einsum("kt,kj,bjc->btc", D[:3], D[:3], x))


def test_aff_mixer_starts_as_the_identity_and_applies_its_own_filter():
    torch.manual_seed(0)
    mixer = AFFMixer(4, causal=False).double()
    x = torch.randn(2, 9, 4, dtype=f64)
    torch.testing.assert_close(mixer(x), x)  # zero-initialised filter deviation: 1 + 0
    torch.nn.init.normal_(mixer.filter_out.weight)
    filt = mixer.frequency_filter(x)
    assert filt.shape == (2, 5, 4) and filt.is_complex()
    h = torch.fft.irfft(filt, n=9, dim=1)
    for b in range(2):
        torch.testing.assert_close(mixer(x)[b:b + 1], circular_conv(x[b:b + 1], h[b]))


def test_causal_aff_never_looks_ahead_and_gradchecks():
    torch.manual_seed(0)
    mixer = AFFMixer(3, max_len=16, causal=True).double()
    x = torch.randn(1, 8, 3, dtype=f64)
    x2 = x.clone()
    x2[:, 5] += 1
    torch.testing.assert_close(mixer(x)[:, :5], mixer(x2)[:, :5], rtol=0, atol=1e-14)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(mixer, (x,))
    assert torch.autograd.gradcheck(fourier_mix, (x,))


def test_bad_input_fails_clearly():
    x = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="causal=True is impossible"):
        FourierMixer(causal=True)
    with pytest.raises(ValueError, match="causal=True is impossible"):
        DCTLowpassMixer(causal=True)
    with pytest.raises(ValueError, match="filt must be a complex"):
        aff_mix(x, torch.fft.rfft(torch.randn(5, 3), dim=0)[None])
    with pytest.raises(ValueError, match="filt must be a complex"):
        aff_mix(x, torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="keep"):
        dct_downsample(x, 7)
    with pytest.raises(ValueError, match="max_len"):
        AFFMixer(3, max_len=4, causal=True)(x)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        fourier_mix(torch.ones(2, 3, 4, dtype=torch.long))
