"""FeedForward: every kind against its equation in fp64, the default widths (2/3 rule), bad sizes named."""
import pytest
import torch
import torch.nn.functional as F

from minilib.feedforward import FeedForward, default_d_ff


def test_swiglu_and_gelu_match_their_equations():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    swiglu, gelu = FeedForward(8, 12).double(), FeedForward(8, 12, kind="gelu").double()
    want = (F.silu(x @ swiglu.w1.weight.T) * (x @ swiglu.w3.weight.T)) @ swiglu.w2.weight.T
    torch.testing.assert_close(swiglu(x), want)
    erf_gelu = lambda z: 0.5 * z * (1 + torch.erf(z / 2 ** 0.5))
    torch.testing.assert_close(gelu(x), erf_gelu(x @ gelu.w1.weight.T) @ gelu.w2.weight.T)


@pytest.mark.parametrize("kind, act, gated", [("relu", torch.relu, False), ("geglu", None, True),
                                              ("reglu", torch.relu, True)])
def test_relu_and_glu_variants_match_their_equations(kind, act, gated):
    torch.manual_seed(1)
    act = act or (lambda z: 0.5 * z * (1 + torch.erf(z / 2 ** 0.5)))
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    ffn = FeedForward(8, 12, kind=kind).double()
    h = act(x @ ffn.w1.weight.T)
    if gated:
        h = h * (x @ ffn.w3.weight.T)
    torch.testing.assert_close(ffn.hidden(x), h)
    torch.testing.assert_close(ffn(x), h @ ffn.w2.weight.T)


def test_every_kind_at_its_default_width_holds_8_d_squared_weights_within_5_percent():
    for d in (32, 48, 96):
        for kind in ("gelu", "relu", "swiglu", "geglu", "reglu"):
            n = sum(p.numel() for p in FeedForward(d, kind=kind).parameters())
            assert abs(n - 8 * d * d) / (8 * d * d) < 0.05, (d, kind, n)


def test_default_widths_hold_about_the_same_weights():
    for d in (8, 16, 48, 100):
        assert default_d_ff(d, "gelu") == 4 * d
        swiglu = default_d_ff(d, "swiglu")
        assert swiglu % 8 == 0 and 8 * d / 3 <= swiglu < 8 * d / 3 + 8
        n = [sum(p.numel() for p in FeedForward(d, kind=kind).parameters()) for kind in ("gelu", "swiglu")]
        assert abs(n[1] - n[0]) / n[0] < 0.25 and n[0] == 8 * d * d


@pytest.mark.parametrize("make, error, name", [
    (lambda: FeedForward(0, 8), ValueError, "d_model"), (lambda: FeedForward(8, 0), ValueError, "d_ff"),
    (lambda: FeedForward(8, 2.5), ValueError, "d_ff"), (lambda: FeedForward(8, kind="relu2"), ValueError, "kind"),
    (lambda: default_d_ff(True, "gelu"), ValueError, "d_model")])
def test_bad_arguments_are_named(make, error, name):
    with pytest.raises(error, match=name):
        make()


def test_gelu_and_swiglu_are_registered_ffns_built_from_a_config():
    from types import SimpleNamespace

    from minilib.feedforward import ffn_factory, registered_ffns

    assert registered_ffns()[:2] == ["gelu", "swiglu"]
    config = SimpleNamespace(d_model=8, d_ff=12, ffn_kwargs={})
    for kind in ("gelu", "swiglu"):
        ffn = ffn_factory(kind)(config, 0)
        assert isinstance(ffn, FeedForward) and ffn.kind == kind and ffn.w1.out_features == 12
    with pytest.raises(ValueError, match="ffn must be a registered name"):
        ffn_factory("relu2")
    with pytest.raises(TypeError, match="bias"):
        ffn_factory("gelu")(SimpleNamespace(d_model=8, d_ff=None, ffn_kwargs={"bias": True}), 0)


@pytest.mark.parametrize("kind", ["polyrelu", "polynorm"])
def test_polynomial_ffn_applies_its_activation_and_is_registered(kind):
    from types import SimpleNamespace

    from minilib.activations import polynorm, polyrelu
    from minilib.feedforward import PolynomialFeedForward, ffn_factory

    torch.manual_seed(2)
    ffn = PolynomialFeedForward(8, 16, kind=kind, order=3).double()
    x = torch.randn(4, 8, dtype=torch.float64)
    act = polyrelu if kind == "polyrelu" else polynorm
    torch.testing.assert_close(ffn(x), act(x @ ffn.w1.weight.T, ffn.coeffs) @ ffn.w2.weight.T)
    torch.testing.assert_close(ffn.coeffs, torch.tensor([0.0, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64))
    built = ffn_factory(kind)(SimpleNamespace(d_model=8, d_ff=None, ffn_kwargs={}), 0)
    assert sum(p.numel() for p in built.parameters()) == 8 * 8 * 8 + 4
    with pytest.raises(ValueError, match="kind"):
        PolynomialFeedForward(8, kind="poly")
