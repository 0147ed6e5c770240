"""Signal propagation: the probe against a hand-written forward/backward, the moment rules against closed forms
and simulation, and the chapter's 192-layer claims for default Pre-LN, Post-LN and DeepScaleLM."""
import math

import pytest
import torch
from torch import nn

from minilib.feedforward import FeedForward
from minilib.models import Block, TransformerConfig, TransformerLM
from minilib.signal_propagation import (causal_average_moments, ffn_moments, gaussian_expectation, predicted_moments,
                                        residual_scales, signal_moments)

V, D, DEPTH, T = 64, 32, 192, 32


@pytest.mark.parametrize("pre_norm", [True, False])
def test_plain_residual_is_bit_identical(pre_norm):
    """Default models compute exactly the pre-DeepScaleLM expressions, forward and backward."""
    torch.manual_seed(0)
    model = TransformerLM(11, 16, 3, 4, max_len=32, pre_norm=pre_norm, **({} if pre_norm else dict(norm="layer")))
    idx = torch.randint(0, 11, (2, 9))
    x = model.embed(idx)
    for block in model.blocks:
        attend = lambda h: block.mixer(h, causal=True)
        if pre_norm:
            x = x + attend(block.norm1(x))
            x = x + block.ffn(block.norm2(x))
        else:
            x = block.norm1(x + attend(x))
            x = block.norm2(x + block.ffn(x))
    want = model.final_norm(x) @ model.embed.weight.T
    got = model(idx)
    assert torch.equal(got, want)
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(got.square().sum(), params), torch.autograd.grad(want.square().sum(), params)):
        assert torch.equal(a, b)


def test_scaled_residual_follows_its_equation():
    torch.manual_seed(0)
    block = Block(TransformerConfig(11, 16, 1, 4, d_ff=24, norm="layer", ffn="gelu", pos="none"))
    block.residual_scales = (0.6, 0.8)
    x = torch.randn(2, 7, 16)
    h = 0.6 * x + 0.8 * block.mixer(block.norm1(x), causal=True)
    torch.testing.assert_close(block(x), 0.6 * h + 0.8 * block.ffn(block.norm2(h)))


def test_residual_scales_are_normalised():
    for n in (1, 2, 12, 192):
        lam, beta = residual_scales(n)
        assert lam ** 2 + beta ** 2 == pytest.approx(1.0, abs=1e-15)
    assert residual_scales(192)[1] ** 2 == pytest.approx(1 / 192)
    with pytest.raises(ValueError, match="n_layers"):
        residual_scales(0)


