"""Activation-sparsity probe against a hand count of the hidden units; Top-k ReLU against sorting."""
import pytest
import torch

from minilib.feedforward import FeedForward
from minilib.moe import activation_sparsity, topk_relu


def test_probe_counts_the_zero_hidden_units_of_every_ffn():
    torch.manual_seed(0)
    model = torch.nn.Sequential(FeedForward(6, 10, kind="relu"), FeedForward(6, 8, kind="relu")).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    fractions = activation_sparsity(model, lambda m: m(x))
    h0 = torch.relu(x @ model[0].w1.weight.T)
    h1 = torch.relu(model[0](x) @ model[1].w1.weight.T)
    assert fractions == [(h0 == 0).double().mean().item(), (h1 == 0).double().mean().item()]
    assert activation_sparsity(model, lambda m: m(x), threshold=1e9) == [1.0, 1.0]
    assert not model[0].w2._forward_pre_hooks


def test_topk_relu_keeps_the_k_largest_positive_entries():
    torch.manual_seed(1)
    x = torch.randn(5, 9, dtype=torch.float64)
    got = topk_relu(x, 3)
    for row, out in zip(x, got):
        kth = row.sort(descending=True).values[2]
        torch.testing.assert_close(out, torch.where(row >= kth, torch.relu(row), torch.zeros_like(row)))
    assert (got != 0).sum(-1).max() <= 3


@pytest.mark.parametrize("call, error, name", [
    (lambda: topk_relu(torch.zeros(2, 3), 4), ValueError, "k"),
    (lambda: activation_sparsity(torch.nn.Linear(2, 2), lambda m: None), ValueError, "model"),
    (lambda: activation_sparsity(FeedForward(4), lambda m: None, threshold=-1.0), ValueError, "threshold")])
def test_bad_arguments_are_named(call, error, name):
    with pytest.raises(error, match=name):
        call()
