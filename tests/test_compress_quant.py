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


# --- integer granularities, floating-point formats, binary/ternary weights (chapter 12) -------------------------

from minilib.compress import (ElasticActQuant, binarize, fold_input_scales, fp_grid, fp_quantize,  # noqa: E402
                              power_of_two_scales, quantize_int, quantized_weights, search_fp_format, ternarize)


def naive_int(row: list[float], bits: int, symmetric: bool) -> list[float]:
    """One row quantized with Python floats and round (half to even), the zero point written out."""
    if symmetric:
        return closed_form(row, bits)
    low, high = min(row), max(row)
    step = (high - low) / (2 ** bits - 1)
    if step == 0:
        return list(row)
    zero = round(-low / step)
    return [(min(max(round(v / step) + zero, 0), 2 ** bits - 1) - zero) * step for v in row]


@SETTINGS
@given(rows=st.integers(1, 5), groups=st.integers(1, 4), group_size=st.integers(1, 6), bits=st.sampled_from([2, 4, 8]),
       symmetric=st.booleans(), seed=st.integers(0, 10**6))
def test_quantize_int_per_tensor_channel_group_matches_a_loop_over_rows(rows, groups, group_size, bits, symmetric, seed):
    x = torch.randn(rows, groups * group_size, generator=torch.Generator().manual_seed(seed), dtype=f64) + 0.3
    data = x.tolist()
    want = {"tensor": [v for v in naive_int(sum(data, []), bits, symmetric)],
            "channel": sum((naive_int(r, bits, symmetric) for r in data), []),
            "group": sum((naive_int(r[g * group_size:(g + 1) * group_size], bits, symmetric)
                          for r in data for g in range(groups)), [])}
    for granularity, expected in want.items():
        got = quantize_int(x, bits=bits, granularity=granularity, group_size=group_size, symmetric=symmetric)
        torch.testing.assert_close(got.flatten(), torch.tensor(expected, dtype=f64), rtol=1e-9, atol=1e-12)
    assert torch.equal(quantize_int(x, bits=bits), fake_quantize(x, bits=bits))


def test_finer_granularity_has_smaller_error_on_rows_of_different_scale():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0), dtype=f64) * torch.logspace(-2, 1, 8, dtype=f64)[:, None]
    err = {g: (quantize_int(x, bits=4, granularity=g, group_size=16) - x).pow(2).mean().item()
           for g in ("tensor", "channel", "group")}
    assert err["group"] < err["channel"] < err["tensor"]


def test_quantize_int_gradient_is_straight_through_and_bad_arguments_named():
    x = torch.randn(3, 8, dtype=f64, requires_grad=True)
    quantize_int(x, bits=3, granularity="group", group_size=4, symmetric=False).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    with pytest.raises(ValueError, match="group_size"):
        quantize_int(torch.randn(2, 6), granularity="group", group_size=4)
    with pytest.raises(ValueError, match="granularity"):
        quantize_int(torch.randn(2, 6), granularity="row")


def test_fp_grids_are_the_published_tables():
    assert fp_grid(2, 1).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]  # OCP E2M1 (FP4)
    assert fp_grid(3, 0).tolist() == [0, 0.25, 0.5, 1, 2, 4, 8, 16]  # E3M0: powers of two, bias 3
    assert fp_grid(1, 2).tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]  # E1M2: uniform, an INT4 grid in disguise
    e4m3 = fp_grid(4, 3)
    assert e4m3[1].item() == 2.0 ** -9 and e4m3[-1].item() == 480.0  # no NaN code: 1.875 * 2^8
    assert torch.equal(fp_grid(2, 1, bias=2.0), fp_grid(2, 1) / 2)


def brute_fp(x: torch.Tensor, grid: torch.Tensor, clip: float) -> torch.Tensor:
    """Each value to the nearest of the signed, scaled grid, found by comparing against every grid value."""
    values = torch.cat([-grid.flip(0), grid]) * clip / grid[-1].item()
    out = []
    for v in x.clamp(-clip, clip).tolist():
        d = [(abs(v - g), abs(g)) for g in values.tolist()]  # ties to the smaller magnitude
        out.append(values[min(range(len(d)), key=lambda i: d[i])].item())
    return torch.tensor(out, dtype=x.dtype)


@SETTINGS
@given(n=st.integers(1, 30), fmt=st.sampled_from([(2, 1), (3, 0), (1, 2), (4, 3)]), clip=st.floats(0.1, 3.0),
       seed=st.integers(0, 10**6))
