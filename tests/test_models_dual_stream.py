"""DualStreamBlock: head mixing against the explicit Kronecker matrix, which stream each sublayer writes; causality."""
import pytest
import torch

from minilib.models import DualStreamBlock, DualStreamLM, count_parameters
from tests.models_support import assert_causal_lm, seeded


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
    assert_causal_lm(model, vocab_size=10, seq_len=9, changed=4)


@pytest.mark.parametrize("make, name", [
    (lambda: DualStreamBlock(12, 8, 3, mixing="full"), "mixing"), (lambda: DualStreamBlock(10, 8, 4), "d_token"),
    (lambda: DualStreamBlock(12, 0, 3), "d_context"), (lambda: DualStreamBlock(12, 8, 0), "n_heads"),
    (lambda: DualStreamLM(0, 12, 8, 1, 3), "vocab_size"), (lambda: DualStreamLM(10, 12, 8, 0, 3), "n_layers")])
def test_bad_config_is_named(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_input_names_the_argument():
    model = DualStreamLM(10, 12, 8, 1, 3)
    with pytest.raises(TypeError, match="idx"):
        model(torch.randn(1, 4))
    with pytest.raises(ValueError, match="idx holds ids outside"):
        model(torch.tensor([[0, 10]]))
    with pytest.raises(ValueError, match="d_token \\+ d_context = 20"):
        model.blocks[0](torch.randn(1, 3, 19))
