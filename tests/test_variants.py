"""minilib.variants: each mechanism against its equation written out, parameter counts by hand, masks, bad input."""
import math

import pytest
import torch

from minilib.models import (
    DualStreamBlock, DualStreamLM, EncoderDecoderTransformer, GatedResidual, GatedTransformerLM, MinimalAttention,
    MinimalTransformer, count_parameters)


def seeded(seed=0):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- encoder-decoder

def small_seq2seq():
    seeded()
    return EncoderDecoderTransformer(11, 16, 2, 4, d_ff=24, n_decoder_layers=3, max_len=20).double()


def test_seq2seq_shapes():
    model = small_seq2seq()
    src, tgt = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (3, 5))
    assert model.encode(src).shape == (3, 7, 16)
    assert model(src, tgt).shape == (3, 5, 11)
    assert model.greedy_decode(src, 6, bos_id=10).shape == (3, 6)
    assert len(model.encoder) == 2 and len(model.decoder) == 3


def test_decoder_is_causal_and_encoder_is_not():
    model = small_seq2seq()
    src, tgt = torch.randint(0, 11, (2, 7)), torch.randint(0, 11, (2, 8))
    tgt2 = tgt.clone()
    tgt2[:, 5] = (tgt[:, 5] + 1) % 11
    a, b = model(src, tgt), model(src, tgt2)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-12)
    assert (a[:, 5:] - b[:, 5:]).abs().amax() > 1e-6
    src2 = src.clone()
    src2[:, -1] = (src[:, -1] + 1) % 11
    m, m2 = model.encode(src), model.encode(src2)
    assert (m[:, 0] - m2[:, 0]).abs().amax() > 1e-6, "the first encoder position must see the last source token"
    assert (a - model(src2, tgt)).abs()[:, 0].amax() > 1e-6, "the first decoder position must see the whole source"


def test_cross_attention_matches_torch_multihead_attention():
    model = small_seq2seq()
    attn = model.decoder[0].cross_attn
    ref = torch.nn.MultiheadAttention(16, 4, bias=False, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]))
        ref.out_proj.weight.copy_(attn.wo.weight)
    x, memory = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 9, 16, dtype=torch.float64)
    want, _ = ref(x, memory, memory, need_weights=False)
    torch.testing.assert_close(attn(x, memory=memory), want)


def test_greedy_decode_equals_stepwise_argmax_without_cache():
    model = small_seq2seq()
    src = torch.randint(0, 10, (4, 6), generator=torch.Generator().manual_seed(3))
    got = model.greedy_decode(src, 9, bos_id=10)
    prefix = torch.full((4, 1), 10)
    for _ in range(9):
        nxt = model(src, prefix)[:, -1].argmax(-1, keepdim=True)  # full recomputation, no cache
        prefix = torch.cat([prefix, nxt], dim=1)
    assert torch.equal(got, prefix[:, 1:])


def test_post_ln_layers_end_in_a_layer_norm():
    model = small_seq2seq()
    y = model.decoder[0](torch.randn(2, 4, 16, dtype=torch.float64), torch.randn(2, 3, 16, dtype=torch.float64))
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 4, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 4, dtype=torch.float64), rtol=0, atol=1e-3)


# ----------------------------------------------------------------------------- minimal transformer

D_IN, N_CLS, SEQ, D, L, H, FF = 8, 10, 8, 16, 2, 2, 32


def minimal(**flags):
    seeded()
    return MinimalTransformer(D_IN, N_CLS, SEQ, D, L, H, d_ff=FF, **flags)


def test_minimal_parameter_counts_by_hand():
    shared = (D_IN * D + D) + SEQ * D + 2 * D + (SEQ * D * N_CLS + N_CLS)  # embed, positions, final LN, classifier
    per_layer = 2 * D + 2 * D * D + 2 * D * D + (2 * D * FF + 2 * D)  # LN, W_Q W_K, W_V W_O, MLP with its LN
    full = shared + L * per_layer
    assert count_parameters(minimal()) == full
    assert count_parameters(minimal(mlp=False)) == full - L * (2 * D * FF + 2 * D)
    assert count_parameters(minimal(value_out=False)) == full - L * 2 * D * D
    assert count_parameters(minimal(similarity="collapsed")) == full - L * 2 * D * D + L * H * D * D
    assert count_parameters(minimal(similarity="symmetric")) == full - L * 2 * D * D + L * H * D * (D + 1) // 2
    smallest = minimal(mlp=False, similarity="symmetric", value_out=False)
    assert count_parameters(smallest) == shared + L * (2 * D + H * D * (D + 1) // 2)


def test_qk_attention_matches_torch_multihead_attention():
    seeded()
    attn = MinimalAttention(D, H).double()
    ref = torch.nn.MultiheadAttention(D, H, bias=False, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]))
        ref.out_proj.weight.copy_(attn.wo.weight)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    torch.testing.assert_close(attn(x), ref(x, x, x, need_weights=False)[0])


