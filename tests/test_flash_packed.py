"""minilib.flash.packed: padding-free attention and a packed encoder layer against per-sequence and padded references."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from minilib.flash import packed_encoder_layer, varlen_attention
from tests.flash_reference import FAST, TOL, grads, qkv, reference


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

