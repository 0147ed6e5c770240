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
