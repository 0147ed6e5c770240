"""Looped, depth-recurrent, AlgoFormer and recursive stacks against explicit stacks written out here; sliced attention vs masks."""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from minilib.attention import sdpa
from minilib.looped import AlgoFormer, DepthRecurrent, LoopedTransformer, group_sliced_attention, recursive_forward
from minilib.models import Block, TransformerConfig


def block(seed=0, d=16):
    torch.manual_seed(seed)
    return Block(TransformerConfig(vocab_size=8, d_model=d, n_layers=1, n_heads=2), 0).double()


def test_looped_equals_explicit_tied_stack_with_injection():
    f, x = block(), torch.randn(2, 5, 16, dtype=torch.float64)
    expected = f(f(f(x) + x) + x)  # three loops written out: h1 = f(x), h2 = f(h1 + x), h3 = f(h2 + x)
    looped = LoopedTransformer(f, 3)
    torch.testing.assert_close(looped(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(looped.unroll()(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(LoopedTransformer(f, 3, input_injection=False)(x), f(f(f(x))), rtol=0, atol=1e-12)


def test_unrolled_stack_shares_weights_and_gradients():
    f = block()
    looped = LoopedTransformer(f, 4)
    unrolled = looped.unroll()
    n_block = sum(p.numel() for p in f.parameters())
    assert sum(p.numel() for p in looped.parameters()) == n_block
    assert sum(p.numel() for p in unrolled.parameters()) == n_block
    assert len(unrolled.layers) == 4 and all(layer is f for layer in unrolled.layers)
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    g1 = torch.autograd.grad(looped(x).sum(), list(f.parameters()))
    g2 = torch.autograd.grad(unrolled(x).sum(), list(f.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_more_loops_at_test_time():
    f, x = block(), torch.randn(1, 3, 16, dtype=torch.float64)
    torch.testing.assert_close(LoopedTransformer(f, 2)(x, n_loops=5), LoopedTransformer(f, 5)(x))


def test_depth_recurrent_update_and_identity_bias():
    f, x = block(), torch.randn(2, 4, 16, dtype=torch.float64)
    model = DepthRecurrent(f, 16, 3, layerscale_init=0.3).double()
    h = x
    for _ in range(3):
        h = (1 - 0.3) * h + 0.3 * f(h)
    torch.testing.assert_close(model(x), h)
    states = model(x, n_steps=2, return_all=True)
    assert len(states) == 2
    small = DepthRecurrent(f, 16, 1, layerscale_init=1e-4).double()
    assert (small(x) - x).abs().max() < 1e-3 * (f(x) - x).abs().max()


def test_algoformer_composition():
    pre, loop, post = block(0), block(1), block(2)
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    p = pre(x)
    expected = post(loop(loop(p) + p))
    torch.testing.assert_close(AlgoFormer(pre, loop, post, 2)(x), expected)


def test_recursive_forward_applies_each_block_in_turn():
    a, b, x = block(0), block(1), torch.randn(1, 3, 16, dtype=torch.float64)
    torch.testing.assert_close(recursive_forward([a, b], x, 2), b(b(a(a(x)))))


@settings(max_examples=20, deadline=None)
@given(groups=st.integers(1, 4), size=st.integers(1, 5), heads=st.integers(1, 2))
def test_group_sliced_attention_equals_block_diagonal_mask(groups, size, heads):
    n = groups * size
    q, k, v = (torch.randn(2, heads, n, 4, dtype=torch.float64) for _ in range(3))
    group = torch.arange(n) // size
    mask = group[:, None] == group[None, :]
    torch.testing.assert_close(group_sliced_attention(q, k, v, groups), sdpa(q, k, v, mask=mask))


def test_bad_arguments():
    f = block()
    with pytest.raises(ValueError, match="n_loops"):
        LoopedTransformer(f, 0)
    with pytest.raises(TypeError, match="block"):
        LoopedTransformer(lambda x: x, 2)
    with pytest.raises(ValueError, match="n_groups"):
        group_sliced_attention(*(torch.randn(1, 1, 5, 4) for _ in range(3)), 2)
    with pytest.raises(ValueError, match="layerscale_init"):
        DepthRecurrent(f, 16, 2, layerscale_init=0.0)
    with pytest.raises(TypeError, match="blocks"):
        recursive_forward([], torch.randn(1, 2, 16), 2)
    assert isinstance(LoopedTransformer(nn.Identity(), 2).unroll(), nn.Module)
