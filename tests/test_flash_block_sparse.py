"""minilib.flash.block_sparse: block-sparse attention against SDPA with the expanded mask (fp64)."""
import pytest
import torch
from hypothesis import given, strategies as st

from minilib.flash import block_sparse_attention
from tests.flash_reference import FAST, TOL, grads, qkv, reference


def expand_block_mask(block_mask, bs, T, S):
    return block_mask.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[:, :T, :S][None]


@FAST
@given(T=st.sampled_from([1, 9, 40]), S=st.sampled_from([1, 17, 40]), bs=st.sampled_from([4, 8, 16]),
       per_head=st.booleans(), causal=st.booleans(), density=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
       seed=st.integers(0, 3))
def test_block_sparse_matches_sdpa_with_expanded_mask(T, S, bs, per_head, causal, density, seed):
    H, Hkv = 4, 2
    q, k, v = qkv(1, H, Hkv, T, S, 8, 8, seed=seed)
    g = torch.Generator().manual_seed(seed)
    bm = torch.rand(H if per_head else 1, -(-T // bs), -(-S // bs), generator=g) < density
    out = block_sparse_attention(q, k, v, bm, block_size=bs, causal=causal)
    ref = reference(q, k, v, causal=causal, mask=expand_block_mask(bm, bs, T, S))
    torch.testing.assert_close(out, ref, **TOL)
    if not out.requires_grad:  # no block kept at all: nothing depends on the inputs
        assert not bm.any() and all((b == 0).all() for b in grads(ref, (q, k, v)))
        return
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_block_sparse_bad_mask_raises():
    q, k, v = qkv(1, 2, 2, 10, 10, 4, 4)
    with pytest.raises(ValueError, match="block_mask"):
        block_sparse_attention(q, k, v, torch.ones(1, 2, 3, dtype=torch.bool), block_size=4)
    with pytest.raises(TypeError, match="block_mask"):
        block_sparse_attention(q, k, v, torch.ones(1, 3, 3), block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        block_sparse_attention(q, k, v, torch.ones(1, 3, 3, dtype=torch.bool), block_size=0)

