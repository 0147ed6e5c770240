"""minilib.flash.kernel: the PyTorch FlashAttention forward and backward against torch's SDPA (fp64) and gradcheck."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given

from minilib.flash import default_tiles, flash_attention, flash_attention_lse, varlen_attention
from tests.flash_reference import FAST, TOL, grads, qkv, reference, reference_lse, shapes


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


@pytest.mark.parametrize("name, value", [("block_q", 0), ("block_k", -3), ("block_q", 2.5), ("block_k", True)])
def test_bad_block_sizes_raise(name, value):
    q, k, v = qkv(1, 2, 2, 4, 4, 4, 4)
    with pytest.raises(ValueError, match=f"{name} must be a positive int"):
        flash_attention(q, k, v, **{name: value})


def test_bad_shapes_raise():
    q, k, v = qkv(1, 3, 2, 4, 5, 4, 4)
    with pytest.raises(ValueError, match=r"query heads \(3\) must be a multiple of key/value heads \(2\)"):
        flash_attention(q, k, v)
    with pytest.raises(ValueError, match="head_dim"):
        flash_attention(q[:, :2], k[..., :3], v)
    with pytest.raises(ValueError, match="q must have 4"):
        flash_attention(q[0], k, v)
    with pytest.raises(ValueError, match="k and v must share heads and length"):
        flash_attention(q[:, :2], k, v[:, :, :4])



@pytest.mark.parametrize("causal", [False, True])
def test_default_tiles_span_several_tiles_and_match_sdpa(causal):
    T = S = 549  # two tiles or more along both axes, the last one partial
    bq, bk = default_tiles(T, causal=causal)
    assert 64 <= bq < T and 64 <= bk < T, "the fast path uses large tiles; the chapter passes small ones explicitly"
    q, k, v = qkv(1, 2, 1, T, S, 8, 8)
    out = flash_attention(q, k, v, causal=causal)
    torch.testing.assert_close(out, reference(q, k, v, causal=causal), **TOL)
    assert torch.equal(out, flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk))
    for a, b in zip(grads(out, (q, k, v)), grads(reference(q, k, v, causal=causal), (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)


def test_default_tiles_rule():
    # causal: B_q = min(128, max(64, T // 8)), so the masked diagonal stays near 1/8 of the work
    assert [default_tiles(T, causal=True) for T in (1, 256, 512, 800, 1024, 4096)] == \
        [(64, 512), (64, 512), (64, 512), (100, 512), (128, 512), (128, 512)]
    assert default_tiles(4096, causal=False) == default_tiles(3, causal=False) == (256, 512)
    with pytest.raises(ValueError, match="T must be a positive int"):
        default_tiles(0, causal=True)
