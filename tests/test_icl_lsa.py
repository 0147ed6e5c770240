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
