"""minilib.sparse.content: top-k and bi-level routing attention against SDPA with masks built by loops (fp64)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.sparse import (bilevel_routing_attention, ivf_candidates, ivf_topk_attention, kmeans, knn_attention,
                            probsparse_attention, routing_mask, topk_attention)
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


def loop_causal_routing_mask(q, k, r, k_top):
    """Route each query region among the regions at or before it, then keep only keys at or before the query."""
    q, k = q.detach(), k.detach()
    B, H, T, D = q.shape
    keep = torch.zeros(B, H, T, T, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for i in range(T // r):
                qi = q[b, h, i * r:(i + 1) * r].mean(0)
                aff = [float(qi @ k[b, h, j * r:(j + 1) * r].mean(0)) for j in range(i + 1)]
                for j in sorted(range(i + 1), key=lambda j: -aff[j])[:k_top]:
                    for t in range(i * r, (i + 1) * r):
                        for s in range(j * r, min((j + 1) * r, t + 1)):
                            keep[b, h, t, s] = True
    return keep


@FAST
@given(n=st.integers(1, 6), r=st.integers(1, 4), k_top=st.integers(1, 4), seed=st.integers(0, 5))
def test_causal_routing_reads_only_earlier_regions_and_leaves_no_row_empty(n, r, k_top, seed):
    q, k, v = qkv(2, 2, 2, n * r, n * r, 4, 3, seed=seed)
    mask = routing_mask(q, k, region_size=r, k_top=k_top, causal=True)
    torch.testing.assert_close(mask, loop_causal_routing_mask(q, k, r, k_top))
    assert mask.any(-1).all()


def test_biformer_toy_grid_reads_a_quarter_of_the_keys():
    # 256 tokens (a 16x16 grid flattened region by region), 16 regions of 16, k = 4: 1/4 of the score entries
    q, k, v = qkv(1, 1, 1, 256, 256, 8, 8, dtype=torch.float32)
    mask = routing_mask(q, k, region_size=16, k_top=4)
    assert mask.float().mean() == 0.25
    out = bilevel_routing_attention(q, k, v, region_size=16, k_top=4)
    torch.testing.assert_close(out, reference(q, k, v, mask=mask), rtol=0, atol=1e-6)


def test_probsparse_with_every_query_active_is_full_attention():
    q, k, v = (x.detach() for x in qkv(2, 2, 1, 9, 9, 4, 3, seed=4))
    out, count = probsparse_attention(q, k, v, factor=10.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, reference(q, k, v), rtol=0, atol=1e-12)
    assert count == 9 * 9 + 9 * 9


def test_probsparse_counts_grow_as_l_log_l_and_lazy_queries_output_the_mean():
    g = torch.Generator().manual_seed(0)
    for L in (512, 2048, 8192):
        q, k, v = (torch.randn(1, 1, L, 16, generator=g) for _ in range(3))
        _, count = probsparse_attention(q, k, v, generator=g)
        assert count == L * math.ceil(5 * math.log(L)) * 2  # T = S: sampled keys and active queries alike
    # peaked inputs: 20 of 512 queries point hard at one key each, the rest are near zero (uniform attention)
    L, D = 512, 16
    k, v = torch.randn(1, 1, L, D, generator=g, dtype=torch.float64), torch.randn(1, 1, L, 8, generator=g, dtype=torch.float64)
    q = 1e-3 * torch.randn(1, 1, L, D, generator=g, dtype=torch.float64)
    active = torch.randperm(L, generator=g)[:20]
    q[0, 0, active] = 6 * k[0, 0, torch.randperm(L, generator=g)[:20]]
    out, _ = probsparse_attention(q, k, v, generator=g)
    ref = reference(q, k, v)
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


def test_kmeans_separates_well_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    x = (centres[:, None] + torch.randn(3, 50, 2, generator=g)).flatten(0, 1)
    _, assign = kmeans(x, 3, generator=g)
    assert all(len(set(assign[i * 50:(i + 1) * 50].tolist())) == 1 for i in range(3))
    assert len(set(assign.tolist())) == 3


def test_ivf_probing_every_cluster_is_exact_topk_and_fewer_probes_scan_less():
    q, k, v = (x.detach()[0, 0] for x in qkv(1, 1, 1, 20, 64, 8, 4, seed=5))
    g = torch.Generator().manual_seed(0)
    out, scanned = ivf_topk_attention(q, k, v, k_top=6, n_clusters=8, n_probe=8, generator=g)
    ref = topk_attention(q[None, None], k[None, None], v[None, None], k_top=6)[0, 0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert (scanned == 1).all()
    _, partial = ivf_topk_attention(q, k, v, k_top=6, n_clusters=8, n_probe=2, generator=torch.Generator().manual_seed(0))
    assert partial.mean() < 0.6


def test_ivf_candidates_are_the_keys_of_the_probed_clusters():
    q, k, _ = (x.detach()[0, 0] for x in qkv(1, 1, 1, 12, 40, 6, 2, seed=7))
    index_from = torch.randn(30, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    candidate = ivf_candidates(q, k, n_clusters=5, n_probe=2, index_from=index_from, generator=torch.Generator().manual_seed(0))
    centroids, _ = kmeans(index_from, 5, generator=torch.Generator().manual_seed(0))
    for t in range(12):
        probed = sorted(range(5), key=lambda c: -float(q[t] @ centroids[c]))[:2]
        for s in range(40):
            home = max(range(5), key=lambda c: float(k[s] @ centroids[c]))
            assert bool(candidate[t, s]) == (home in probed)


@pytest.mark.parametrize("n_probe", [1, 2, 6])
def test_knn_attention_equals_the_dense_ivf_form_and_probing_all_is_exact_topk(n_probe):
    q, k, v = (x.detach()[0, 0] for x in qkv(1, 1, 1, 16, 48, 6, 3, seed=n_probe))
    out, scanned = knn_attention(q, k, v, k_top=5, n_clusters=6, n_probe=n_probe, generator=torch.Generator().manual_seed(2))
    dense, dense_scanned = ivf_topk_attention(q, k, v, k_top=5, n_clusters=6, n_probe=n_probe,
                                              generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, dense, rtol=0, atol=1e-12)
    assert math.isclose(scanned, dense_scanned.mean().item(), abs_tol=1e-6)  # a float32 mean of bools
    if n_probe == 6:
        assert scanned == 1
        torch.testing.assert_close(out, topk_attention(q[None, None], k[None, None], v[None, None], k_top=5)[0, 0],
                                   rtol=0, atol=1e-12)
    else:
        assert scanned < 0.8


def test_bad_arguments_raise():
    q, k, v = qkv(1, 1, 1, 6, 6, 4, 4)
    with pytest.raises(ValueError, match="k_top"):
        topk_attention(q, k, v, k_top=0)
    with pytest.raises(ValueError, match="region_size"):
        bilevel_routing_attention(q, k, v, region_size=4, k_top=1)
    with pytest.raises(ValueError, match="k_top"):
        bilevel_routing_attention(q, k, v, region_size=3, k_top=0)
    with pytest.raises(ValueError, match="factor"):
        probsparse_attention(q, k, v, factor=0.0)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ValueError, match="q"):
        ivf_topk_attention(q, k[0, 0], v[0, 0], k_top=2, n_clusters=2, n_probe=1)
    with pytest.raises(ValueError, match="n_probe"):
        ivf_candidates(q[0, 0], k[0, 0], n_clusters=2, n_probe=0)
    with pytest.raises(ValueError, match="v"):
        knn_attention(q[0, 0], k[0, 0], v[0, 0, :5], k_top=2, n_clusters=2, n_probe=1)
