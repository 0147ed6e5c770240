"""MLP-Mixer's token-mixing MLP and NiNformer's gate against per-channel matrix products written out."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.mixers import NiNformerMixer, TokenMLPMixer, ninformer_mix, token_mlp_mix

f64 = torch.float64


def per_channel(x, w1, w2):
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[2]):
            out[b, :, c] = w2 @ F.gelu(w1 @ x[b, :, c])
    return out


@settings(deadline=None, max_examples=20)
@given(L=st.integers(1, 9), H=st.integers(1, 7))
def test_token_mlp_mix_applies_one_mlp_to_every_channel(L, H):
    x = torch.randn(2, L, 3, dtype=f64)
    w1, w2 = torch.randn(H, L, dtype=f64), torch.randn(L, H, dtype=f64)
    torch.testing.assert_close(token_mlp_mix(x, w1, w2), per_channel(x, w1, w2))


@settings(deadline=None, max_examples=20)
@given(L=st.integers(1, 9), extra=st.integers(0, 4))
def test_causal_token_mlp_uses_lower_triangles_and_prefixes_agree(L, extra):
    N = L + extra
    x = torch.randn(2, L, 3, dtype=f64)
    w1, w2 = torch.randn(2, N, N, dtype=f64)
    want = per_channel(x, w1[:L, :L].tril(), w2[:L, :L].tril())
    torch.testing.assert_close(token_mlp_mix(x, w1, w2, causal=True), want)
    torch.testing.assert_close(token_mlp_mix(x[:, : L // 2 + 1], w1, w2, causal=True), want[:, : L // 2 + 1])


def test_ninformer_gates_the_projection_with_the_token_mlp():
    v, g = torch.randn(2, 2, 6, 3, dtype=f64)
    w1, w2 = torch.randn(5, 6, dtype=f64), torch.randn(6, 5, dtype=f64)
    torch.testing.assert_close(ninformer_mix(v, g, w1, w2), v * per_channel(g, w1, w2))


def test_modules_never_look_ahead_when_causal_and_fixed_weights_do_not_train():
    torch.manual_seed(0)
    for mixer in (TokenMLPMixer(10), NiNformerMixer(4, 10)):
        mixer = mixer.double()
        x = torch.randn(2, 8, 4, dtype=f64)
        x2 = x.clone()
        x2[:, 5] += 1
        torch.testing.assert_close(mixer(x)[:, :5], mixer(x2)[:, :5], rtol=0, atol=0)
    fixed = TokenMLPMixer(6, causal=False, trainable=False)
    assert not list(fixed.parameters()) and fixed.w1.shape == (6, 6)


def test_gradcheck_through_the_token_mlp():
    x = torch.randn(1, 5, 2, dtype=f64, requires_grad=True)
    w1 = torch.randn(5, 5, dtype=f64, requires_grad=True)
    w2 = torch.randn(5, 5, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b: token_mlp_mix(x, a, b, causal=True), (x, w1, w2))


def test_bad_input_fails_clearly():
    x = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match="w1 must be"):
        token_mlp_mix(x, torch.randn(4, 5), torch.randn(6, 4))
    with pytest.raises(ValueError, match="causal token mixing needs square"):
        token_mlp_mix(x, torch.randn(5, 5), torch.randn(5, 5), causal=True)
    with pytest.raises(ValueError, match="hidden must be seq_len"):
        TokenMLPMixer(6, hidden=4, causal=True)
    with pytest.raises(ValueError, match="g must have v's shape"):
        ninformer_mix(x, x[:, :5], torch.randn(6, 6), torch.randn(6, 6))
