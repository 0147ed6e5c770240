"""Pre-LN == Pre-RMSNorm == Pre-CRMSNorm (same logits, fp64), CRMSNorm/BiasNorm/Swoosh against their equations."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.activations import swish, swoosh_l, swoosh_r
from minilib.models import TransformerLM, train
from minilib.norms import BiasNorm, CRMSNorm, LayerNorm, RMSNorm
from minilib.models import ConvertedLM, to_pre_crmsnorm, to_pre_rmsnorm

POSITIONS = ["rope", "sinusoidal", "learned", "alibi", "none"]


def perturbed_pre_ln(pos, ffn, *, d=16, vocab=13, seed=0):
    """A Pre-LN model whose gains, biases and weights are all far from their initial values."""
    torch.manual_seed(seed)
    model = TransformerLM(vocab, d, 2, 4, max_len=32, norm="layer", pos=pos, ffn=ffn).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("ffn", ["swiglu", "gelu"])
@pytest.mark.parametrize("pos", POSITIONS)
def test_conversions_keep_logits(pos, ffn):
    model = perturbed_pre_ln(pos, ffn)
    idx = torch.randint(0, 13, (3, 20), generator=torch.Generator().manual_seed(1))
    want = model(idx)
    rms, crms = to_pre_rmsnorm(model), to_pre_crmsnorm(model)
    torch.testing.assert_close(rms(idx), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(crms(idx), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(to_pre_crmsnorm(rms)(idx), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(model(idx), want, rtol=0, atol=0)  # the source model is untouched


def test_trained_char_lm_converts_exactly():
    """The chapter's claim: a 2-layer Pre-LN char-LM trained 100 steps, converted, same logits to 1e-10 in fp64."""
    torch.manual_seed(0)
    text = "the cat sat on the mat. the dog sat on the log. " * 8
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            start = torch.randint(0, len(data) - 33, (16,), generator=g)
            window = torch.stack([data[s:s + 33] for s in start])
            yield window[:, :-1], window[:, 1:]

    model = TransformerLM(len(chars), 32, 2, 4, max_len=32, norm="layer", pos="learned")
    losses = train(model, batches(), steps=100, lr=3e-3, progress=False)
    assert losses[-1] < 0.7 * losses[0]
    model = model.double()
    idx = next(batches())[0]
    want = model(idx)
    assert (to_pre_rmsnorm(model)(idx) - want).abs().max() < 1e-10
    assert (to_pre_crmsnorm(model)(idx) - want).abs().max() < 1e-10


def stream_states(model, idx):
    states = []
    hooks = [b.register_forward_hook(lambda _m, _a, out: states.append(out)) for b in model.blocks]
    model(idx)
    for h in hooks:
        h.remove()
    return states


def test_structure_of_converted_models():
    model = perturbed_pre_ln("learned", "swiglu", d=12)
    rms, crms = to_pre_rmsnorm(model), to_pre_crmsnorm(model)
    assert isinstance(rms, ConvertedLM) and isinstance(crms, ConvertedLM)
    assert not any(isinstance(m, LayerNorm) for m in list(rms.modules()) + list(crms.modules()))
    assert sum(isinstance(m, RMSNorm) for m in rms.modules()) == 5
    assert sum(isinstance(m, CRMSNorm) for m in crms.modules()) == 5
    assert rms.d_stream == 12 and crms.d_stream == 11
    torch.testing.assert_close(rms.blocks[0].norm1.weight, model.blocks[0].norm1.weight)
    idx = torch.randint(0, 13, (2, 9))
    for x in stream_states(rms, idx):
        assert x.mean(dim=-1).abs().max() < 1e-12
    for x in stream_states(model, idx):
        assert x.mean(dim=-1).abs().max() > 1e-3  # the Pre-LN stream itself is not zero-mean


def test_a_nonzero_mean_write_breaks_equivalence():
    """The check is sensitive: give W_O outputs a mean again and the RMSNorm model's logits move."""
    model = perturbed_pre_ln("rope", "gelu")
    rms = to_pre_rmsnorm(model)
    idx = torch.randint(0, 13, (2, 10))
    with torch.no_grad():
        rms.blocks[0].mixer.wo.weight.add_(0.1)
    assert (rms(idx) - model(idx)).abs().max() > 1e-3


