import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.icl import (LinearSelfAttention, gd_predict, looped_lsa, lsa_forward, lsa_gd_weights, lsa_global_minimum,
                         lsa_predict, prompt_tokens, regression_prompts)


def _prompts(B, n, d, seed=0, **kw):
    return regression_prompts(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64, **kw)


def test_lsa_forward_equals_the_per_token_sum():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    w_kq, w_pv = (torch.randn(4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    out = lsa_forward(z, w_kq, w_pv)
    n = 4
    for b in range(2):
        for j in range(5):
            ref = z[b, j] + sum((z[b, i] @ w_kq @ z[b, j]) * (w_pv @ z[b, i]) for i in range(n)) / n
            torch.testing.assert_close(out[b, j], ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 6), steps=st.integers(0, 6), lr=st.floats(0.01, 1.0))
def test_looped_gd_weights_equal_t_steps_of_gd(n, d, steps, lr):
    xs, ys, _ = _prompts(3, n, d, seed=n * d)
    w_kq, w_pv = lsa_gd_weights(d, lr)
    pred = lsa_predict(looped_lsa(prompt_tokens(xs, ys), w_kq, w_pv, steps))
    torch.testing.assert_close(pred, gd_predict(xs, ys, lr, steps), rtol=1e-10, atol=1e-10)


def test_one_gd_step_is_the_kernel_sum():
    xs, ys, _ = _prompts(4, 7, 3)
    w_kq, w_pv = lsa_gd_weights(3, 0.4)
    ref = 0.4 / 7 * (ys[:, :-1, None] * xs[:, :-1] * xs[:, -1:]).sum((1, 2))
    torch.testing.assert_close(lsa_predict(lsa_forward(prompt_tokens(xs, ys), w_kq, w_pv)), ref, rtol=1e-12, atol=1e-12)


def test_global_minimum_minimises_the_sampled_loss():
    # the loss of the predictor x_q^T G (1/n) sum y_i x_i is quadratic in G; its sample minimiser approaches G*
    d, n = 3, 6
    cov = torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, n + 1, d, generator=g, dtype=torch.float64) @ cov.sqrt()
    w = torch.randn(200_000, d, generator=g, dtype=torch.float64)
    y = (x @ w[..., None])[..., 0]
    h = (y[:, :-1, None] * x[:, :-1]).mean(1)                 # (1/n) sum y_i x_i
    feats = (x[:, -1, :, None] * h[:, None, :]).reshape(-1, d * d)   # x_q h^T, flattened
    G = torch.linalg.lstsq(feats, y[:, -1:]).solution.reshape(d, d)
    G_star = lsa_global_minimum(cov, n)
    assert (G - G_star).norm() / G_star.norm() < 0.03


def test_module_and_looping():
    torch.manual_seed(0)
    m = LinearSelfAttention(3, depth=4, looped=True)
    assert m.w_kq.shape == (1, 4, 4)
    xs, ys, _ = _prompts(2, 5, 3)
    z = prompt_tokens(xs, ys).float()
    ref = lsa_predict(looped_lsa(z, m.w_kq[0], m.w_pv[0], 4))
    torch.testing.assert_close(m(z), ref)
    deep = LinearSelfAttention(3, depth=2)
    z2 = lsa_forward(lsa_forward(z, deep.w_kq[0], deep.w_pv[0]), deep.w_kq[1], deep.w_pv[1])
    torch.testing.assert_close(deep(z), lsa_predict(z2))
    # gradients flow to every layer
    deep(z).sum().backward()
    assert deep.w_kq.grad.abs().sum() > 0


