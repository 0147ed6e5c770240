"""minilib.convolution: fft_conv and the direct form against a naive double loop (fp64), no wrap-around, gradcheck."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib import ssm
from minilib.convolution import direct_causal_conv, fft_conv


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 40), Lh=st.integers(1, 40), lead=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_fft_conv_and_direct_conv_equal_a_naive_double_loop(L, Lh, lead, seed):
    """y_t = sum_{s<=t} h_{t-s} u_s with zero padding (no wrap-around), any leading shape, short filters."""
    Lh = min(Lh, L)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(*(2,) * lead, 3, L, dtype=torch.float64, generator=g)
    h = torch.randn(3, Lh, dtype=torch.float64, generator=g)
    want = torch.zeros_like(u)
    for t in range(L):
        for s in range(t + 1):
            if t - s < Lh:
                want[..., t] += h[:, t - s] * u[..., s]
    torch.testing.assert_close(fft_conv(u, h), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(direct_causal_conv(u, h), want, rtol=0, atol=1e-10)


def test_fft_conv_is_not_circular():
    """An impulse at the last position must not wrap around to the front (it would with n = L)."""
    u = torch.zeros(1, 8, dtype=torch.float64)
    u[0, -1] = 1.0
    h = torch.ones(1, 8, dtype=torch.float64)
    y = fft_conv(u, h)
    torch.testing.assert_close(y, u, rtol=0, atol=1e-12)
    circular = torch.fft.irfft(torch.fft.rfft(u) * torch.fft.rfft(h), n=8)
    assert circular[0, 0] > 0.5  # what the missing padding would have given


def test_fft_conv_gradcheck():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(2, 9, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(2, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(fft_conv, (u, h))


def test_fft_conv_bad_shapes():
    with pytest.raises(ValueError, match=r"kernel must be \(C, L_h\) with 1 <= L_h <= L"):
        fft_conv(torch.randn(2, 3, 10), torch.randn(4, 10))
    with pytest.raises(ValueError, match="kernel must be"):
        fft_conv(torch.randn(2, 3, 10), torch.randn(3, 11))
    with pytest.raises(ValueError, match="u must be"):
        direct_causal_conv(torch.randn(10), torch.randn(1, 3))
    with pytest.raises(TypeError, match="u must be a floating-point"):
        fft_conv(torch.ones(3, 10, dtype=torch.long), torch.randn(3, 10))


def test_ssm_reexports_the_core_convolution():
    assert ssm.fft_conv is fft_conv and ssm.direct_causal_conv is direct_causal_conv
