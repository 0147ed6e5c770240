"""LayerNorm and RMSNorm against torch.nn's layers with equal weights, in fp64."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.norms import LayerNorm, RMSNorm


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 33), rows=st.integers(1, 5), seed=st.integers(0, 999), bias=st.booleans())
def test_layernorm_matches_torch(d, rows, seed, bias):
    g = torch.Generator().manual_seed(seed)
    ours, ref = LayerNorm(d, bias=bias).double(), torch.nn.LayerNorm(d, bias=bias).double()
    with torch.no_grad():
        w = torch.randn(d, generator=g, dtype=torch.float64)
        ours.weight.copy_(w), ref.weight.copy_(w)
        if bias:
            b = torch.randn(d, generator=g, dtype=torch.float64)
            ours.bias.copy_(b), ref.bias.copy_(b)
    x = 3 + 5 * torch.randn(rows, 4, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 33), seed=st.integers(0, 999))
def test_rmsnorm_matches_torch(d, seed):
    g = torch.Generator().manual_seed(seed)
    ours, ref = RMSNorm(d, eps=1e-6).double(), torch.nn.RMSNorm(d, eps=1e-6).double()
    with torch.no_grad():
        w = torch.randn(d, generator=g, dtype=torch.float64)
        ours.weight.copy_(w), ref.weight.copy_(w)
    x = 2 + torch.randn(3, 5, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)


def test_rmsnorm_and_layernorm_agree_on_zero_mean_input():
    x = torch.randn(4, 8, dtype=torch.float64)
    x = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(RMSNorm(8, eps=1e-5).double()(x), LayerNorm(8, bias=False).double()(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", [LayerNorm(4), RMSNorm(4)])
def test_wrong_width_raises(layer):
    with pytest.raises(ValueError, match=r"normalised size 4, got shape \(2, 5\)"):
        layer(torch.randn(2, 5))
