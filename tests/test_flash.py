"""minilib.flash against torch's scaled_dot_product_attention (fp64), closed-form IO counts and gradcheck."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.flash import (attention_passes_numpy, block_sparse_attention, decode_schedule_utilisation, flash_attention,
                           flash_attention_lse, flash_attention_numpy, flash_decode, lean_attention_decode,
                           merge_partials, monarch_fft_conv, packed_encoder_layer, predicted_hbm_accesses,
                           ring_attention, sram_block_sizes, standard_attention_numpy, varlen_attention)

FAST = settings(max_examples=25, deadline=None)
TOL = dict(rtol=0, atol=1e-10)


def bottom_right(T, S):
    """keep[t, j] = key j is visible to query t when the T queries are the last T of S positions."""
    return torch.ones(T, S, dtype=torch.bool).tril(S - T)


def reference(q, k, v, *, causal=False, mask=None, scale=None):
    """torch SDPA with an explicit bool mask (True = keep) and GQA; fully masked rows give zeros."""
    T, S = q.shape[2], k.shape[2]
    keep = torch.ones(T, S, dtype=torch.bool) if mask is None else mask
    if causal:
        keep = keep & bottom_right(T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def reference_lse(q, k, *, causal=False, scale=None):
    T, S = q.shape[2], k.shape[2]
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        scores = scores.masked_fill(~bottom_right(T, S), -math.inf)
    return torch.logsumexp(scores, dim=-1)


def qkv(B, H, Hkv, T, S, D, Dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    return make(B, H, T, D), make(B, Hkv, S, D), make(B, Hkv, S, Dv)


def grads(out, inputs, seed=1, rounded_to=None):
    """Vector-Jacobian products with a seeded upstream gradient (optionally rounded to a dtype first)."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, g.to(rounded_to or out.dtype).to(out.dtype))


shapes = st.fixed_dictionaries({
    "B": st.integers(1, 2), "Hkv": st.integers(1, 2), "G": st.sampled_from([1, 2, 3]),
    "T": st.sampled_from([1, 2, 7, 16, 33, 70]), "S": st.sampled_from([1, 3, 16, 31, 65, 90]),
    "D": st.sampled_from([1, 4, 8]), "Dv": st.sampled_from([1, 5, 8]), "causal": st.booleans(),
    "block_q": st.sampled_from([1, 5, 16, 64]), "block_k": st.sampled_from([1, 7, 16, 64]),
})


# ------------------------------------------------------------------ flash_attention

