"""minilib.ssm.rodimus: the DDTS scan against a loop over an explicit (N, P) state with a decay per slot (fp64),
chunked = recurrent = two pieces, the mixer in a language model with cached decoding, shared-key window attention
against sdpa with the key copied to every head."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.attention import sdpa
from minilib.models import TransformerConfig, TransformerLM, train
from minilib.ssm import RodimusMixer, ddts_gates, rodimus_scan, shared_key_window_attention
from tests.models_support import decode_in_pieces

f64 = torch.float64


def inputs(Bt, L, N, P, seed):
    g = torch.Generator().manual_seed(seed)
    r, k, sel, temp = (torch.randn(Bt, L, N, dtype=f64, generator=g) for _ in range(4))
    u = torch.randn(Bt, L, P, dtype=f64, generator=g)
    return r, k, u, *ddts_gates(sel, temp)


def loop_reference(r, k, u, log_alpha, beta):
    Bt, L, N = r.shape
    S = torch.zeros(Bt, N, u.shape[-1], dtype=f64)
    out = []
    for t in range(L):
        k_hat = k[:, t] / k[:, t].norm(dim=-1, keepdim=True)
        S = torch.exp(log_alpha[:, t])[..., None] * S + (beta[:, t] * k_hat)[..., None] * u[:, t, None, :]
        out.append(torch.einsum("bnp,bn->bp", S, r[:, t]) / math.sqrt(N))
    return torch.stack(out, dim=1), S


def test_ddts_gates_written_out():
    sel, temp = torch.tensor([-2.0, 0.0, 3.0], dtype=f64), torch.tensor([0.5, -1.0, 2.0], dtype=f64)
    g, tau = torch.log1p(torch.exp(sel)), 1 / (1 + torch.exp(-temp))
    log_alpha, beta = ddts_gates(sel, temp)
    torch.testing.assert_close(log_alpha, -tau * g)
    torch.testing.assert_close(beta, torch.exp(tau * torch.log(g)))
    assert bool((log_alpha < 0).all())  # every slot forgets a little: alpha in (0, 1)


@settings(max_examples=20, deadline=None)
@given(L=st.integers(1, 40), chunk=st.sampled_from([1, 4, 16, 64]), N=st.integers(1, 5), seed=st.integers(0, 999))
def test_chunked_and_recurrent_equal_the_loop(L, chunk, N, seed):
    args = inputs(2, L, N, 3, seed)
    want, S_want = loop_reference(*args)
    for recurrent in (False, True):
        got, S = rodimus_scan(*args, chunk_size=chunk, recurrent=recurrent, return_state=True)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        torch.testing.assert_close(S, S_want, rtol=0, atol=1e-10)


def test_two_pieces_with_carried_state_equal_one_pass():
    r, k, u, la, b = inputs(2, 37, 4, 5, 1)
    whole = rodimus_scan(r, k, u, la, b, chunk_size=8)
    first, S = rodimus_scan(r[:, :20], k[:, :20], u[:, :20], la[:, :20], b[:, :20], chunk_size=8, return_state=True)
    second = rodimus_scan(r[:, 20:], k[:, 20:], u[:, 20:], la[:, 20:], b[:, 20:], recurrent=True, state=S)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-10)


def test_gradcheck():
    args = [a[:, :7].clone().requires_grad_() for a in inputs(1, 7, 2, 2, 2)]
    assert torch.autograd.gradcheck(lambda *a: rodimus_scan(*a, chunk_size=3), args)


def test_mixer_trains_in_a_language_model_and_decodes_with_its_cache():
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 2, 2, max_len=16, pos="none", mixer="rodimus",
                                            mixer_kwargs={"mem_size": 4, "chunk_size": 4}))
    keep = torch.exp(-F.softplus(model.blocks[0].mixer.gate_bias[:4]))
    assert keep.min() >= 0.9 - 1e-6 and keep.max() <= 0.999 + 1e-6  # the LM's Linear init left the gate bias alone
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[-1] < 0.3 * losses[0]
    mixer = RodimusMixer(8, mem_size=3, chunk_size=4).double()
    h = torch.randn(2, 13, 8, dtype=f64)
    cache = mixer.new_cache()
    pieces = decode_in_pieces(lambda part: mixer(part, cache=cache), h, [5, 6, 7, 11])
    torch.testing.assert_close(pieces, mixer(h), rtol=0, atol=1e-10)
    assert cache.state.shape == (2, 3, 16) and cache.length == 13


@pytest.mark.parametrize("L,window", [(1, 1), (10, 3), (9, 20)])
def test_shared_key_window_attention_is_sdpa_with_the_key_copied_to_every_head(L, window):
    g = torch.Generator().manual_seed(L)
    q, v = (torch.randn(2, 3, L, 4, dtype=f64, generator=g) for _ in range(2))
    k = torch.randn(2, 1, L, 4, dtype=f64, generator=g)
    t = torch.arange(L)
    allowed = (t[:, None] >= t[None, :]) & (t[:, None] - t[None, :] < window)
    want = sdpa(q, k.expand(2, 3, L, 4), v, mask=allowed)
    torch.testing.assert_close(shared_key_window_attention(q, k, v, window=window), want, rtol=0, atol=1e-12)


def test_bad_input_raises_naming_the_argument():
    r, k, u, la, b = inputs(1, 5, 2, 3, 0)
    with pytest.raises(ValueError, match="u"):
        rodimus_scan(r, k, u[:, :4], la, b)
    with pytest.raises(ValueError, match="state"):
        rodimus_scan(r, k, u, la, b, state=torch.zeros(1, 3, 3, dtype=f64))
    with pytest.raises(ValueError, match="temperature"):
        ddts_gates(r, r[..., :1])
    with pytest.raises(ValueError, match="k must be"):
        shared_key_window_attention(torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3), window=2)
    with pytest.raises(ValueError, match="mem_size"):
        RodimusMixer(8, mem_size=0)


def test_without_gates_the_scan_is_plain_causal_linear_attention():
    r, k, u, la, b = inputs(2, 9, 3, 4, 5)
    k_hat = k / k.norm(dim=-1, keepdim=True)
    want = ((r @ k_hat.transpose(1, 2)).tril() @ u) / math.sqrt(3)
    got = rodimus_scan(r, k, u, torch.zeros_like(la), torch.ones_like(b), chunk_size=4)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    mixer = RodimusMixer(8, mem_size=3, gated=False)
    assert not mixer.gated
    with pytest.raises(TypeError, match="gated"):
        RodimusMixer(8, gated="no")