def test_probe_matches_a_hand_written_pass():
    torch.manual_seed(0)
    model = TransformerLM(11, 16, 3, 4, max_len=16, norm="layer", pos="learned", ffn="gelu").double()
    idx = torch.randint(0, 11, (2, 9))
    got = signal_moments(model, idx, seed=3)
    xs = [(model.embed(idx) + model.pos_embed(torch.arange(9))).detach().requires_grad_()]
    for block in model.blocks:
        xs.append(block(xs[-1]))
    cot = torch.randn(xs[-1].shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = torch.autograd.grad((xs[-1] * cot).sum(), xs)
    want_f = torch.stack([x.pow(2).mean() for x in xs])
    want_b = torch.stack([g.pow(2).mean() for g in grads])
    torch.testing.assert_close(got["forward"], want_f.detach())
    torch.testing.assert_close(got["backward"], want_b / want_b[-1])
    assert all(p.grad is None for p in model.parameters())


def test_gaussian_expectation_is_exact_on_moments():
    assert gaussian_expectation(lambda z: z ** 2) == pytest.approx(1.0, abs=1e-12)
    assert gaussian_expectation(lambda z: z ** 4) == pytest.approx(3.0, abs=1e-10)
    assert gaussian_expectation(lambda a, b: a * b, 0.3) == pytest.approx(0.3, abs=1e-12)
    assert gaussian_expectation(lambda a, b: a ** 2 * b ** 2, 0.5) == pytest.approx(1 + 2 * 0.25, abs=1e-10)


def test_uniform_causal_attention_closed_forms():
    harmonic = sum(1 / (t + 1) for t in range(T))
    g_fwd, r_out, g_bwd, _ = causal_average_moments(T, 0.0)
    assert g_fwd == pytest.approx(harmonic / T, rel=1e-12)
    assert g_bwd == pytest.approx(harmonic / T, rel=1e-12)
    g_fwd, r_out, _, _ = causal_average_moments(T, 1.0)
    assert g_fwd == pytest.approx(1.0) and r_out == pytest.approx(1.0)


@pytest.mark.parametrize("r,score_var", [(0.0, 0.0), (0.4, 0.0), (0.2, 1.0)])
def test_attention_moments_against_simulation(r, score_var):
    g = torch.Generator().manual_seed(0)
    n = 4000
    shared = torch.randn(n, 1, generator=g, dtype=torch.float64)
    v = math.sqrt(r) * shared + math.sqrt(1 - r) * torch.randn(n, T, generator=g, dtype=torch.float64)
    scores = math.sqrt(score_var) * torch.randn(n, T, T, generator=g, dtype=torch.float64)
    A = torch.softmax(scores.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf")), -1)
    out = torch.einsum("nts,ns->nt", A, v)
    g_fwd, _, _, _ = causal_average_moments(T, r, score_var=score_var)
    assert out.pow(2).mean().item() == pytest.approx(g_fwd, rel=0.05)


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_ffn_moments_against_a_real_layer(kind):
    torch.manual_seed(0)
    ffn = FeedForward(64, 256, kind=kind).double()
    with torch.no_grad():
        for lin, std in ((ffn.w1, 1.3 / 8), (ffn.w2, 0.7 / 16)) + (((ffn.w3, 0.9 / 8),) if ffn.w3 is not None else ()):
            nn.init.normal_(lin.weight, std=std)
    q = 0.8
    x = (math.sqrt(q) * torch.randn(4000, 64, dtype=torch.float64)).requires_grad_()
    y = ffn(x)
    cot = torch.randn_like(y)
    (gx,) = torch.autograd.grad((y * cot).sum(), x)
    s = lambda lin: lin.in_features * lin.weight.pow(2).mean().item()
    g_fwd, _, g_bwd, _ = ffn_moments(kind, s1=s(ffn.w1), s2=s(ffn.w2), s3=s(ffn.w3) if ffn.w3 is not None else 1.0, q=q)
    assert y.pow(2).mean().item() == pytest.approx(g_fwd, rel=0.1)
    assert gx.pow(2).mean().item() == pytest.approx(g_bwd, rel=0.1)


def deep_model(pre_norm, init):
    torch.manual_seed(0)
    return TransformerLM(V, D, DEPTH, 4, max_len=T, norm="layer", pre_norm=pre_norm, ffn="gelu", init=init)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(0))


def test_deepscale_keeps_unit_moments_at_192_layers(tokens):
    model = deep_model(True, "deepscale")
    m = signal_moments(model, tokens)
    assert m["forward"].min() > 0.5 and m["forward"].max() < 2.0
    assert m["backward"].min() > 0.5 and m["backward"].max() < 2.0
    pred = predicted_moments(model, seq_len=T, r0=1 / V)
    assert pred["forward"].min() > 0.9 and pred["forward"].max() < 1.1


def test_default_pre_ln_variance_grows_as_predicted(tokens):
    model = deep_model(True, "default")
    m, pred = signal_moments(model, tokens), predicted_moments(model, seq_len=T, r0=1 / V)
    growth = m["forward"][-1] / m["forward"][0]
    assert growth > 10
    ratio = pred["forward"] / m["forward"]
    assert ratio.min() > 0.75 and ratio.max() < 1.33
    assert m["backward"][1] > 10 and pred["backward"][1] > 10  # gradients grow towards the input


def test_post_ln_gradients(tokens):
    """Default N(0, 0.02^2) at d=32: Post-LN gradients barely move; Xavier (the paper's baseline): they vanish."""
    default = signal_moments(deep_model(False, "default"), tokens)["backward"][1:]
    assert default.min() > 0.8 and default.max() <= 1.0 + 1e-12
    xavier_model = deep_model(False, "xavier")
    xavier = signal_moments(xavier_model, tokens)["backward"][1:]
    assert xavier.min() < 0.1
    assert predicted_moments(xavier_model, seq_len=T, r0=1 / V)["backward"][1:].min() < 0.1


def test_bad_input_raises(tokens):
    with pytest.raises(ValueError, match="init must be one of"):
        TransformerLM(5, 8, 1, 2, init="lecun")
    with pytest.raises(ValueError, match="idx must have 2 dimensions"):
        signal_moments(TransformerLM(5, 8, 1, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="seq_len"):
        causal_average_moments(0, 0.1)
    with pytest.raises(ValueError, match="kind"):
        ffn_moments("relu", s1=1.0, s2=1.0)