@FAST
@given(shapes)
def test_flash_attention_forward_backward_matches_sdpa(c):
    q, k, v = qkv(c["B"], c["Hkv"] * c["G"], c["Hkv"], c["T"], c["S"], c["D"], c["Dv"])
    out, lse = flash_attention_lse(q, k, v, causal=c["causal"], block_q=c["block_q"], block_k=c["block_k"])
    ref = reference(q, k, v, causal=c["causal"])
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(lse, reference_lse(q, k, causal=c["causal"]), **TOL)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_worker_threads_give_the_same_results():
    """With two intra-op threads the kernels share heads, sequences and query blocks among workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, k, v = qkv(2, 4, 2, 70, 90, 8, 8)
        out = flash_attention(q, k, v, causal=True, block_q=16, block_k=32)
        torch.testing.assert_close(out, reference(q, k, v, causal=True), **TOL)
        for a, b in zip(grads(out, (q, k, v)), grads(reference(q, k, v, causal=True), (q, k, v))):
            torch.testing.assert_close(a, b, **TOL)
        lengths = [5, 0, 17, 9]
        cu = torch.tensor([0] + list(np.cumsum(lengths)))
        qp, kp, vp = (torch.randn(int(cu[-1]), 4, 8, dtype=torch.float64) for _ in range(3))
        packed = varlen_attention(qp, kp, vp, cu, causal=True)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            if b > a:
                seq = [t[a:b].transpose(0, 1)[None] for t in (qp, kp, vp)]
                torch.testing.assert_close(packed[a:b].transpose(0, 1)[None], reference(*seq, causal=True), **TOL)
    finally:
        torch.set_num_threads(before)


def test_flash_attention_default_blocks_long_sequence_and_scale():
    q, k, v = qkv(1, 4, 2, 150, 200, 16, 16)
    out = flash_attention(q, k, v, causal=True, scale=0.3)
    ref = reference(q, k, v, causal=True, scale=0.3)
    torch.testing.assert_close(out, ref, **TOL)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_gradcheck_out_and_lse():
    q, k, v = qkv(1, 2, 1, 5, 7, 3, 2)
    assert torch.autograd.gradcheck(
        lambda q, k, v: flash_attention_lse(q, k, v, causal=True, block_q=2, block_k=3), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, block_q=4, block_k=2), (q, k, v))


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2), (torch.float32, 1e-5)])
def test_low_precision_inputs_accumulate_in_fp32(dtype, tol):
    q, k, v = (x.detach().to(dtype).requires_grad_() for x in qkv(2, 4, 2, 100, 130, 32, 32))
    out, lse = flash_attention_lse(q, k, v, causal=True, block_q=32, block_k=48)
    assert out.dtype == dtype and lse.dtype == (torch.float32 if dtype != torch.float64 else dtype)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = reference(q64, k64, v64, causal=True)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol)
    for a, b in zip(grads(out, (q, k, v)), grads(ref, (q64, k64, v64), rounded_to=dtype)):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=0, atol=4 * tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_logits_stay_finite(dtype):
    q, k, v = (x.detach().to(dtype) for x in qkv(1, 2, 2, 40, 50, 8, 8))
    q = (q / q.norm(dim=-1, keepdim=True) * 1e2 * math.sqrt(8)).requires_grad_()  # logits up to about ±1e4
    k = (k / k.norm(dim=-1, keepdim=True) * 1e2).requires_grad_()
    v.requires_grad_()
    out, lse = flash_attention_lse(q, k, v, causal=True, block_q=8, block_k=16)
    assert lse.abs().max() > 5e3
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert all(torch.isfinite(g).all() for g in grads(out, (q, k, v)))
    ref = reference(q.double(), k.double(), v.double(), causal=True)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-10)


def test_fully_masked_rows_give_zeros_and_zero_gradient():
    q, k, v = qkv(1, 2, 1, 9, 4, 4, 3)  # causal with T > S: the first 5 queries see no key
    out, lse = flash_attention_lse(q, k, v, causal=True, block_q=2, block_k=3)
    assert (out[:, :, :5] == 0).all() and torch.isinf(lse[:, :, :5]).all() and (lse[:, :, :5] < 0).all()
    dq, dk, dv = grads(out, (q, k, v))
    assert (dq[:, :, :5] == 0).all() and torch.isfinite(dk).all() and torch.isfinite(dv).all()
    torch.testing.assert_close(out, reference(q, k, v, causal=True), **TOL)


@pytest.mark.parametrize("call", [
    lambda q, k, v: flash_attention(q, k, v, block_q=0),
    lambda q, k, v: flash_attention(q, k, v, block_k=-3),
    lambda q, k, v: flash_attention(q, k, v, block_q=2.5),
])
def test_bad_block_sizes_raise(call):
    q, k, v = qkv(1, 2, 2, 4, 4, 4, 4)
    with pytest.raises(ValueError, match="block_"):
        call(q, k, v)


def test_bad_shapes_raise():
    q, k, v = qkv(1, 3, 2, 4, 5, 4, 4)
    with pytest.raises(ValueError, match="multiple"):
        flash_attention(q, k, v)
    with pytest.raises(ValueError, match="head_dim"):
        flash_attention(q[:, :2], k[..., :3], v)
    with pytest.raises(ValueError, match="q must have 4"):
        flash_attention(q[0], k, v)
    with pytest.raises(ValueError, match="length"):
        flash_attention(q[:, :2], k, v[:, :, :4])


# ------------------------------------------------------------------ NumPy walkthrough and IO counts

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


# ------------------------------------------------------------------ merge, decode, varlen, block-sparse

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


@FAST
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5), causal=st.booleans(), G=st.sampled_from([1, 2]))
def test_varlen_matches_per_sequence_sdpa(lengths, causal, G):
    total = sum(lengths)
    q, k, v = qkv(1, 2 * G, 2, total, total, 8, 4)
    q, k, v = (x[0].transpose(0, 1).detach().requires_grad_() for x in (q, k, v))  # (total, heads, dim)
    cu = torch.tensor([0] + list(np.cumsum(lengths)), dtype=torch.int32)
    out = varlen_attention(q, k, v, cu, causal=causal, block_q=16, block_k=8)
    pieces = [reference(*(x[a:b].transpose(0, 1)[None] for x in (q, k, v)), causal=causal)[0].transpose(0, 1)
              for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()) if b > a]
    ref = torch.cat(pieces) if pieces else out
    torch.testing.assert_close(out, ref, **TOL)
    if total:
        for a, b in zip(grads(out, (q, k, v)), grads(ref, (q, k, v))):
            torch.testing.assert_close(a, b, **TOL)


def test_varlen_bad_cu_seqlens_raise():
    x = torch.zeros(10, 2, 4)
    with pytest.raises(ValueError, match="cu_seqlens"):
        varlen_attention(x, x, x, torch.tensor([0, 4, 9]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        varlen_attention(x, x, x, torch.tensor([0, 6, 4, 10]))
    with pytest.raises(TypeError, match="cu_seqlens"):
        varlen_attention(x, x, x, torch.tensor([0.0, 10.0]))


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


# --- the SM work-distribution model (hand-computed cases) ------------------------------------

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


# ---- ring attention, attention passes, Lean Attention, Monarch FFT convolution ----

@FAST
@given(T=st.integers(2, 40), W=st.integers(1, 5), causal=st.booleans(), gqa=st.booleans())
def test_ring_attention_equals_sdpa(T, W, causal, gqa):
    W = min(W, T)
    g = torch.Generator().manual_seed(T * 10 + W)
    Hkv = 1 if gqa else 2
    q = torch.randn(2, 2, T, 8, dtype=torch.float64, generator=g)
    k = torch.randn(2, Hkv, T, 8, dtype=torch.float64, generator=g)
    v = torch.randn(2, Hkv, T, 5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(ring_attention(q, k, v, W, causal=causal), reference(q, k, v, causal=causal), **TOL)


def test_ring_attention_workers_hold_one_chunk():
    q = k = v = torch.randn(1, 1, 10, 4, dtype=torch.float64)
    _, log = ring_attention(q, k, v, 4, return_log=True)
    assert len(log) == 16
    # chunks of 10 over 4 workers are 3, 3, 2, 2 rows; each worker sees every K/V chunk once
    assert sorted({e["q_rows"] for e in log}) == [2, 3] and max(e["kv_rows"] for e in log) == 3
    for w in range(4):
        seen = sorted(e["kv_rows"] for e in log if e["worker"] == w)
        assert seen == [2, 2, 3, 3]


def test_ring_attention_rejects_bad_workers():
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="n_workers"):
        ring_attention(q, q, q, 4)
    with pytest.raises(ValueError, match="n_workers"):
        ring_attention(q, q, q, 0)


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


def naive_causal_conv(u, h):
    y = torch.zeros_like(u)
    for t in range(u.shape[1]):
        for s in range(min(t + 1, h.shape[0])):
            y[:, t] += h[s] * u[:, t - s]
    return y


@pytest.mark.parametrize("L,Lh,n1,n2", [(50, 50, 10, 10), (37, 20, 7, 8), (64, 1, 4, 16), (30, 30, 1, 59)])
def test_monarch_fft_conv_equals_naive_and_torch_fft(L, Lh, n1, n2):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, L, 3, dtype=torch.float64, generator=g)
    h = torch.randn(Lh, 3, dtype=torch.float64, generator=g)
    y = monarch_fft_conv(u, h, n1=n1, n2=n2)
    torch.testing.assert_close(y, naive_causal_conv(u, h), rtol=0, atol=1e-10)
    N = 2 * L
    via_fft = torch.fft.irfft(torch.fft.rfft(u, n=N, dim=1) * torch.fft.rfft(h, n=N, dim=0)[None], n=N, dim=1)[:, :L]
    torch.testing.assert_close(y, via_fft, rtol=0, atol=1e-10)


def test_monarch_fft_conv_rejects_short_transform():
    u, h = torch.randn(1, 10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match="wrap-around"):
        monarch_fft_conv(u, h, n1=3, n2=6)
    with pytest.raises(ValueError, match="kernel"):
        monarch_fft_conv(u, torch.randn(10, 3), n1=4, n2=5)


def test_monarch_fft_conv_frequency_sparse_equals_masked_torch_fft():
    g = torch.Generator().manual_seed(5)
    L, n1, n2 = 50, 10, 10
    u = torch.randn(2, L, 3, dtype=torch.float64, generator=g)
    h = torch.randn(L, 3, dtype=torch.float64, generator=g)
    mask = torch.rand(n1, n2, generator=g) < 0.5
    mask[[2, 7]] = False  # two whole rows skipped
    keep = torch.zeros(n1 * n2, dtype=torch.bool)
    for k1 in range(n1):
        for k2 in range(n2):
            keep[k1 + n1 * k2] = mask[k1, k2]
    spectrum = torch.fft.fft(u, n=n1 * n2, dim=1) * torch.fft.fft(h, n=n1 * n2, dim=0)[None]
    expected = torch.fft.ifft(spectrum * keep[None, :, None], dim=1).real[:, :L]
    sparse = monarch_fft_conv(u, h, n1=n1, n2=n2, freq_mask=mask)
    torch.testing.assert_close(sparse, expected, rtol=0, atol=1e-10)
    removed = torch.fft.ifft(spectrum * (~keep)[None, :, None], dim=1).real[:, :L]
    torch.testing.assert_close(monarch_fft_conv(u, h, n1=n1, n2=n2) - sparse, removed, rtol=0, atol=1e-10)
    all_kept = monarch_fft_conv(u, h, n1=n1, n2=n2, freq_mask=torch.ones(n1, n2, dtype=torch.bool))
    torch.testing.assert_close(all_kept, naive_causal_conv(u, h), rtol=0, atol=1e-10)


def test_monarch_fft_conv_rejects_bad_mask():
    u, h = torch.randn(1, 10, 2), torch.randn(10, 2)
    with pytest.raises(ValueError, match="freq_mask"):
        monarch_fft_conv(u, h, n1=4, n2=5, freq_mask=torch.ones(5, 4, dtype=torch.bool))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_packed_encoder_layer_equals_padded_and_per_sequence(norm_first, activation):
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True, norm_first=norm_first,
                                             activation=activation, dtype=torch.float64).eval()
    lengths = [5, 12, 1, 9]
    padded = torch.randn(len(lengths), max(lengths), 16, dtype=torch.float64)
    keep = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    cu = torch.tensor([0] + lengths).cumsum(0)
    out = packed_encoder_layer(padded[keep], cu, layer)
    torch.testing.assert_close(out, layer(padded, src_key_padding_mask=~keep)[keep], rtol=0, atol=1e-10)
    one_by_one = torch.cat([layer(padded[i:i + 1, :n])[0] for i, n in enumerate(lengths)])
    torch.testing.assert_close(out, one_by_one, rtol=0, atol=1e-10)


def test_packed_encoder_layer_rejects_bad_input():
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1)
    cu = torch.tensor([0, 3])
    with pytest.raises(ValueError, match="dropout"):
        packed_encoder_layer(torch.randn(3, 16), cu, layer)
    with pytest.raises(ValueError, match="d_model"):
        packed_encoder_layer(torch.randn(3, 8), cu, layer.eval())
    with pytest.raises(TypeError, match="layer"):
        packed_encoder_layer(torch.randn(3, 16), cu, torch.nn.Linear(16, 16))
