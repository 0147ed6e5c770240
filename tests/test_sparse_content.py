"""minilib.sparse.content: top-k and bi-level routing attention against SDPA with masks built by loops (fp64)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.sparse import bilevel_routing_attention, routing_mask, topk_attention
from tests.flash_reference import qkv, reference

FAST = settings(max_examples=30, deadline=None)


def loop_topk_mask(q, k, k_top, causal):
    """Sort each row's visible scores in Python and keep the first k_top."""
    B, H, T, _ = q.shape
    q, k = q.detach(), k.detach().repeat_interleave(H // k.shape[1], dim=1)
    S = k.shape[2]
    keep = torch.zeros(B, H, T, S, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                visible = [s for s in range(S) if not causal or s <= S - T + t]
                ranked = sorted(visible, key=lambda s: -float(q[b, h, t] @ k[b, h, s]))
                keep[b, h, t, ranked[:k_top]] = True
    return keep


@FAST
@given(T=st.integers(1, 9), extra=st.integers(0, 5), k_top=st.integers(1, 16), causal=st.booleans(), seed=st.integers(0, 5))
def test_topk_equals_sdpa_with_the_sorted_top_keys(T, extra, k_top, causal, seed):
    S = T + extra
    q, k, v = qkv(1, 2, 1, T, S, 4, 3, seed=seed)
    mask = loop_topk_mask(q, k, k_top, causal)
    torch.testing.assert_close(topk_attention(q, k, v, k_top=k_top, causal=causal), reference(q, k, v, mask=mask),
                               rtol=0, atol=1e-12)


def test_topk_with_every_key_is_full_attention():
    q, k, v = qkv(2, 2, 2, 7, 7, 4, 4)
    torch.testing.assert_close(topk_attention(q, k, v, k_top=7, causal=True), reference(q, k, v, causal=True),
                               rtol=0, atol=1e-12)


def loop_routing_mask(q, k, r, k_top):
    q, k = q.detach(), k.detach()
    B, H, T, D = q.shape
    nq, nk = T // r, k.shape[2] // r
    keep = torch.zeros(B, H, T, k.shape[2], dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for i in range(nq):
                qi = q[b, h, i * r:(i + 1) * r].mean(0)
                aff = [float(qi @ k[b, h, j * r:(j + 1) * r].mean(0)) for j in range(nk)]
                for j in sorted(range(nk), key=lambda j: -aff[j])[:k_top]:
                    keep[b, h, i * r:(i + 1) * r, j * r:(j + 1) * r] = True
    return keep


@FAST
@given(nq=st.integers(1, 5), nk=st.integers(1, 6), r=st.integers(1, 4), k_top=st.integers(1, 7), seed=st.integers(0, 5))
def test_bilevel_routing_equals_sdpa_with_the_region_mask(nq, nk, r, k_top, seed):
    q, k, v = qkv(2, 2, 2, nq * r, nk * r, 4, 3, seed=seed)
    mask = loop_routing_mask(q, k, r, k_top)
    torch.testing.assert_close(routing_mask(q, k, region_size=r, k_top=k_top), mask)
    torch.testing.assert_close(bilevel_routing_attention(q, k, v, region_size=r, k_top=k_top),
                               reference(q, k, v, mask=mask), rtol=0, atol=1e-12)


def test_biformer_toy_grid_reads_a_quarter_of_the_keys():
    # 256 tokens (a 16x16 grid flattened region by region), 16 regions of 16, k = 4: 1/4 of the score entries
    q, k, v = qkv(1, 1, 1, 256, 256, 8, 8, dtype=torch.float32)
    mask = routing_mask(q, k, region_size=16, k_top=4)
    assert mask.float().mean() == 0.25
    out = bilevel_routing_attention(q, k, v, region_size=16, k_top=4)
    torch.testing.assert_close(out, reference(q, k, v, mask=mask), rtol=0, atol=1e-6)


def test_bad_arguments_raise():
    q, k, v = qkv(1, 1, 1, 6, 6, 4, 4)
    with pytest.raises(ValueError, match="k_top"):
        topk_attention(q, k, v, k_top=0)
    with pytest.raises(ValueError, match="region_size"):
        bilevel_routing_attention(q, k, v, region_size=4, k_top=1)
    with pytest.raises(ValueError, match="k_top"):
        bilevel_routing_attention(q, k, v, region_size=3, k_top=0)
