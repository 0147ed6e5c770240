"""Swish, SwooshR, SwooshL against their equations in fp64; Swoosh's slope never vanishes."""
import pytest
import torch
import torch.nn.functional as F

from minilib.activations import swish, swoosh_l, swoosh_r


def test_swoosh_and_swish_match_their_equations():
    x = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(swoosh_r(x), torch.log1p(torch.exp(x - 1)) - 0.08 * x - 0.313261687, rtol=0, atol=1e-12)
    torch.testing.assert_close(swoosh_l(x), torch.log1p(torch.exp(x - 4)) - 0.08 * x - 0.035, rtol=0, atol=1e-12)
    torch.testing.assert_close(swish(x), F.silu(x), rtol=0, atol=1e-12)
    assert abs(swoosh_r(torch.zeros((), dtype=torch.float64)).item()) < 1e-9

def test_swoosh_slopes_never_vanish():
    x = torch.tensor([-40.0, 0.0, 40.0], dtype=torch.float64, requires_grad=True)
    (grad_r,) = torch.autograd.grad(swoosh_r(x).sum(), x)
    (grad_swish,) = torch.autograd.grad(swish(x).sum(), x)
    torch.testing.assert_close(grad_r[[0, 2]], torch.tensor([-0.08, 0.92], dtype=torch.float64), rtol=0, atol=1e-9)
    assert abs(grad_swish[0].item()) < 1e-12  # Swish's gradient dies on the left; Swoosh's does not

def test_activations_reject_integer_input():
    with pytest.raises(TypeError, match="floating"):
        swoosh_r(torch.arange(3))


def test_polyrelu_and_polynorm_match_their_sums_in_fp64():
    from minilib.activations import polynorm, polyrelu

    torch.manual_seed(0)
    x = torch.randn(3, 7, dtype=torch.float64)
    a = torch.tensor([0.5, 1.0, -0.25, 0.125], dtype=torch.float64)
    r = x.clamp(min=0)
    torch.testing.assert_close(polyrelu(x, a), 0.5 + r - 0.25 * r * r + 0.125 * r * r * r)
    want = torch.full_like(x, 0.5)
    for i in (1, 2, 3):
        u = x ** i
        want = want + a[i] * u / (u.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(polynorm(x, a), want)


def test_polynomial_activations_name_bad_coefficients():
    from minilib.activations import polynorm, polyrelu

    for fn in (polyrelu, polynorm):
        with pytest.raises(ValueError, match="coeffs"):
            fn(torch.zeros(3), torch.zeros(1))
        with pytest.raises(TypeError, match="x"):
            fn([0.0], torch.zeros(3))
