"""minilib.flash.decode: the lse merge, split-K and stream-K decoding against SDPA, and the SM schedule model by hand."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from minilib.flash import (decode_schedule_utilisation, flash_attention_lse, flash_decode, lean_attention_decode,
                           merge_partials)
from tests.flash_reference import FAST, TOL, grads, qkv, reference, reference_lse


def test_merge_partials_equals_attention_over_union():
    q, k, v = qkv(2, 4, 2, 6, 50, 8, 8)
    cuts = [0, 13, 14, 40, 50]
    parts = [flash_attention_lse(q, k[:, :, a:b], v[:, :, a:b], block_q=4, block_k=8) for a, b in zip(cuts, cuts[1:])]
    out, lse = merge_partials([p[0] for p in parts], [p[1] for p in parts])
    ref = reference(q, k, v)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(lse, reference_lse(q, k), **TOL)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_merge_partials_with_empty_part_and_bad_input():
    q, k, v = qkv(1, 1, 1, 3, 5, 4, 4)
    full = flash_attention_lse(q, k, v)
    empty = (torch.zeros_like(full[0]), torch.full_like(full[1], -math.inf))
    out, lse = merge_partials([full[0], empty[0]], [full[1], empty[1]])
    torch.testing.assert_close(out, full[0], **TOL)
    out, lse = merge_partials([empty[0]], [empty[1]])
    assert (out == 0).all() and torch.isneginf(lse).all()
    with pytest.raises(ValueError, match="outs"):
        merge_partials([full[0]], [full[1], full[1]])


@pytest.mark.parametrize("T, S, n_splits, causal", [(1, 1000, 4, False), (1, 7, 16, False), (3, 301, 5, True), (2, 64, 1, True)])
def test_flash_decode_matches_sdpa(T, S, n_splits, causal):
    q, k, v = qkv(2, 4, 2, T, S, 16, 8)
    out = flash_decode(q, k, v, n_splits=n_splits, causal=causal)
    ref = reference(q, k, v, causal=causal)
    torch.testing.assert_close(out, ref, **TOL)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)
    with pytest.raises(ValueError, match="n_splits"):
        flash_decode(q, k, v, n_splits=0)


@pytest.mark.parametrize("batch, heads, policy, units, makespan", [
    # 16384 keys / 256 = 64 blocks per head, 8 heads = 512 blocks on 108 SMs
    (1, 8, "per_head", 8, 64),          # 8 SMs busy for 64 blocks each
    (1, 8, "split_k", 104, 5),          # 108 // 8 = 13 chunks of 5 (x12) and 4 (x1) per head
    (1, 8, "stream_k", 108, 5),         # 512 = 4 * 108 + 80: 80 SMs take 5 blocks, 28 take 4
    (1, 80, "per_head", 80, 64),
    (1, 80, "split_k", 80, 64),         # 108 // 80 = 1: no split, 28 SMs idle
    (1, 80, "stream_k", 108, 48),       # 5120 / 108 = 47.4 -> 48
    (2, 108, "per_head", 216, 128),     # two full waves
])
def test_decode_schedule_hand_cases(batch, heads, policy, units, makespan):
    r = decode_schedule_utilisation(batch, heads, 16384, policy=policy)
    assert r["blocks"] == batch * heads * 64
    assert (r["units"], r["makespan"]) == (units, makespan)
    assert r["utilisation"] == pytest.approx(batch * heads * 64 / (108 * makespan), rel=1e-12)
    # K and V blocks of 256 x 128 half-precision values, each SM credited 1/108 of 1.555 TB/s
    assert r["time_s"] == pytest.approx(makespan * 2 * 256 * 128 * 2 * 108 / 1.555e12, rel=1e-12)


def test_decode_schedule_small_machine_by_hand():
    # 4 SMs, 3 heads of 5 one-key blocks: stream-K ranges [0,4) [4,8) [8,12) [12,15)
    # touch heads {0}, {0,1}, {1,2}, {2}: 6 pieces, makespan 4; per head the makespan is 5.
    r = decode_schedule_utilisation(1, 3, 5, n_sms=4, block_k=1, policy="stream_k")
    assert (r["makespan"], r["partials"], r["utilisation"]) == (4, 6, 15 / 16)
    assert decode_schedule_utilisation(1, 3, 5, n_sms=4, block_k=1, policy="per_head")["makespan"] == 5
    # 5 heads of 2 blocks on 3 SMs, no split possible (3 // 5 = 0 -> 1 chunk): SM loads 4, 4, 2
    r = decode_schedule_utilisation(1, 5, 2, n_sms=3, block_k=1, policy="split_k")
    assert (r["units"], r["makespan"]) == (5, 4)
    # 2 heads, 7 blocks, 6 SMs: 3 chunks of sizes 3, 2, 2 per head; the longest decides
    r = decode_schedule_utilisation(1, 2, 7, n_sms=6, block_k=1, policy="split_k")
    assert (r["units"], r["makespan"], r["partials"]) == (6, 3, 6)


@FAST
@given(batch=st.integers(1, 8), heads=st.integers(1, 64), context_len=st.integers(1, 40000),
       n_sms=st.integers(1, 132), block_k=st.sampled_from([64, 128, 256]))
def test_stream_k_meets_the_lower_bound_and_never_loses(batch, heads, context_len, n_sms, block_k):
    blocks = batch * heads * -(-context_len // block_k)
    r = {p: decode_schedule_utilisation(batch, heads, context_len, n_sms=n_sms, block_k=block_k, policy=p)
         for p in ("per_head", "split_k", "stream_k")}
    assert r["stream_k"]["makespan"] == -(-blocks // n_sms)  # no schedule of W unit blocks on P SMs does better
    for p in r.values():
        assert p["blocks"] == blocks and 0 < p["utilisation"] <= 1
        assert p["makespan"] >= r["stream_k"]["makespan"]
    assert r["split_k"]["makespan"] <= r["per_head"]["makespan"]


def test_decode_schedule_bad_input_raises():
    with pytest.raises(ValueError, match="policy"):
        decode_schedule_utilisation(1, 8, 1024, policy="round_robin")
    with pytest.raises(ValueError, match="context_len"):
        decode_schedule_utilisation(1, 8, 0)
    with pytest.raises(ValueError, match="n_sms"):
        decode_schedule_utilisation(1, 8, 1024, n_sms=2.5)
    with pytest.raises(ValueError, match="hbm_bandwidth"):
        decode_schedule_utilisation(1, 8, 1024, hbm_bandwidth=0)


@FAST
@given(S=st.integers(1, 90), P=st.integers(1, 12), block_k=st.integers(1, 16), T=st.integers(1, 2))
def test_lean_attention_decode_equals_sdpa(S, P, block_k, T):
    g = torch.Generator().manual_seed(S * 100 + P)
    q = torch.randn(2, 4, T, 8, dtype=torch.float64, generator=g)
    k = torch.randn(2, 2, S, 8, dtype=torch.float64, generator=g)
    v = torch.randn(2, 2, S, 3, dtype=torch.float64, generator=g)
    out, units = lean_attention_decode(q, k, v, n_workers=P, block_k=block_k, return_units=True)
    torch.testing.assert_close(out, reference(q, k, v), **TOL)
    sizes = [sum(stop - first for _, _, first, stop in pieces) for pieces in units]
    n_blocks = -(-S // block_k)
    assert sum(sizes) == 2 * 4 * n_blocks and max(sizes) - min(sizes) <= 1
    covered = sorted((b, h, blk) for pieces in units for b, h, f, s in pieces for blk in range(f, s))
    assert covered == [(b, h, blk) for b in range(2) for h in range(4) for blk in range(n_blocks)]


def test_lean_attention_splits_heads():
    # B=1, H=8, one block per head, 6 workers: 8 blocks as 2,2,1,1,1,1 -> some unit spans two heads
    q = torch.randn(1, 8, 1, 4, dtype=torch.float64)
    k = v = torch.randn(1, 8, 16, 4, dtype=torch.float64)
    _, units = lean_attention_decode(q, k, v, n_workers=6, block_k=16, return_units=True)
    assert [len(p) for p in units] == [2, 2, 1, 1, 1, 1]

