"""minilib.ssm.conv: the matrix-product FFT convolution against naive loops, torch.fft and fft_conv (fp64)."""
import pytest
import torch

from minilib.ssm import direct_causal_conv, fft_conv, monarch_fft_conv


def naive_causal_conv(u, h):
    y = torch.zeros_like(u)
    for t in range(u.shape[1]):
        for s in range(min(t + 1, h.shape[0])):
            y[:, t] += h[s] * u[:, t - s]
    return y


@pytest.mark.parametrize("L,Lh,n1,n2", [(50, 50, 10, 10), (37, 20, 7, 8), (64, 1, 4, 16), (30, 30, 1, 59)])
def test_monarch_fft_conv_equals_naive_and_torch_fft(L, Lh, n1, n2):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, L, 3, dtype=torch.float64, generator=g)
    h = torch.randn(Lh, 3, dtype=torch.float64, generator=g)
    y = monarch_fft_conv(u, h, n1=n1, n2=n2)
    torch.testing.assert_close(y, naive_causal_conv(u, h), rtol=0, atol=1e-10)
    N = 2 * L
    via_fft = torch.fft.irfft(torch.fft.rfft(u, n=N, dim=1) * torch.fft.rfft(h, n=N, dim=0)[None], n=N, dim=1)[:, :L]
    torch.testing.assert_close(y, via_fft, rtol=0, atol=1e-10)


def test_monarch_fft_conv_rejects_short_transform():
    u, h = torch.randn(1, 10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"n1\*n2 = 18 must be at least L \+ L_h - 1 = 19"):
        monarch_fft_conv(u, h, n1=3, n2=6)
    with pytest.raises(ValueError, match="kernel"):
        monarch_fft_conv(u, torch.randn(10, 3), n1=4, n2=5)


def test_monarch_fft_conv_frequency_sparse_equals_masked_torch_fft():
    g = torch.Generator().manual_seed(5)
    L, n1, n2 = 50, 10, 10
    u = torch.randn(2, L, 3, dtype=torch.float64, generator=g)
    h = torch.randn(L, 3, dtype=torch.float64, generator=g)
    mask = torch.rand(n1, n2, generator=g) < 0.5
    mask[[2, 7]] = False  # two whole rows skipped
    keep = torch.zeros(n1 * n2, dtype=torch.bool)
    for k1 in range(n1):
        for k2 in range(n2):
            keep[k1 + n1 * k2] = mask[k1, k2]
    spectrum = torch.fft.fft(u, n=n1 * n2, dim=1) * torch.fft.fft(h, n=n1 * n2, dim=0)[None]
    expected = torch.fft.ifft(spectrum * keep[None, :, None], dim=1).real[:, :L]
    sparse = monarch_fft_conv(u, h, n1=n1, n2=n2, freq_mask=mask)
    torch.testing.assert_close(sparse, expected, rtol=0, atol=1e-10)
    removed = torch.fft.ifft(spectrum * (~keep)[None, :, None], dim=1).real[:, :L]
    torch.testing.assert_close(monarch_fft_conv(u, h, n1=n1, n2=n2) - sparse, removed, rtol=0, atol=1e-10)
    all_kept = monarch_fft_conv(u, h, n1=n1, n2=n2, freq_mask=torch.ones(n1, n2, dtype=torch.bool))
    torch.testing.assert_close(all_kept, naive_causal_conv(u, h), rtol=0, atol=1e-10)


def test_monarch_fft_conv_rejects_bad_mask():
    u, h = torch.randn(1, 10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match="freq_mask"):
        monarch_fft_conv(u, h, n1=4, n2=5, freq_mask=torch.ones(5, 4, dtype=torch.bool))



def test_old_import_path_warns_and_gives_the_same_function():
    import minilib.flash

    with pytest.warns(DeprecationWarning, match="minilib.ssm"):
        old = minilib.flash.monarch_fft_conv
    assert old is monarch_fft_conv


def test_fft_conv_complex_kernel_and_monarch_agree():
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 4, 30, dtype=torch.float64, generator=g)
    h = torch.randn(4, 30, dtype=torch.complex128, generator=g)
    y = fft_conv(u, h)
    assert y.is_complex()
    torch.testing.assert_close(y.real, direct_causal_conv(u, h.real), rtol=0, atol=1e-10)
    torch.testing.assert_close(y.imag, direct_causal_conv(u, h.imag), rtol=0, atol=1e-10)
    real = h.real.contiguous()
    torch.testing.assert_close(monarch_fft_conv(u.transpose(1, 2), real.T, n1=8, n2=8).transpose(1, 2),
                               fft_conv(u, real), rtol=0, atol=1e-10)
