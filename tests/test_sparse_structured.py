"""minilib.sparse.structured: Combiner against a loop over its definition (and its support and count), the
"combiner" token mixer against that loop and inside TransformerLM, S2 block masks (coverage, per-head share, the kernel against SDPA), sentinel masks against their definition."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.flash import block_sparse_attention
from minilib.models import TransformerConfig, TransformerLM
from minilib.sparse import (CombinerAttention, combiner_attention, combiner_score_count, combiner_weights, fit_block, fit_score_count,
                            s2_block_masks, sentinel_mask)
from tests.flash_reference import qkv, reference
from tests.models_support import (assert_causal_lm, assert_cached_decoding_matches_recomputing,
                                  assert_learns_repeated_triples, decode_in_pieces, seeded)

FAST = settings(max_examples=20, deadline=None)


def loop_combiner(q, k, v, b):
    """Per query: exp-scores of its block's earlier keys and of earlier blocks' mean keys; one normaliser."""
    B, H, T, D = q.shape
    out = torch.zeros(B, H, T, v.shape[-1], dtype=q.dtype)
    for bb in range(B):
        for h in range(H):
            for t in range(T):
                i = t // b
                terms = [(torch.exp(q[bb, h, t] @ k[bb, h, s] / D ** 0.5), v[bb, h, s]) for s in range(i * b, t + 1)]
                terms += [(torch.exp(q[bb, h, t] @ k[bb, h, j * b:(j + 1) * b].mean(0) / D ** 0.5), v[bb, h, j * b:(j + 1) * b].mean(0))
                          for j in range(i)]
                z = sum(e for e, _ in terms)
                out[bb, h, t] = sum(e * val for e, val in terms) / z
    return out


@FAST
@given(n=st.integers(1, 4), b=st.integers(1, 4), seed=st.integers(0, 5))
def test_combiner_equals_its_definition(n, b, seed):
    q, k, v = (x.detach() for x in qkv(1, 2, 2, n * b, n * b, 4, 3, seed=seed))
    torch.testing.assert_close(combiner_attention(q, k, v, block_size=b), loop_combiner(q, k, v, b), rtol=0, atol=1e-12)


def test_combiner_reaches_every_earlier_key_and_is_a_distribution():
    q, k, _ = (x.detach() for x in qkv(1, 1, 1, 32, 32, 4, 4, seed=1))
    w = combiner_weights(q, k, block_size=8)[0, 0]
    causal = torch.ones(32, 32, dtype=torch.bool).tril()
    assert (w[causal] > 0).all() and (w[~causal] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(32, dtype=torch.float64))


def test_combiner_count_at_4096_is_32x_below_full():
    count = combiner_score_count(4096, 64)
    assert count == sum(t % 64 + 1 + t // 64 for t in range(4096))
    assert 31.5 < 4096 * 4097 / 2 / count < 32.5


@pytest.mark.parametrize("T", [1, 10, 12])
def test_combiner_mixer_heads_are_the_loop_and_padding_stays_out(T):
    torch.manual_seed(2)
    layer = CombinerAttention(16, 4, block_size=4).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    q, k, v = layer.project_qkv(x, torch.arange(12))
    heads = loop_combiner(q, k, v, 4)[:, :, :T]  # causal: the first T rows of the 12-token loop
    torch.testing.assert_close(layer(x[:, :T]), layer.wo(heads.transpose(1, 2).reshape(2, T, 16)), rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="CombinerCache"):
        layer(x, cache=object())


@pytest.mark.parametrize("cuts", [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [3, 4, 9], [8], [5, 13]])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_combiner_cache_fed_in_pieces_equals_the_full_forward(cuts, n_kv_heads):
    torch.manual_seed(3)
    layer = CombinerAttention(16, 4, block_size=4, n_kv_heads=n_kv_heads, rope=True).double()
    x = torch.randn(2, 14, 16, dtype=torch.float64)
    cache = layer.new_cache()
    pieces = decode_in_pieces(lambda part: layer(part, cache=cache), x, cuts)
    torch.testing.assert_close(pieces, layer(x), rtol=0, atol=1e-12)
    assert cache.length == 14 and cache.summary_k.shape == (2, n_kv_heads, 3, 4) and cache.block_k.shape[2] == 2


def test_combiner_mixer_trains_in_transformer_lm_and_decodes_with_its_cache():
    g = seeded(4)
    model = TransformerLM(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=4, max_len=64,
                                            mixer="combiner", mixer_kwargs=dict(block_size=4)))
    assert_causal_lm(model, vocab_size=12, seq_len=10, changed=5)

    assert_learns_repeated_triples(model, g)
    assert_cached_decoding_matches_recomputing(model, 6)


@pytest.mark.parametrize("n_blocks, H, n_local", [(16, 4, 1), (9, 3, 2), (5, 8, 1)])
def test_s2_heads_cover_the_context_and_each_reads_a_share(n_blocks, H, n_local):
    masks = s2_block_masks(n_blocks, H, n_local=n_local)
    causal = torch.ones(n_blocks, n_blocks, dtype=torch.bool).tril()
    assert torch.equal(masks.any(0), causal)
    for h in range(H):
        strided = sum(1 for i in range(n_blocks) for j in range(i + 1) if j % H == h)
        local = sum(1 for i in range(n_blocks) for j in range(i + 1) if i - j < n_local and j % H != h)
        assert int(masks[h].sum()) == strided + local


def test_s2_masks_run_through_the_block_sparse_kernel():
    bs, n = 4, 6
    q, k, v = qkv(1, 3, 3, n * bs, n * bs, 4, 4, seed=2)
    masks = s2_block_masks(n, 3)
    expanded = masks.repeat_interleave(bs, 1).repeat_interleave(bs, 2)[None]
    out = block_sparse_attention(q, k, v, masks, block_size=bs, causal=True)
    torch.testing.assert_close(out, reference(q, k, v, causal=True, mask=expanded), rtol=0, atol=1e-10)


@FAST
@given(T=st.integers(1, 40), span=st.integers(1, 6))
def test_sentinel_mask_matches_its_definition(T, span):
    m = sentinel_mask(T, span)
    g = span + 1
    ref = torch.tensor([[s <= t and (s // g == t // g or s % g == span) for s in range(T)] for t in range(T)]).view(T, T)
    torch.testing.assert_close(m, ref)


def test_sentinel_keys_of_finished_spans_shrink_17x():
    span, groups = 16, 8
    T = groups * (span + 1)
    last_row = sentinel_mask(T + 1, span)[-1]  # the first token after 8 finished groups
    finished = last_row[:T]  # of the 8 * 17 finished positions a causal row would read, only the sentinels stay
    assert int(finished.sum()) == groups and finished.nonzero().flatten().tolist() == [17 * g + 16 for g in range(groups)]
    assert T / int(finished.sum()) == span + 1


def masked_update(h, keep):
    """h + attention of every row of h over the rows keep allows (keys = values = h), torch SDPA with a bool mask;
    rows that keep nothing are left alone."""
    rows = keep.any(1)
    out = torch.nn.functional.scaled_dot_product_attention(h[:, None], h[:, None], h[:, None], attn_mask=keep | ~rows[:, None])
    return h + torch.where(rows[:, None], out[:, 0], torch.zeros_like(h))


@FAST
@given(G=st.integers(1, 4), n=st.integers(1, 5), m=st.integers(1, 3), seed=st.integers(0, 5))
def test_fit_block_equals_four_masked_attentions_over_the_joint_sequence(G, n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, G * n, 4, generator=g, dtype=torch.float64)
    z = torch.randn(2, G, m, 4, generator=g, dtype=torch.float64)
    group = torch.cat([torch.arange(G * n) // n, torch.arange(G * m) // m])  # owner group of each joint position
    data = torch.arange(G * n + G * m) < G * n
    same = group[:, None] == group[None, :]
    h = torch.cat([x, z.flatten(1, 2)], dim=1)
    for keep in (same & data[:, None] & data[None, :], same & ~data[:, None] & data[None, :],
                 ~data[:, None] & ~data[None, :], same & data[:, None] & ~data[None, :]):
        h = masked_update(h, keep)
    xo, zo = fit_block(x, z, group_size=n)
    torch.testing.assert_close(xo, h[:, :G * n], rtol=0, atol=1e-12)
    torch.testing.assert_close(zo.flatten(1, 2), h[:, G * n:], rtol=0, atol=1e-12)


def test_fit_score_count_matches_the_four_steps_and_grows_as_l_to_the_four_thirds():
    L, n, m = 96, 8, 2
    G = L // n
    assert fit_score_count(L, n, m) == G * n * n + G * m * n + (G * m) ** 2 + G * n * m
    sizes = [2 ** (3 * i) for i in range(3, 6)]  # 512, 4096, 32768 with n = L^(1/3)
    counts = [fit_score_count(L, round(L ** (1 / 3)), 4) for L in sizes]
    slope = (math.log(counts[-1]) - math.log(counts[0])) / (math.log(sizes[-1]) - math.log(sizes[0]))
    assert abs(slope - 4 / 3) < 0.1


def test_bad_arguments_raise():
    q, k, v = qkv(1, 1, 1, 6, 6, 4, 4)
    with pytest.raises(ValueError, match="block_size"):
        combiner_attention(q, k, v, block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        CombinerAttention(16, 4, block_size=0)
    with pytest.raises(ValueError, match="n_heads"):
        s2_block_masks(4, 0)
    with pytest.raises(ValueError, match="span"):
        sentinel_mask(4, 0)
    with pytest.raises(ValueError, match="group_size"):
        fit_block(torch.zeros(1, 6, 4), torch.zeros(1, 1, 2, 4), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        fit_score_count(10, 4, 1)
