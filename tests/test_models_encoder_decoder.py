"""EncoderDecoderTransformer: cross-attention against torch's MultiheadAttention, causality, cached greedy decoding."""
import pytest
import torch

from minilib.models import EncoderDecoderTransformer
from tests.models_support import seeded


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


@pytest.mark.parametrize("kwargs, name", [
    (dict(vocab_size=10, d_model=15, n_layers=1, n_heads=4), "d_model"),
    (dict(vocab_size=10, d_model=16, n_layers=0, n_heads=4), "n_layers"),
    (dict(vocab_size=0, d_model=16, n_layers=1, n_heads=4), "vocab_size"),
    (dict(vocab_size=10, d_model=16, n_layers=1, n_heads=4, n_decoder_layers=0), "n_decoder_layers"),
    (dict(vocab_size=10, d_model=16, n_layers=1, n_heads=4, d_ff=0), "d_ff"),
    (dict(vocab_size=10, d_model=16, n_layers=1, n_heads=4, max_len=-1), "max_len"),
])
def test_bad_sizes_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EncoderDecoderTransformer(**kwargs)


def test_bad_input_names_the_argument():
    model = small_seq2seq()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randint(0, 11, (1, 21)), torch.randint(0, 11, (1, 3)))
    with pytest.raises(TypeError, match="src"):
        model.encode(torch.randn(1, 4))
    with pytest.raises(ValueError, match="src"):
        model.encode(torch.tensor([[1, 11]]))
    with pytest.raises(TypeError, match="tgt"):
        model.decode(torch.randn(1, 4), model.encode(torch.zeros(1, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match="bos_id"):
        model.greedy_decode(torch.randint(0, 11, (1, 4)), 3, bos_id=11)
