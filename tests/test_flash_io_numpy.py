"""minilib.flash.io_numpy: the NumPy walkthroughs against torch's SDPA (fp64) and their IO counts against closed forms."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given

from minilib.flash import (attention_passes_numpy, flash_attention_numpy, online_softmax_step, predicted_hbm_accesses,
                           sram_block_sizes, standard_attention_numpy)
from tests.flash_reference import FAST, qkv, reference, reference_lse, shapes


@FAST
@given(shapes)
def test_numpy_walkthrough_matches_sdpa(c):
    q, k, v = (x.detach() for x in qkv(c["B"], c["Hkv"] * c["G"], c["Hkv"], c["T"], c["S"], c["D"], c["Dv"]))
    out, lse, _ = flash_attention_numpy(q.numpy(), k.numpy(), v.numpy(), causal=c["causal"],
                                        block_q=c["block_q"], block_k=c["block_k"])
    np.testing.assert_allclose(out, reference(q, k, v, causal=c["causal"]).numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(lse, reference_lse(q, k, causal=c["causal"]).numpy(), rtol=0, atol=1e-10)
    std, _ = standard_attention_numpy(q.numpy(), k.numpy(), v.numpy(), causal=c["causal"])
    np.testing.assert_allclose(std, out, rtol=0, atol=1e-10)


@pytest.mark.parametrize("T, S, D, Dv, bq, bk", [(8, 8, 4, 4, 4, 4), (10, 7, 3, 5, 4, 3), (64, 96, 8, 8, 16, 32)])
def test_io_counts_equal_closed_form(T, S, D, Dv, bq, bk):
    q, k, v = (x.detach().numpy() for x in qkv(2, 2, 2, T, S, D, Dv))
    _, _, io = flash_attention_numpy(q, k, v, block_q=bq, block_k=bk)
    heads = 4
    assert io["hbm_reads"] == heads * (T * D + math.ceil(T / bq) * S * (D + Dv))
    assert io["hbm_writes"] == heads * T * (Dv + 1)
    bq_, bk_ = min(bq, T), min(bk, S)
    assert io["sram_peak"] == bq_ * D + bk_ * (D + Dv) + bq_ * bk_ + bq_ * Dv + 2 * bq_
    _, io_std = standard_attention_numpy(q, k, v)
    assert io_std["hbm_reads"] == heads * (T * D + S * D + 2 * T * S + S * Dv)
    assert io_std["hbm_writes"] == heads * (2 * T * S + T * Dv)


def test_io_counts_causal_visit_only_visible_tiles():
    # T = S = 8, blocks of 4: query block 0 sees key block 0; query block 1 sees key blocks 0 and 1
    q, k, v = (x.detach().numpy()[0, 0] for x in qkv(1, 1, 1, 8, 8, 3, 2))
    _, _, io = flash_attention_numpy(q, k, v, causal=True, block_q=4, block_k=4)
    assert io["hbm_reads"] == 8 * 3 + 3 * 4 * (3 + 2)
    # T = 6 > S = 2: query block 0 (rows 0..2) is fully masked and not even read
    q6 = np.random.default_rng(0).standard_normal((6, 3))
    out, lse, io = flash_attention_numpy(q6, k[:2], v[:2], causal=True, block_q=3, block_k=4)
    assert io["hbm_reads"] == 3 * 3 + 2 * (3 + 2)
    assert (out[:4] == 0).all() and np.isneginf(lse[:4]).all()


def test_io_scales_like_theorem_2():
    """Counted flash traffic / (N^2 d^2 / M) stays within 6..12 while M varies 8x; standard is 4 N^2 + O(Nd)."""
    N, d = 512, 16
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((N, d)) for _ in range(3))
    ratios = []
    for M in (1024, 2048, 4096, 8192):
        bq, bk = sram_block_sizes(M, d)
        _, _, io = flash_attention_numpy(q, k, v, block_q=bq, block_k=bk)
        assert io["sram_peak"] <= M
        ratios.append((io["hbm_reads"] + io["hbm_writes"]) / predicted_hbm_accesses(N, d, M)["flash"])
    assert all(6 <= r <= 12 for r in ratios) and max(ratios) / min(ratios) < 1.5, ratios
    _, io_std = standard_attention_numpy(q, k, v)
    assert 3 <= (io_std["hbm_reads"] + io_std["hbm_writes"]) / predicted_hbm_accesses(N, d, 1)["standard"] <= 5


def test_io_saving_at_4096_is_at_least_5x():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((4096, 64)).astype(np.float32) for _ in range(3))
    _, _, io = flash_attention_numpy(q, k, v, block_q=256, block_k=256)
    naive = 4096 * 64 * 4 + 4 * 4096 * 4096  # standard_attention_numpy's closed form (checked above)
    assert naive / (io["hbm_reads"] + io["hbm_writes"]) >= 5


def test_numpy_bad_arguments_raise():
    x = np.zeros((4, 4))
    with pytest.raises(ValueError, match="block_q"):
        flash_attention_numpy(x, x, x, block_q=0)
    with pytest.raises(ValueError, match="k must be"):
        flash_attention_numpy(x, np.zeros((4, 3)), x)
    with pytest.raises(TypeError, match="q must be a numpy"):
        flash_attention_numpy(torch.zeros(4, 4), x, x)


@pytest.mark.parametrize("passes", [1, 2, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_passes_equal_sdpa(passes, causal):
    g = torch.Generator().manual_seed(passes)
    q = torch.randn(2, 4, 13, 8, dtype=torch.float64, generator=g)
    k = torch.randn(2, 2, 21, 8, dtype=torch.float64, generator=g)
    v = torch.randn(2, 2, 21, 6, dtype=torch.float64, generator=g)
    out, _ = attention_passes_numpy(q.numpy(), k.numpy(), v.numpy(), passes=passes, causal=causal, block_k=5)
    np.testing.assert_allclose(out, reference(q, k, v, causal=causal).numpy(), rtol=0, atol=1e-10)


def test_attention_passes_traffic_by_hand():
    # T=4, S=6, D=3, Dv=2, one head: each pass reads Q (12) and K (18); the output pass also V (12)
    q, k, v = np.ones((4, 3)), np.ones((6, 3)), np.ones((6, 2))
    reads = {p: attention_passes_numpy(q, k, v, passes=p, block_k=4)[1]["hbm_reads"] for p in (3, 2, 1)}
    assert reads == {3: 102, 2: 72, 1: 42}
    # the buffer is Q (12) + K block (12) + V block (8) + scores (16) + m, l, o (16), for any S
    for S in (6, 600):
        io = attention_passes_numpy(q, np.ones((S, 3)), np.ones((S, 2)), passes=1, block_k=4)[1]
        assert io["sram_peak"] == 64 and io["hbm_writes"] == 8


def test_attention_passes_rejects_bad_passes():
    with pytest.raises(ValueError, match="passes"):
        attention_passes_numpy(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), passes=4)



@pytest.mark.parametrize("block", [1, 7, 100])
def test_online_softmax_step_equals_softmax_even_where_exp_overflows(block):
    rng = np.random.default_rng(block)
    s = rng.standard_normal((3, 100)) * 1e4  # exp(s) is inf in float64
    s[1, :50] = -np.inf  # a row whose first blocks are fully masked
    v = rng.standard_normal((100, 4))
    m, l, acc = np.full(3, -np.inf), np.zeros(3), np.zeros((3, 4))
    for c0 in range(0, 100, block):
        m, l, acc = online_softmax_step(m, l, acc, s[:, c0:c0 + block], v[c0:c0 + block])
    s_t = torch.from_numpy(s)
    np.testing.assert_allclose(acc / l[:, None], (torch.softmax(s_t, -1) @ torch.from_numpy(v)).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m + np.log(l), torch.logsumexp(s_t, -1).numpy(), rtol=1e-14, atol=0)


def test_online_softmax_step_keeps_a_fully_masked_row_empty():
    m, l, acc = online_softmax_step(np.full(1, -np.inf), np.zeros(1), np.zeros((1, 2)),
                                    np.full((1, 3), -np.inf), np.ones((3, 2)))
    assert np.isneginf(m).all() and (l == 0).all() and (acc == 0).all()
