"""minilib.compress.tokens: merging against a per-pair loop, LZ meta-tokens by exact round trip, patching by hand."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.compress import (adaptive_token_sampler, bigram_entropies, entropy_patches, lz_tokens_decode,
                              lz_tokens_encode, lz_vocab_size, merge_tokens, pitome, tome)

SETTINGS = settings(max_examples=25, deadline=None)
f64 = torch.float64


def naive_tome(x: torch.Tensor, r: int):
    """One sequence, written pair by pair: best B match of every even token, the r best merged by mean."""
    N = x.shape[0]
    if r == 0:
        return x, torch.ones(N, dtype=f64)
    a, b = list(range(0, N, 2)), list(range(1, N, 2))
    cos = lambda i, j: (x[i] @ x[j] / (x[i].norm() * x[j].norm())).item()  # noqa: E731
    best = {i: max(b, key=lambda j: cos(i, j)) for i in a}
    chosen = sorted(a, key=lambda i: -cos(i, best[i]))[:r]
    groups = {j: [j] for j in range(N) if j not in chosen}
    for i in chosen:
        groups[best[i]].append(i)
    keep = sorted(groups)
    return torch.stack([x[groups[j]].mean(0) for j in keep]), torch.tensor([float(len(groups[j])) for j in keep], dtype=f64)


@SETTINGS
@given(N=st.integers(1, 12), C=st.integers(1, 4), frac=st.floats(0, 1), seed=st.integers(0, 10**6))
def test_tome_matches_the_pairwise_loop_and_keeps_the_token_mass(N, C, frac, seed):
    x = torch.randn(2, N, C, generator=torch.Generator().manual_seed(seed), dtype=f64)
    r = int(frac * ((N + 1) // 2)) if N > 1 else 0
    merged, size = tome(x, r)
    assert merged.shape == (2, N - r, C) and size.sum(-1).tolist() == [float(N)] * 2
    for b in range(2):
        want_x, want_size = naive_tome(x[b], r)
        torch.testing.assert_close(merged[b], want_x, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(size[b], want_size)
    torch.testing.assert_close((merged * size[..., None]).sum(1), x.sum(1))  # size-weighted sums are preserved


def test_tome_with_r_zero_is_the_identity_and_merging_twice_weights_by_size():
    x = torch.randn(1, 6, 3, dtype=f64)
    same, size = tome(x, 0)
    assert same is x and torch.equal(size, torch.ones(1, 6, dtype=f64))
    x = torch.tensor([[[1.0], [2.0], [10.0]]], dtype=f64)
    merged, size = merge_tokens(x, torch.tensor([[3.0, 1.0, 1.0]], dtype=f64), torch.tensor([[0]]), torch.tensor([[1]]))
    torch.testing.assert_close(merged, torch.tensor([[[1.25], [10.0]]], dtype=f64))
    assert size.tolist() == [[4.0, 1.0]]
    with pytest.raises(ValueError, match="r must be at most"):
        tome(torch.randn(1, 4, 2), 3)


def test_pitome_merges_the_cluster_and_keeps_the_isolated_tokens():
    cluster = torch.tensor([1.0, 0.0, 0.0]) + 0.01 * torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    loners = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.1]])
    x = torch.cat([loners[:1], cluster[:3], loners[1:], cluster[3:]])[None]  # loners at positions 0, 4, 5
    merged, size = pitome(x, 3)
    loner_rows = [[i for i, row in enumerate(merged[0]) if torch.allclose(row, l)] for l in loners]
    assert all(len(rows) == 1 and size[0, rows[0]] == 1 for rows in loner_rows)  # every loner kept, unmerged
    assert merged.shape[1] == 6 and size.sum().item() == 9
    # ToMe's fixed A/B split merges a loner: position 0 (A) has to pick some B token
    _, tome_size = tome(x, 3)
    assert (tome_size[0] == 2).sum() == 3
    assert torch.equal(pitome(x, 0)[0], x)
    with pytest.raises(ValueError, match="margin"):
        pitome(x, 1, margin=2.0)


def test_adaptive_token_sampler_inverts_the_cdf():
    x = torch.randn(2, 5, 3, dtype=f64)
    attn = torch.tensor([[0.96, 0.01, 0.01, 0.01, 0.01], [0.2, 0.2, 0.2, 0.2, 0.2]], dtype=f64)
    values = torch.ones(2, 5, 4, dtype=f64)
    out, keep = adaptive_token_sampler(x, attn, values, n_samples=4)
    # image 0: quantiles 1/8..7/8 all fall under the first token's 0.96 -> one token; image 1: 4 of 5 tokens
    assert keep.tolist() == [[True, False, False, False, False], [True, True, False, True, True]]
    torch.testing.assert_close(out, x * keep[..., None])
    values[1, 2] = 100.0  # a large value norm pulls the sampler to token 2
    assert adaptive_token_sampler(x, attn, values, n_samples=2)[1][1].tolist() == [False, False, True, False, False]
    with pytest.raises(ValueError, match="cls_attention"):
        adaptive_token_sampler(x, attn[:, :3], values, n_samples=2)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 4), max_size=60), window=st.integers(1, 9), max_len=st.integers(2, 7),
       min_len=st.integers(1, 2))
def test_lz_meta_tokens_round_trip_exactly(ids, window, max_len, min_len):
    codes = lz_tokens_encode(ids, 5, window=window, max_len=max_len, min_len=min_len)
    assert len(codes) <= len(ids)
    assert all(0 <= c < lz_vocab_size(5, window=window, max_len=max_len, min_len=min_len) for c in codes)
    assert lz_tokens_decode(codes, 5, window=window, max_len=max_len, min_len=min_len) == ids


def test_lz_known_encoding_with_an_overlapping_copy():
    # "abababab" = a, b, then copy 6 from offset 2 (the copy overlaps itself)
    codes = lz_tokens_encode([0, 1, 0, 1, 0, 1, 0, 1], 2, window=4, max_len=8, min_len=2)
    assert codes == [0, 1, 2 + (2 - 1) * 7 + (6 - 2)]
    assert lz_tokens_encode([0, 1, 2], 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="ids"):
        lz_tokens_encode([0, 7], 3)
    with pytest.raises(ValueError, match="codes"):
        lz_tokens_decode([3], 3)  # a copy with nothing before it


def test_bigram_entropies_and_patches_against_hand_counts():
    train = torch.tensor([0, 1, 0, 1, 0, 2])  # after 0: {1: 2, 2: 1}; after 1: {0: 2}; after 2: nothing
    h = bigram_entropies(train, torch.tensor([0, 0, 1, 2]), 3, smoothing=1.0)
    H = lambda p: -sum(v * math.log(v) for v in p)  # noqa: E731
    after0, after1, after2 = [1 / 6, 3 / 6, 2 / 6], [3 / 5, 1 / 5, 1 / 5], [1 / 3] * 3
    unigram = [3 / 8, 3 / 8, 2 / 8]  # counts of the pairs' second tokens (2, 2, 1) + 1 over 5 + 3
    want = [H(unigram), H(after0), H(after0), H(after1)]
    torch.testing.assert_close(h, torch.tensor(want, dtype=f64))
    assert H(after2) == pytest.approx(math.log(3))
    starts = entropy_patches(torch.tensor([0.1, 2.0, 0.3, 0.2, 3.0, 0.1]), 1.0)
    assert starts.tolist() == [0, 1, 4]
    assert entropy_patches(torch.zeros(4), 1.0).tolist() == [0]
    with pytest.raises(ValueError, match="ids"):
        bigram_entropies(train, torch.tensor([5]), 3)


def _ltmp_by_hand(x, size, attention, prune_threshold, merge_threshold):
    """LTMP's decisions with loops: prune by attention received, then merge each A token into its best B token."""
    B, N, _ = x.shape
    expected = []
    for b in range(B):
        received = [sum(attention[b, h, i, j].item() for h in range(attention.shape[1]) for i in range(N)) / attention.shape[1]
                    for j in range(N)]
        alive = [received[j] >= prune_threshold for j in range(N)]
        src, dst = [], []
        for a in range(0, N, 2):
            sims = {c: torch.nn.functional.cosine_similarity(x[b, a], x[b, c], dim=0).item() for c in range(1, N, 2) if alive[c]}
            if alive[a] and sims and max(sims.values()) > merge_threshold:
                src.append(a)
                dst.append(max(sims, key=sims.get))
        expected.append((alive, src, dst))
    return expected


