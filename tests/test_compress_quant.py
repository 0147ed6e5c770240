"""minilib.compress: the fake quantizer against a closed form written element by element in plain Python,
and the W8A8 context manager against a manual computation."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from minilib.compress import fake_quantize, fake_quantized, quantization_scale

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


def closed_form(values: list[float], bits: int) -> list[float]:
    """Symmetric per-tensor quantization of a list of floats, with Python's round (half to even)."""
    q_max = 2 ** (bits - 1) - 1
    scale = max(abs(v) for v in values) / q_max
    if scale == 0:
        return list(values)
    return [min(max(round(v / scale), -q_max), q_max) * scale for v in values]


@SETTINGS
@given(n=st.integers(1, 40), bits=st.sampled_from([2, 4, 8]), log_range=st.floats(-3, 3), seed=st.integers(0, 10**6))
def test_fake_quantize_matches_the_closed_form(n, bits, log_range, seed):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=f64) * 10.0 ** log_range
    want = torch.tensor(closed_form(x.tolist(), bits), dtype=f64)
    got = fake_quantize(x, bits=bits)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert got.shape == x.shape and got.dtype == x.dtype


@SETTINGS
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), bits=st.sampled_from([3, 8]), seed=st.integers(0, 10**6))
def test_error_is_at_most_half_a_step_and_quantizing_twice_changes_nothing(shape, bits, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)
    scale = (x.abs().max() / (2 ** (bits - 1) - 1)).item()
    xq = fake_quantize(x, bits=bits)
    assert (xq - x).abs().max().item() <= scale / 2 * (1 + 1e-12)
    torch.testing.assert_close(fake_quantize(xq, bits=bits), xq, rtol=1e-12, atol=0)
    levels = torch.unique(torch.round(xq / scale))
    assert levels.numel() <= 2 ** bits - 1 and levels.abs().max() <= 2 ** (bits - 1) - 1


def test_known_values_scale_and_clipping():
    x = torch.tensor([-1.27, 0.004, 0.006, 0.5, 1.27], dtype=f64)
    assert quantization_scale(x).item() == pytest.approx(0.01)
    torch.testing.assert_close(fake_quantize(x), torch.tensor([-1.27, 0.0, 0.01, 0.5, 1.27], dtype=f64))
    clipped = fake_quantize(x, scale=0.005)  # the grid now ends at 127 * 0.005 = 0.635
    torch.testing.assert_close(clipped, torch.tensor([-0.635, 0.005, 0.005, 0.5, 0.635], dtype=f64))
    zeros = torch.zeros(3)
    assert torch.equal(fake_quantize(zeros), zeros)


def test_gradient_is_straight_through():
    x = torch.randn(7, dtype=f64, requires_grad=True)
    w = torch.randn(7, dtype=f64)
    (fake_quantize(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, w)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="bits"):
        fake_quantize(torch.ones(3), bits=1)
    with pytest.raises(TypeError, match="x"):
        fake_quantize(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="scale"):
        fake_quantize(torch.ones(3), scale=-1.0)
    with pytest.raises(TypeError, match="model"):
        with fake_quantized(torch.ones(3)):
            pass


def test_w8a8_linear_reproduces_a_manual_integer_computation():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=f64) * 3
    weight_before = layer.weight.detach().clone()
    s_w = layer.weight.detach().abs().max() / 127
    s_x = x.abs().max() / 127
    w_int = torch.clamp(torch.round(layer.weight.detach() / s_w), -127, 127)
    x_int = torch.clamp(torch.round(x / s_x), -127, 127)
    want = (x_int @ w_int.T) * (s_x * s_w) + layer.bias.detach()  # integer matmul, one rescale, float bias
    with fake_quantized(layer) as quantized:
        got = quantized(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(layer(x), want), "outside the block the layer is float again"
    assert type(layer) is nn.Linear and torch.equal(layer.weight, weight_before)
    assert isinstance(layer.weight, nn.Parameter) and not layer._forward_pre_hooks


def test_w8a8_quantizes_each_linear_of_a_model_and_only_the_chosen_side():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    x = torch.randn(3, 6, dtype=f64)

    def manual(weight_bits, act_bits):
        h = x
        for layer in (model[0], model[2]):
            w = layer.weight if weight_bits is None else fake_quantize(layer.weight, bits=weight_bits)
            xin = h if act_bits is None else fake_quantize(h, bits=act_bits)
            h = xin @ w.T + layer.bias
            if layer is model[0]:
                h = torch.relu(h)
        return h

    with torch.no_grad():
        for wb, ab in [(8, 8), (None, 4), (4, None)]:
            with fake_quantized(model, weight_bits=wb, act_bits=ab):
                got = model(x)
            torch.testing.assert_close(got, manual(wb, ab), rtol=1e-12, atol=1e-12)


def test_w8a8_restores_the_model_after_an_exception():
    layer = nn.Linear(2, 2)
    params = {name: id(p) for name, p in layer.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with fake_quantized(layer):
            raise RuntimeError("boom")
    assert type(layer) is nn.Linear and {name: id(p) for name, p in layer.named_parameters()} == params and not layer._forward_pre_hooks


def test_bits_must_be_an_int_not_a_bool():
    with pytest.raises(ValueError, match="bits"):
        fake_quantize(torch.ones(3), bits=True)
    with pytest.raises(ValueError, match="bits"):
        quantization_scale(torch.ones(3), bits=8.0)