def test_fp_quantize_rounds_to_the_nearest_grid_value(n, fmt, clip, seed):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=f64)
    grid = fp_grid(*fmt)
    got = fp_quantize(x, exp_bits=fmt[0], man_bits=fmt[1], max_value=clip)
    torch.testing.assert_close(got, brute_fp(x, grid, clip), rtol=1e-12, atol=1e-15)
    default = fp_quantize(x, exp_bits=fmt[0], man_bits=fmt[1])
    torch.testing.assert_close(default, brute_fp(x, grid, x.abs().max().item()), rtol=1e-12, atol=1e-15)


def test_fp_search_finds_the_best_candidate_and_fp4_beats_int4_on_heavy_tails():
    x = torch.distributions.StudentT(3.0).sample((4096,)).double()
    best = search_fp_format(x, bits=4)
    for exp_bits in (1, 2):
        for ratio in torch.linspace(0.3, 1.0, 40).tolist():
            q = fp_quantize(x, exp_bits=exp_bits, man_bits=2 - exp_bits, max_value=ratio * x.abs().max().item())
            assert best["mse"] <= (q - x).pow(2).mean().item() * (1 + 1e-9)
    bias_max = 2.0 ** (2 ** best["exp_bits"] - 1 - best["bias"]) * (2 - 2.0 ** -best["man_bits"])
    assert bias_max == pytest.approx(best["clip_ratio"] * x.abs().max().item(), rel=1e-9)
    int4 = (quantize_int(x, bits=4) - x).pow(2).mean().item()
    assert best["mse"] < int4


def test_power_of_two_scales_fold_into_the_weights_exactly():
    torch.manual_seed(0)
    layer = nn.Linear(6, 3).double()
    x = torch.randn(10, 6, dtype=f64) * torch.tensor([1e-2, 1, 3, 40, 0.2, 5], dtype=f64)
    s = power_of_two_scales(x.abs().amax(dim=0))
    assert torch.equal(torch.log2(s), torch.round(torch.log2(s))) and s.max() == 1
    torch.testing.assert_close(fold_input_scales(layer, s)(x / s), layer(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="scales"):
        fold_input_scales(layer, s[:4])


def test_binary_and_ternary_closed_forms_and_straight_through_gradients():
    w = torch.tensor([[0.9, -0.1, 0.3, -1.4], [0.0, 0.2, -0.2, 0.0]], dtype=f64, requires_grad=True)
    a = [sum(abs(v) for v in row) / 4 for row in w.tolist()]
    want_b = [[a[r] * (1 if v >= 0 else -1) for v in row] for r, row in enumerate(w.tolist())]
    torch.testing.assert_close(binarize(w), torch.tensor(want_b, dtype=f64))
    want_t = [[a[r] * max(-1, min(1, round(v / a[r]))) for v in row] for r, row in enumerate(w.tolist())]
    torch.testing.assert_close(ternarize(w), torch.tensor(want_t, dtype=f64))
    assert set(torch.unique(ternarize(w)[0] / a[0]).tolist()) == {-1.0, 0.0, 1.0}
    g = torch.randn(2, 4, dtype=f64)
    (ternarize(w) * g).sum().backward()
    torch.testing.assert_close(w.grad, g)


def test_elastic_activation_quantizer_learns_its_range():
    torch.manual_seed(0)
    quant = ElasticActQuant(bits=2)
    x = torch.randn(256) * 2 + 1
    y = quant(x)
    assert quant.offset.item() == pytest.approx(x.mean().item()) and len(torch.unique(y.detach())) <= 4
    levels = (y.detach() - quant.offset.detach()) / quant.scale.detach()
    torch.testing.assert_close(levels, torch.round(levels))
    opt = torch.optim.Adam(quant.parameters(), lr=0.05)
    first = None
    for _ in range(100):
        loss = (quant(x) - x).pow(2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_quantized_weights_trains_the_float_weights_and_restores_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    x = torch.randn(8, 4, dtype=f64)
    with quantized_weights(model, ternarize):
        want = (torch.relu(x @ ternarize(before["0.weight"]).T + before["0.bias"]) @ ternarize(before["2.weight"]).T
                + before["2.bias"])
        torch.testing.assert_close(model(x), want)
        model(x).sum().backward()
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="quantizer"):
        with quantized_weights(model, "ternary"):
            pass