def test_ltmp_prunes_and_merges_like_the_loop_and_equals_running_on_the_survivors():
    from minilib.compress import LTMP, merge_tokens
    from minilib.vision.vit import EncoderBlock

    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 3, 8, generator=g, dtype=f64)
    x = (base[:, torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2])] + 0.3 * torch.randn(2, 9, 8, generator=g, dtype=f64))
    size = torch.ones(2, 9, dtype=f64)
    attention = torch.softmax(torch.randn(2, 2, 9, 9, generator=g, dtype=f64) * 2, dim=-1)
    ltmp = LTMP(prune_threshold=0.8, merge_threshold=0.7).double()
    with torch.no_grad():
        new_x, new_size, keep = ltmp(x, size, torch.ones(2, 9, dtype=f64), attention)
    for b, (alive, src, dst) in enumerate(_ltmp_by_hand(x, size, attention, 0.8, 0.7)):
        assert 0 < len(src) and not all(alive)  # the example both merges and prunes
        merged_x, merged_size = merge_tokens(x[b:b + 1], size[b:b + 1], torch.tensor([src]), torch.tensor([dst]))
        kept = [j for j in range(9) if j not in src]
        want_active = [j for j in kept if alive[j]]
        assert keep[b].nonzero().flatten().tolist() == want_active
        rows = [kept.index(j) for j in want_active]
        torch.testing.assert_close(new_x[b, want_active], merged_x[0, rows], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_size[b, want_active], merged_size[0, rows], rtol=1e-12, atol=1e-12)
    # the next block with LTMP's bias over all 9 slots equals the block run on the survivors alone
    block = EncoderBlock(8, 2, d_ff=16).double().eval()
    with torch.no_grad():
        masked = block(new_x, bias=LTMP.attention_bias(new_size, keep))
        for b in range(2):
            act = keep[b].bool()
            alone = block(new_x[b:b + 1, act], bias=new_size[b:b + 1, act].log()[:, None, None, :])
            torch.testing.assert_close(masked[b:b + 1, act], alone, rtol=1e-10, atol=1e-12)


def test_ltmp_thresholds_learn_through_the_straight_through_masks():
    from minilib.compress import LTMP

    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 8, 4, generator=g, dtype=f64)
    attention = torch.softmax(torch.randn(3, 2, 8, 8, generator=g, dtype=f64), dim=-1)
    ltmp = LTMP(prune_threshold=0.9, merge_threshold=0.2, tau=0.5).double()
    _, _, keep = ltmp(x, torch.ones(3, 8, dtype=f64), torch.ones(3, 8, dtype=f64), attention)
    assert set(keep.detach().unique().tolist()) <= {0.0, 1.0}  # hard decisions in the forward pass
    keep.sum().backward()
    # a higher prune threshold keeps fewer tokens, a higher merge threshold merges fewer (keeps more)
    assert ltmp.prune_threshold.grad < 0 < ltmp.merge_threshold.grad
    with pytest.raises(ValueError, match="keep"):
        ltmp(x, torch.ones(3, 8), torch.ones(3, 7), attention)
