"""MoE++: the zero-computation experts against their definitions; FFN experts per token counted; trains in a model."""
import pytest
import torch

from minilib.moe import ConstantExpert, CopyExpert, MoEPlusPlus, ZeroExpert


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


@pytest.mark.parametrize("call, name", [(lambda: MoEPlusPlus(6, 8, 0), "n_ffn"),
                                        (lambda: MoEPlusPlus(6, 8, 2, n_zero=-1), "n_zero"),
                                        (lambda: MoEPlusPlus(6, 8, 2, router="expert_choice"), "router"),
                                        (lambda: MoEPlusPlus(6, 8, 2).ffn_experts_per_token(), "forward")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()