def test_conversion_rejects_other_models():
    with pytest.raises(ValueError, match="Pre-LN"):
        to_pre_rmsnorm(TransformerLM(5, 8, 1, 2, norm="layer", pre_norm=False))
    with pytest.raises(ValueError, match="Pre-LN"):
        to_pre_rmsnorm(TransformerLM(5, 8, 1, 2, norm="rms"))
    with pytest.raises(TypeError, match="TransformerLM"):
        to_pre_rmsnorm(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="to_pre_rmsnorm"):
        to_pre_crmsnorm(torch.nn.Linear(2, 2))


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 40), seed=st.integers(0, 999), eps=st.sampled_from([0.0, 1e-6]))
def test_crmsnorm_is_rmsnorm_of_the_implied_vector(d, seed, eps):
    z = torch.randn(3, 5, d - 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = torch.cat([z, -z.sum(dim=-1, keepdim=True)], dim=-1)
    ref = torch.nn.RMSNorm(d, eps=eps, elementwise_affine=False).double()
    torch.testing.assert_close(CRMSNorm(d, eps=eps)(z), ref(x)[..., : d - 1], rtol=0, atol=1e-12)


def test_crmsnorm_bad_input():
    with pytest.raises(ValueError, match="ends? in the normalised size 4"):
        CRMSNorm(5)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="d >= 2"):
        CRMSNorm(1)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 33), seed=st.integers(0, 999))
def test_biasnorm_matches_its_equation(d, seed):
    g = torch.Generator().manual_seed(seed)
    norm = BiasNorm(d).double()
    with torch.no_grad():
        norm.bias.copy_(torch.randn(d, generator=g, dtype=torch.float64))
        norm.log_scale.fill_(0.3)
    x = 2 * torch.randn(4, 3, d, generator=g, dtype=torch.float64)
    rms = torch.linalg.vector_norm(x - norm.bias, dim=-1, keepdim=True) / math.sqrt(d)
    torch.testing.assert_close(norm(x), x / rms * math.exp(0.3), rtol=1e-12, atol=0)


def test_biasnorm_without_bias_is_rmsnorm_with_gain_exp_gamma():
    norm = BiasNorm(7).double()
    with torch.no_grad():
        norm.log_scale.fill_(-0.4)
    x = torch.randn(5, 7, dtype=torch.float64)
    want = F.rms_norm(x, (7,), weight=torch.full((7,), math.exp(-0.4), dtype=torch.float64), eps=0.0)
    torch.testing.assert_close(norm(x), want, rtol=1e-12, atol=0)


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 33), seed=st.integers(0, 999))
def test_biasnorm_keeps_length_information_that_layernorm_removes(d, seed):
    """Scaling x by c leaves LayerNorm's output unchanged, but BiasNorm's output RMS grows with c (b != 0, x.b <= 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    if torch.dot(x, b) > 0:
        b = -b
    bias_norm, layer_norm = BiasNorm(d).double(), LayerNorm(d, eps=0.0).double()
    with torch.no_grad():
        bias_norm.bias.copy_(b)
    scales = [0.25, 0.5, 1.0, 2.0, 4.0]
    out_rms = torch.stack([bias_norm(c * x).pow(2).mean().sqrt() for c in scales])
    assert torch.all(out_rms[1:] > out_rms[:-1] * (1 + 1e-9))
    for c in scales:
        torch.testing.assert_close(layer_norm(c * x), layer_norm(x), rtol=0, atol=1e-10)


def test_swoosh_and_swish_match_their_equations():
    x = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(swoosh_r(x), torch.log1p(torch.exp(x - 1)) - 0.08 * x - 0.313261687, rtol=0, atol=1e-12)
    torch.testing.assert_close(swoosh_l(x), torch.log1p(torch.exp(x - 4)) - 0.08 * x - 0.035, rtol=0, atol=1e-12)
    torch.testing.assert_close(swish(x), F.silu(x), rtol=0, atol=1e-12)
    assert abs(swoosh_r(torch.zeros((), dtype=torch.float64)).item()) < 1e-9


def test_swoosh_slopes_never_vanish():
    x = torch.tensor([-40.0, 0.0, 40.0], dtype=torch.float64, requires_grad=True)
    (grad_r,) = torch.autograd.grad(swoosh_r(x).sum(), x)
    (grad_swish,) = torch.autograd.grad(swish(x).sum(), x)
    torch.testing.assert_close(grad_r[[0, 2]], torch.tensor([-0.08, 0.92], dtype=torch.float64), rtol=0, atol=1e-9)
    assert abs(grad_swish[0].item()) < 1e-12  # Swish's gradient dies on the left; Swoosh's does not


def test_activations_reject_integer_input():
    with pytest.raises(TypeError, match="floating"):
        swoosh_r(torch.arange(3))