def test_collapsed_matrix_reproduces_query_key_product():
    seeded()
    qk = MinimalAttention(D, H).double()
    collapsed = MinimalAttention(D, H, similarity="collapsed").double()
    wq, wk = qk.wq.weight.view(H, D // H, D), qk.wk.weight.view(H, D // H, D)
    with torch.no_grad():
        collapsed.a.copy_(torch.stack([wq[h].T @ wk[h] for h in range(H)]))
        collapsed.wv.weight.copy_(qk.wv.weight)
        collapsed.wo.weight.copy_(qk.wo.weight)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    torch.testing.assert_close(collapsed(x), qk(x))


@pytest.mark.parametrize("similarity", ["qk", "collapsed", "symmetric"])
def test_scores_symmetric_only_for_symmetric_similarity(similarity):
    seeded()
    attn = MinimalAttention(D, H, similarity=similarity).double()
    s = attn.scores(torch.randn(2, 7, D, dtype=torch.float64))
    asym = (s - s.transpose(-2, -1)).abs().amax().item()
    if similarity == "symmetric":
        assert asym < 1e-12
    else:
        assert asym > 1e-3


def test_reduced_attention_equals_softmax_of_scores_on_channel_slices():
    seeded()
    attn = MinimalAttention(D, H, similarity="symmetric", value_out=False).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    weights = torch.softmax(attn.scores(x), dim=-1)
    dh = D // H
    want = torch.cat([weights[:, h] @ x[..., h * dh:(h + 1) * dh] for h in range(H)], dim=-1)
    torch.testing.assert_close(attn(x), want)


def test_minimal_shapes():
    assert minimal(mlp=False, similarity="symmetric", value_out=False)(torch.randn(4, SEQ, D_IN)).shape == (4, N_CLS)


# ----------------------------------------------------------------------------- GTrXL gate

def gru_gate_reference(gate, x, y):
    """GTrXL's gating equations with the module's weights, written out term by term."""
    Wr, Wz, Wg = gate.w.weight.chunk(3, dim=0)
    Ur, Uz = gate.u_rz.weight.chunk(2, dim=0)
    Ug, b = gate.u_g.weight, gate.gate_bias
    r = torch.sigmoid(y @ Wr.T + x @ Ur.T)
    z = torch.sigmoid(y @ Wz.T + x @ Uz.T - b)
    h = torch.tanh(y @ Wg.T + (r * x) @ Ug.T)
    return (1 - z) * x + z * h, z


@pytest.mark.parametrize("bias", [0.0, 2.0, 5.0])
def test_gated_residual_matches_gru_equations(bias):
    seeded()
    gate = GatedResidual(12, gate_bias=bias).double()
    x, y = torch.randn(3, 4, 12, dtype=torch.float64), torch.randn(3, 4, 12, dtype=torch.float64)
    want, _ = gru_gate_reference(gate, x, y)
    torch.testing.assert_close(gate(x, y), want)


def test_gated_residual_starts_near_identity():
    x, y = torch.randn(64, 8, 32, dtype=torch.float64), torch.randn(64, 8, 32, dtype=torch.float64)
    deviation = {}
    for bias in (0.0, 2.0, 4.0, 8.0):
        seeded()
        gate = GatedResidual(32, gate_bias=bias).double()
        _, z = gru_gate_reference(gate, x, y)
        deviation[bias] = ((gate(x, y) - x).norm() / x.norm()).item()
        assert abs(z.mean().item() - 1 / (1 + math.exp(bias))) < 0.06, f"mean update gate at init vs sigmoid(-b), b={bias}"
    assert deviation[0.0] > deviation[2.0] > deviation[4.0] > deviation[8.0]
    assert deviation[2.0] < 0.25 and deviation[8.0] < 1e-3
    seeded()
    gate = GatedResidual(32, gate_bias=2.0).double()
    with torch.no_grad():
        for lin in (gate.w, gate.u_rz, gate.u_g):
            lin.weight.zero_()
    torch.testing.assert_close(gate(x, y), (1 - 1 / (1 + math.exp(2.0))) * x)  # z = sigmoid(-2), tanh(0) = 0


def test_gated_lm_shapes_and_causality():
    seeded()
    model = GatedTransformerLM(13, 16, 3, 2, gate_bias=2.0).double()
    idx = torch.randint(0, 13, (2, 9))
    idx2 = idx.clone()
    idx2[:, 6] = (idx[:, 6] + 1) % 13
    a, b = model(idx), model(idx2)
    assert a.shape == (2, 9, 13)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- dual stream

def explicit_kronecker(M, D):
    H = M.shape[0]
    W = torch.zeros(H * D, H * D, dtype=M.dtype)
    for g in range(H):
        for h in range(H):
            for i in range(D):
                W[g * D + i, h * D + i] = M[g, h]
    return W


def test_kronecker_mixing_equals_explicit_kronecker_matrix():
    seeded()
    block = DualStreamBlock(12, 8, 3, mixing="kronecker").double()
    with torch.no_grad():
        block.mix.copy_(torch.randn(3, 3))
    heads = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    flat = heads.transpose(1, 2).reshape(2, 5, 12)
    W = explicit_kronecker(block.mix.detach(), 4)
    torch.testing.assert_close(block.output_matrix(), W)
    torch.testing.assert_close(block.mix_heads(heads), flat @ W.T)


def test_independent_and_dense_mixing():
    seeded()
    heads = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    flat = heads.transpose(1, 2).reshape(2, 5, 12)
    indep = DualStreamBlock(12, 8, 3, mixing="independent").double()
    torch.testing.assert_close(indep.mix_heads(heads), flat)
    dense = DualStreamBlock(12, 8, 3, mixing="dense").double()
    with torch.no_grad():
        dense.mix.copy_(torch.randn(12, 12))
    torch.testing.assert_close(dense.mix_heads(heads), flat @ dense.mix.T)
    counts = {m: count_parameters(DualStreamBlock(12, 8, 3, mixing=m)) for m in ("independent", "kronecker", "dense")}
    assert counts["kronecker"] - counts["independent"] == 3 * 3
    assert counts["dense"] - counts["independent"] == 12 * 12


def test_attention_writes_token_stream_and_ffn_writes_context_stream():
    seeded()
    block = DualStreamBlock(8, 6, 2, mixing="dense").double()
    x = torch.randn(2, 5, 14, dtype=torch.float64)
    with torch.no_grad():
        block.w2.weight.zero_()
    torch.testing.assert_close(block(x)[..., 8:], x[..., 8:], rtol=0, atol=0)
    seeded()
    block = DualStreamBlock(8, 6, 2, mixing="dense").double()
    with torch.no_grad():
        block.wqkv.weight.zero_()
    torch.testing.assert_close(block(x)[..., :8], x[..., :8], rtol=0, atol=0)


def test_dual_stream_lm_is_causal():
    seeded()
    model = DualStreamLM(10, 8, 8, 2, 2, mixing="kronecker").double()
    idx = torch.randint(0, 10, (2, 9))
    idx2 = idx.clone()
    idx2[:, 4] = (idx[:, 4] + 1) % 10
    a, b = model(idx), model(idx2)
    assert a.shape == (2, 9, 10)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-12)
    assert (a[:, 4:] - b[:, 4:]).abs().amax() > 1e-6


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make", [
    lambda: EncoderDecoderTransformer(10, 15, 1, 4),
    lambda: EncoderDecoderTransformer(10, 16, 0, 4),
    lambda: MinimalTransformer(8, 10, 8, 16, 1, 2, similarity="cosine"),
    lambda: MinimalTransformer(8, 10, 8, 15, 1, 2),
    lambda: DualStreamBlock(12, 8, 3, mixing="full"),
    lambda: DualStreamBlock(10, 8, 4),
    lambda: GatedTransformerLM(10, 16, 2, 3),
], ids=["seq2seq-heads", "seq2seq-layers", "similarity", "minimal-heads", "mixing", "dual-heads", "gated-heads"])
def test_bad_config_raises(make):
    with pytest.raises(ValueError):
        make()


def test_bad_input_names_the_argument():
    model = small_seq2seq()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randint(0, 11, (1, 21)), torch.randint(0, 11, (1, 3)))
    with pytest.raises(TypeError, match="src"):
        model.encode(torch.randn(1, 4))
    with pytest.raises(ValueError, match="bos_id"):
        model.greedy_decode(torch.randint(0, 11, (1, 4)), 3, bos_id=11)
    with pytest.raises(ValueError, match="x"):
        minimal()(torch.randn(2, SEQ, D_IN + 1))
    with pytest.raises(ValueError, match="y"):
        GatedResidual(8)(torch.randn(2, 8), torch.randn(2, 7))
