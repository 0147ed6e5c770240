"""minilib.sparse.masks: each pattern against a loop over its definition; attention through the pattern equals
torch's SDPA with the explicit mask (fp64); the tile mask drives block_sparse_attention."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.attention import sdpa
from minilib.flash import block_sparse_attention
from minilib.sparse import (block_local_mask, dilated_window_mask, global_local_mask, mask_flops, sink_window_mask,
                            sliding_window_mask, to_block_mask)
from tests.flash_reference import qkv, reference

FAST = settings(max_examples=30, deadline=None)


def loop_mask(T, S, keep):
    """keep(p, s) for query position p = S - T + t (bottom-right aligned) and key s."""
    return torch.tensor([[bool(keep(S - T + t, s)) for s in range(S)] for t in range(T)], dtype=torch.bool).view(T, S)


@FAST
@given(T=st.integers(0, 12), extra=st.integers(0, 6), window=st.integers(1, 15), dilation=st.integers(1, 4),
       n_sinks=st.integers(0, 5), block=st.integers(1, 7))
def test_windows_match_their_definitions(T, extra, window, dilation, n_sinks, block):
    S = T + extra
    torch.testing.assert_close(sliding_window_mask(T, window, S=S), loop_mask(T, S, lambda p, s: p - window < s <= p))
    torch.testing.assert_close(dilated_window_mask(T, window, dilation=dilation, S=S),
                               loop_mask(T, S, lambda p, s: s <= p and (p - s) % dilation == 0 and (p - s) // dilation < window))
    torch.testing.assert_close(sink_window_mask(T, window, n_sinks=n_sinks, S=S),
                               loop_mask(T, S, lambda p, s: s <= p and (s < n_sinks or s > p - window)))
    torch.testing.assert_close(block_local_mask(T, block, S=S, causal=True),
                               loop_mask(T, S, lambda p, s: s <= p and p // block == s // block))


def test_sliding_window_is_bottom_right_aligned():
    # 2 queries, 5 keys, window 2: the queries are positions 3 and 4
    expected = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(sliding_window_mask(2, 2, S=5), expected)
    torch.testing.assert_close(sliding_window_mask(4, 10), torch.ones(4, 4, dtype=torch.bool).tril())


@FAST
@given(T=st.integers(1, 14), radius=st.integers(0, 5), n_global=st.integers(0, 4), causal=st.booleans())
def test_global_local_matches_its_definition_and_cost(T, radius, n_global, causal):
    n_global = min(n_global, T)
    mask = global_local_mask(T, radius=radius, n_global=n_global, causal=causal)
    ref = loop_mask(T, T, lambda t, s: (t < n_global or s < n_global or abs(t - s) <= radius) and (s <= t or not causal))
    torch.testing.assert_close(mask, ref)
    if not causal:  # ETC's count: each regular row at most g + 2r + 1, each global row T
        assert int(mask.sum()) <= n_global * T + (T - n_global) * (n_global + 2 * radius + 1)


@FAST
@given(T=st.integers(1, 20), extra=st.integers(0, 5), window=st.integers(1, 8), n_sinks=st.integers(0, 3),
       seed=st.integers(0, 3))
def test_attention_through_each_pattern_equals_sdpa_with_the_mask(T, extra, window, n_sinks, seed):
    S = T + extra
    q, k, v = qkv(2, 4, 2, T, S, 8, 8, seed=seed)
    for mask in (sliding_window_mask(T, window, S=S), dilated_window_mask(T, window, dilation=2, S=S),
                 sink_window_mask(T, window, n_sinks=n_sinks, S=S), block_local_mask(T, window, S=S)):
        torch.testing.assert_close(sdpa(q, k, v, mask=mask), reference(q, k, v, mask=mask), rtol=0, atol=1e-12)


@FAST
@given(T=st.integers(1, 40), bs=st.sampled_from([2, 4, 8]), per=st.integers(1, 3), seed=st.integers(0, 3))
def test_block_local_runs_through_the_block_sparse_kernel_exactly(T, bs, per, seed):
    q, k, v = qkv(1, 2, 2, T, T, 4, 4, seed=seed)
    mask = block_local_mask(T, bs * per)
    blocks = to_block_mask(mask, bs)
    # a pattern made of whole tiles: the tile mask expands back to the pattern itself
    expanded = blocks.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[0, :T, :T]
    torch.testing.assert_close(expanded, mask)
    out = block_sparse_attention(q, k, v, blocks, block_size=bs)
    torch.testing.assert_close(out, reference(q, k, v, mask=mask), rtol=0, atol=1e-10)


@FAST
@given(T=st.integers(1, 30), bs=st.sampled_from([3, 4, 8]), window=st.integers(1, 9))
def test_tile_mask_covers_the_pattern_and_keeps_only_touched_tiles(T, bs, window):
    mask = sink_window_mask(T, window, n_sinks=1)
    blocks = to_block_mask(mask, bs)[0]
    for i in range(blocks.shape[0]):
        for j in range(blocks.shape[1]):
            assert bool(blocks[i, j]) == bool(mask[i * bs:(i + 1) * bs, j * bs:(j + 1) * bs].any())


def test_mask_flops_counts_kept_entries():
    T, w, D = 64, 8, 16
    kept = sum(min(t + 1, w) for t in range(T))
    assert mask_flops(sliding_window_mask(T, w), D) == 4 * kept * D
    assert mask_flops(torch.ones(T, T, dtype=torch.bool).tril(), D) == 4 * D * T * (T + 1) // 2


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(4, 0)
    with pytest.raises(ValueError, match="S"):
        sliding_window_mask(4, 2, S=3)
    with pytest.raises(ValueError, match="dilation"):
        dilated_window_mask(4, 2, dilation=0)
    with pytest.raises(ValueError, match="n_global"):
        global_local_mask(4, radius=1, n_global=5)
    with pytest.raises(ValueError, match="radius"):
        global_local_mask(4, radius=-1, n_global=1)
    with pytest.raises(TypeError, match="mask"):
        to_block_mask(torch.ones(3, 3), 2)
    with pytest.raises(ValueError, match="block_size"):
        to_block_mask(torch.ones(3, 3, dtype=torch.bool), 0)
