"""minilib.attention.heads: splitting and merging heads, and repeating key/value heads for GQA/MQA."""
import pytest
import torch

from minilib.attention import expand_kv_heads, merge_heads, split_heads


def test_split_and_merge_heads_follow_the_column_layout():
    x = torch.randn(2, 3, 12)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 3)
    for h in range(4):
        torch.testing.assert_close(heads[:, h], x[:, :, 3 * h:3 * h + 3], rtol=0, atol=0)
    torch.testing.assert_close(merge_heads(heads), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible by n_heads=5"):
        split_heads(x, 5)


@pytest.mark.parametrize("n_kv, n_heads", [(1, 4), (2, 6), (3, 3)])
def test_expand_kv_heads_gives_query_head_h_the_head_h_over_the_group_size(n_kv, n_heads):
    x = torch.randn(2, n_kv, 5, 3)
    out = expand_kv_heads(x, n_heads)
    assert out.shape == (2, n_heads, 5, 3)
    for h in range(n_heads):
        assert torch.equal(out[:, h], x[:, h // (n_heads // n_kv)])


def test_head_counts_are_checked():
    with pytest.raises(ValueError, match="n_heads"):
        expand_kv_heads(torch.randn(1, 2, 3, 4), 3)
    with pytest.raises(ValueError, match="n_heads"):
        split_heads(torch.randn(1, 3, 8), 0)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        expand_kv_heads(torch.randn(2, 3, 4), 4)
