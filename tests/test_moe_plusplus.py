"""MoE++: the zero-computation experts against their definitions; FFN experts per token counted; trains in a model."""
import pytest
import torch

from minilib.moe import ConstantExpert, CopyExpert, MoEPlusPlus, ZeroExpert, link_gating_residuals


def test_zero_copy_and_constant_experts_match_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)
    assert ZeroExpert()(x).abs().max() == 0 and torch.equal(CopyExpert()(x), x)
    const = ConstantExpert(6).double()
    torch.nn.init.normal_(const.v)
    a = torch.softmax(x @ const.gate.weight.T, -1)
    torch.testing.assert_close(const(x), a[:, :1] * x + a[:, 1:] * const.v)


def test_sparse_dispatch_equals_dense_and_counts_ffn_experts_per_token():
    torch.manual_seed(1)
    layer = MoEPlusPlus(6, 8, 4, 2).double()
    with torch.no_grad():
        layer.router.weight[4:] += 2 * layer.router.weight[:1]  # tilt some tokens towards the cheap experts
    x = torch.randn(20, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.dense_reference(x), rtol=0, atol=1e-12)
    probs = torch.softmax(x @ layer.router.weight.T, -1)
    chosen = probs.topk(2, -1).indices
    assert layer.ffn_experts_per_token() == (chosen < 4).sum().item() / 20 < 2
    assert len(layer.experts) == 7


def test_registered_moe_plus_plus_trains():
    from minilib.models import TransformerLM, train

    torch.manual_seed(0)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=1, n_heads=2, d_ff=16, ffn="moe++",
                          ffn_kwargs={"n_ffn": 4})
    x = torch.randint(0, 7, (4, 10))
    losses = train(model, iter(lambda: (x, x.roll(-1, 1)), None), steps=20, lr=1e-2, progress=False)
    assert losses[-1] < 0.8 * losses[0]


def test_gating_residuals_add_the_previous_layers_logits_through_a_learned_map():
    torch.manual_seed(2)
    layers = [MoEPlusPlus(6, 8, 3, 2, gating_residual=True, layer=j).double() for j in range(3)]
    assert layers[0].gate_residual is None  # the first layer has no predecessor
    for later in layers[1:]:
        assert later.gate_residual.weight.abs().sum() == 0  # zero at the start: routes as without residuals
        torch.nn.init.normal_(later.gate_residual.weight)
    for previous, later in zip(layers, layers[1:]):
        later.follow(previous)
    xs = [torch.randn(2, 5, 6, dtype=torch.float64) for _ in layers]
    want_prev = None
    for layer, x in zip(layers, xs):
        flat = x.reshape(-1, 6)
        want = flat @ layer.router.weight.T  # G_j = W_j x_j + W_g^j G_{j-1}, by hand
        if want_prev is not None:
            want = want + want_prev @ layer.gate_residual.weight.T
        out = layer(x)
        torch.testing.assert_close(layer.routing.logits, want, rtol=0, atol=1e-12)
        want_prev = want
    # the dense reference routes the same way, so sparse dispatch still equals it
    torch.testing.assert_close(out, layers[2].dense_reference(xs[2]), rtol=0, atol=1e-12)


def test_gating_residuals_train_in_a_model_after_linking():
    from minilib.models import TransformerLM, train

    torch.manual_seed(0)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=3, n_heads=2, d_ff=16, ffn="moe++",
                          ffn_kwargs={"n_ffn": 4, "gating_residual": True})
    x = torch.randint(0, 7, (4, 10))
    with pytest.raises(ValueError, match="gating_residual"):
        model(x)  # layers after the first are not linked yet
    assert link_gating_residuals(model) == 2
    ffns = [block.ffn for block in model.blocks]
    model(x)
    model(x)[..., 0].sum().backward()
    assert all(f.gate_residual.weight.grad.abs().sum() > 0 for f in ffns[1:])  # W_g = 0 still gets a gradient
    model.zero_grad()
    losses = train(model, iter(lambda: (x, x.roll(-1, 1)), None), steps=20, lr=1e-2, progress=False)
    assert losses[-1] < 0.8 * losses[0]
    assert all(f.gate_residual.weight.abs().sum() > 0 for f in ffns[1:])  # W_g learned


@pytest.mark.parametrize("call, name", [(lambda: MoEPlusPlus(6, 8, 0), "n_ffn"),
                                        (lambda: MoEPlusPlus(6, 8, 2, n_zero=-1), "n_zero"),
                                        (lambda: MoEPlusPlus(6, 8, 2, router="expert_choice"), "router"),
                                        (lambda: MoEPlusPlus(6, 8, 2).ffn_experts_per_token(), "forward"),
                                        (lambda: MoEPlusPlus(6, 8, 2, layer=-1), "layer"),
                                        (lambda: MoEPlusPlus(6, 8, 2, layer=1).follow(MoEPlusPlus(6, 8, 3)),
                                         "previous"),
                                        (lambda: MoEPlusPlus(6, 8, 2, gating_residual=True, layer=1)(
                                            torch.randn(3, 6)), "gating_residual")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("call, name", [(lambda: MoEPlusPlus(6, 8, 2, gating_residual=1), "gating_residual"),
                                        (lambda: MoEPlusPlus(6, 8, 2, layer=1).follow(torch.nn.Linear(2, 2)),
                                         "previous"),
                                        (lambda: link_gating_residuals(None), "model")])
def test_bad_types_are_named(call, name):
    with pytest.raises(TypeError, match=name):
        call()
