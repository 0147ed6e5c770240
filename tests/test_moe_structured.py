"""Structured linears equal their dense matrices; parameter counts; self-guided blending schedule."""
import pytest
import torch

from minilib.moe import BlockDiagonalLinear, LowRankLinear, SelfGuided


def test_low_rank_and_block_diagonal_equal_their_dense_matrices():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 12, dtype=torch.float64)
    low = LowRankLinear(12, 8, 3).double()
    torch.testing.assert_close(low(x), x @ low.dense_weight().T)
    assert torch.linalg.matrix_rank(low.dense_weight()) == 3
    block = BlockDiagonalLinear(12, 8, 4).double()
    w = torch.zeros(8, 12, dtype=torch.float64)
    for b in range(4):
        w[2 * b:2 * b + 2, 3 * b:3 * b + 3] = block.weight[b].T
    torch.testing.assert_close(block(x), x @ w.T)
    assert sum(p.numel() for p in low.parameters()) == 3 * (12 + 8)
    assert block.weight.numel() == 12 * 8 // 4


def test_self_guided_blends_the_dense_path_out():
    torch.manual_seed(1)
    layer = SelfGuided(LowRankLinear(6, 6, 2), 6, 6, guide_steps=4).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.dense(x))
    layer.step()
    torch.testing.assert_close(layer(x), 0.75 * layer.dense(x) + 0.25 * layer.structured(x))
    for _ in range(5):
        layer.step()
    assert layer.alpha == 0.0
    torch.testing.assert_close(layer(x), layer.structured(x))


@pytest.mark.parametrize("call, name", [(lambda: LowRankLinear(4, 4, 0), "rank"),
                                        (lambda: BlockDiagonalLinear(6, 4, 4), "d_in"),
                                        (lambda: BlockDiagonalLinear(4, 6, 4), "d_out"),
                                        (lambda: LowRankLinear(4, 4, 2)(torch.zeros(3)), "x"),
                                        (lambda: SelfGuided(LowRankLinear(4, 4, 2), 4, 4, -1), "guide_steps")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()
