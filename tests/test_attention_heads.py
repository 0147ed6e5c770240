"""minilib.attention.heads: splitting and merging heads, and repeating key/value heads for GQA/MQA."""
import pytest
import torch

from minilib.attention import merge_heads, split_heads


def test_split_and_merge_heads_follow_the_column_layout():
    x = torch.randn(2, 3, 12)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 3)
    for h in range(4):
        torch.testing.assert_close(heads[:, h], x[:, :, 3 * h:3 * h + 3], rtol=0, atol=0)
    torch.testing.assert_close(merge_heads(heads), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible by n_heads=5"):
        split_heads(x, 5)
