"""BAM's mixture of attention: the soft mixture against its definition, cached decoding, one upcycled dense
attention reproduced exactly, training in a TransformerLM."""
import pytest
import torch

from minilib.attention import MultiHeadAttention
from minilib.models import TransformerLM, train
from minilib.moe import ExpertCaches, MixtureOfAttention
from tests.models_support import decode_in_pieces


def test_mixture_equals_the_router_weighted_sum_of_its_experts():
    torch.manual_seed(0)
    moa = MixtureOfAttention(8, 2, 3).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    p = torch.softmax(x @ moa.router.weight.T, -1)
    want = sum(p[..., e:e + 1] * moa.experts[e](x) for e in range(3))
    torch.testing.assert_close(moa(x), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(moa.probs.sum(-1), torch.ones(2, 7, dtype=torch.float64))


def test_identical_experts_with_a_zero_router_are_the_one_attention():
    torch.manual_seed(1)
    dense = MultiHeadAttention(8, 2).double()
    moa = MixtureOfAttention(8, 2, 4).double()
    for expert in moa.experts:
        expert.load_state_dict(dense.state_dict())
    torch.nn.init.zeros_(moa.router.weight)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(moa(x), dense(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pieces", [[1] * 6, [4, 2], [6], [2, 3, 1]])
def test_cached_decoding_equals_the_full_forward(pieces):
    torch.manual_seed(2)
    moa = MixtureOfAttention(8, 2, 2, rope=True).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    cache, outs, start = moa.new_cache(), [], 0
    for n in pieces:
        outs.append(moa(x[:, start:start + n], cache=cache))
        start += n
    torch.testing.assert_close(torch.cat(outs, 1), moa(x), rtol=0, atol=1e-12)


def test_cached_decoding_of_a_moa_language_model_equals_its_full_forward():
    torch.manual_seed(3)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=2, n_heads=2, d_ff=16, mixer="moa",
                          mixer_kwargs={"n_experts": 3}).double()
    idx = torch.randint(0, 7, (2, 9))
    caches = model.new_caches()
    assert all(isinstance(c, ExpertCaches) for c in caches)
    torch.testing.assert_close(decode_in_pieces(lambda piece: model(piece, caches=caches), idx, [1, 4, 5]), model(idx),
                               rtol=0, atol=1e-12)
    assert caches[0].length == 9


def test_registered_moa_trains_in_a_transformer_lm():
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=2, n_heads=2, d_ff=16, mixer="moa",
                          mixer_kwargs={"n_experts": 2})
    x = torch.randint(0, 7, (4, 10))
    losses = train(model, iter(lambda: (x, x.roll(-1, 1)), None), steps=20, lr=1e-2, progress=False)
    assert losses[-1] < 0.8 * losses[0]
    assert model.blocks[0].mixer.router.weight.grad is not None


@pytest.mark.parametrize("call, error, name", [
    (lambda: MixtureOfAttention(8, 2, 0), ValueError, "n_experts"),
    (lambda: MixtureOfAttention(8, 2, 2)(torch.randn(2, 3, 6)), ValueError, "x"),
    (lambda: MixtureOfAttention(8, 2, 2)(torch.randn(2, 3, 8), cache=[None]), TypeError, "cache")])
def test_bad_arguments_are_named(call, error, name):
    with pytest.raises(error, match=name):
        call()
