"""RelaxedRecursive: rank 0 is strict sharing, full-rank SVD init reproduces the untied stack, LoRA is W + BA."""
import pytest
import torch

from minilib.looped import RelaxedRecursive
from minilib.models import Block, TransformerConfig


def blocks(n, d=16):
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=8, d_model=d, n_layers=n, n_heads=2, d_ff=24)
    return [Block(config, i).double() for i in range(n)]


def run(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def test_rank_zero_is_strict_sharing_without_parameters():
    a, b = blocks(2)
    model = RelaxedRecursive([a, b], 4, 0)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(model(x), run([a, b, a, b], x), rtol=0, atol=0)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in a.parameters()) * 2


def test_fresh_lora_starts_at_strict_sharing_and_counts_its_parameters():
    (a,) = blocks(1)
    model = RelaxedRecursive(a, 3, 2).double()
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    torch.testing.assert_close(model(x), run([a, a, a], x))
    linears = [m for m in a.modules() if isinstance(m, torch.nn.Linear)]
    lora = 3 * sum(2 * (m.in_features + m.out_features) for m in linears)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in a.parameters()) + lora


def test_full_rank_from_layers_reproduces_the_untied_stack():
    layers = blocks(4)
    model = RelaxedRecursive.from_layers(layers, 2, 24)  # 24 >= every min(d_in, d_out): the SVD keeps all of it
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(model(x), run(layers, x), rtol=1e-9, atol=1e-9)


def test_low_rank_weights_are_the_truncated_svd_of_the_residual():
    layers = blocks(2)
    model = RelaxedRecursive.from_layers(layers, 1, 3)
    name = "ffn.w1.weight"
    mean = (layers[0].get_parameter(name) + layers[1].get_parameter(name)) / 2
    u, s, vh = torch.linalg.svd(layers[0].get_parameter(name) - mean)
    expected = mean + u[:, :3] @ torch.diag(s[:3]) @ vh[:3]
    torch.testing.assert_close(model.layer_weights(0)[name], expected)


def test_bad_arguments():
    a, b = blocks(2)
    with pytest.raises(ValueError, match="n_layers"):
        RelaxedRecursive([a, b], 3, 0)
    with pytest.raises(ValueError, match="lora_rank"):
        RelaxedRecursive(a, 2, -1)
    with pytest.raises(ValueError, match="n_shared"):
        RelaxedRecursive.from_layers([a, b], 3, 1)