def test_bad_input():
    z = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="w_kq"):
        lsa_forward(z, torch.zeros(2, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="z"):
        lsa_forward(torch.zeros(2, 1, 3), torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="lr"):
        lsa_gd_weights(3, 0.0)
    with pytest.raises(ValueError, match="steps"):
        looped_lsa(z, torch.zeros(3, 3), torch.zeros(3, 3), -1)
    with pytest.raises(ValueError, match="cov"):
        lsa_global_minimum(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="depth"):
        LinearSelfAttention(3, depth=0)


def _lsa_mixer_by_loops(mixer, x):
    """y_t = W_O (1/(t+1)) sum_{s<=t} (q_t . k_s) v_s, head by head, position by position."""
    B, T, d = x.shape
    H, D = mixer.n_heads, d // mixer.n_heads
    q, k, v = (x @ w.weight.T for w in (mixer.wq, mixer.wk, mixer.wv))
    out = torch.zeros_like(x)
    for b in range(B):
        for t in range(T):
            for h in range(H):
                sl = slice(h * D, (h + 1) * D)
                out[b, t, sl] = sum((q[b, t, sl] @ k[b, s, sl]) * v[b, s, sl] for s in range(t + 1)) / (t + 1)
    return out @ mixer.wo.weight.T


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 9), heads=st.sampled_from([1, 2, 4]), cut=st.integers(1, 8))
def test_causal_lsa_mixer_equals_the_loop_and_decodes_in_pieces(T, heads, cut):
    from minilib.icl import CausalLinearSelfAttention
    from tests.models_support import decode_in_pieces

    torch.manual_seed(T * 7 + heads)
    mixer = CausalLinearSelfAttention(8, heads).double()
    x = torch.randn(2, T, 8, dtype=torch.float64)
    full = mixer(x)
    torch.testing.assert_close(full, _lsa_mixer_by_loops(mixer, x), rtol=1e-10, atol=1e-12)
    cache = mixer.new_cache()
    pieces = decode_in_pieces(lambda piece: mixer(piece, cache=cache), x, sorted({min(cut, T), min(cut + 2, T)}))
    torch.testing.assert_close(pieces, full, rtol=1e-10, atol=1e-12)
    assert cache.length == T


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 10), d=st.integers(1, 5), lr=st.floats(0.05, 1.0))
def test_causal_lsa_mixer_with_gd_weights_takes_the_gd_step_at_the_query(n, d, lr):
    from minilib.icl import CausalLinearSelfAttention

    xs, ys, _ = _prompts(2, n, d, seed=n + 10 * d)
    z = prompt_tokens(xs, ys)
    w_kq, w_pv = lsa_gd_weights(d, lr * (n + 1) / n)   # the query's own key dilutes the mean by n / (n + 1)
    mixer = CausalLinearSelfAttention(d + 1, 1).double()
    with torch.no_grad():
        mixer.wq.weight.copy_(w_kq)
        mixer.wk.weight.copy_(torch.eye(d + 1, dtype=torch.float64))
        mixer.wv.weight.copy_(w_pv)
        mixer.wo.weight.copy_(torch.eye(d + 1, dtype=torch.float64))
    pred = -(z + mixer(z))[:, -1, -1]
    torch.testing.assert_close(pred, gd_predict(xs, ys, lr), rtol=1e-10, atol=1e-12)


def test_lsa_mixer_trains_in_a_transformer_lm_and_generates_with_its_cache():
    import math

    import minilib  # noqa: F401  (registers "lsa")
    from minilib.models import TransformerConfig, TransformerLM, train
    from tests.models_support import assert_causal_lm, repeated_triples, seeded

    g = seeded(4)
    model = TransformerLM(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=4, max_len=64, pos="learned",
                                            mixer="lsa"))
    assert_causal_lm(model, vocab_size=12, seq_len=10, changed=5)

    losses = train(model, repeated_triples(g), steps=60, lr=1e-2, warmup_steps=5, progress=False)
    assert sum(losses[-5:]) / 5 < math.log(12) - 0.3   # ln 12 = 2.48: better than ignoring the context
    model.eval()
    prompt = torch.tensor([[0, 1, 2, 0, 1]])
    with torch.no_grad():
        torch.testing.assert_close(model.generate(prompt, 12, temperature=0),
                                   model.generate(prompt, 12, temperature=0, use_cache=False))


def test_lsa_mixer_bad_input():
    from minilib.icl import CausalLinearSelfAttention

    with pytest.raises(ValueError, match="n_heads"):
        CausalLinearSelfAttention(6, 4)
    mixer = CausalLinearSelfAttention(8, 2)
    with pytest.raises(ValueError, match="x"):
        mixer(torch.randn(2, 3, 6))
    with pytest.raises(TypeError, match="cache"):
        mixer(torch.randn(2, 3, 8), cache=object())
