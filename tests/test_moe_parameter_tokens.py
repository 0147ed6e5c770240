"""Pattention against its equation in fp64; growth by zero-key tokens preserves the function and keeps training."""
import math

import pytest
import torch
import torch.nn.functional as F

from minilib.moe import Pattention, pattention


def test_pattention_matches_its_equation_and_zero_input_gives_zero():
    torch.manual_seed(0)
    x, keys, values = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64), \
        torch.randn(6, 2, dtype=torch.float64)
    s = torch.einsum("btd,md->btm", x, keys)
    a = 2.0 * s / s.pow(2).sum(-1, keepdim=True).sqrt()
    erf_gelu = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    torch.testing.assert_close(pattention(x, keys, values, 2.0), erf_gelu @ values)
    assert pattention(torch.zeros(1, 4, dtype=torch.float64), keys, values, 2.0).abs().max() == 0


def test_growth_leaves_outputs_unchanged_and_the_new_keys_get_gradients():
    torch.manual_seed(1)
    layer = Pattention(8, 8, 4).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    before = layer(x)
    layer.grow(4)
    assert layer.n_tokens == 8 and layer.tau == 2.0
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-15)
    layer(x).pow(2).sum().backward()
    assert layer.keys.grad[4:].abs().sum() > 0


def test_a_grown_pattention_ffn_continues_training_in_a_transformer_lm():
    from minilib.models import TransformerLM, lm_loss, train

    torch.manual_seed(0)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=1, n_heads=2, ffn="pattention", ffn_kwargs={"n_tokens": 8})
    x = torch.randint(0, 7, (4, 10))
    batches = iter(lambda: (x, x.roll(-1, 1)), None)
    train(model, batches, steps=15, lr=1e-2, progress=False)
    loss_before = lm_loss(model, (x, x.roll(-1, 1))).item()
    model.blocks[0].ffn.grow(8)
    assert abs(lm_loss(model, (x, x.roll(-1, 1))).item() - loss_before) < 1e-6
    losses = train(model, batches, steps=10, lr=1e-2, progress=False)
    assert losses[0] < loss_before + 1e-4 and losses[-1] < losses[0]


@pytest.mark.parametrize("call, name", [
    (lambda: pattention(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(4, 2), 1.0), "x"),
    (lambda: pattention(torch.zeros(2, 5), torch.zeros(4, 5), torch.zeros(3, 2), 1.0), "values"),
    (lambda: pattention(torch.zeros(2, 5), torch.zeros(4, 5), torch.zeros(4, 2), 0.0), "tau"),
    (lambda: Pattention(4, 4, 0), "n_tokens"), (lambda: Pattention(4, 4, 2).grow(-1), "n_new")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()
