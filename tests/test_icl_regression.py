import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.icl import (bayes_mixture_predict, gd_predict, least_squares_predict, prompt_tokens, regression_prompts,
                         ridge_predict, task_values)


def _prompts(B, n, d, seed=0, **kw):
    return regression_prompts(B, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64, **kw)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 100))
def test_least_squares_equals_lstsq_minimum_norm(n, d, seed):
    xs, ys, _ = _prompts(3, n, d, seed)
    X, y = xs[:, :-1], ys[:, :-1, None]
    w = torch.stack([torch.linalg.lstsq(X[b], y[b], driver="gelsd").solution[:, 0] for b in range(3)])
    torch.testing.assert_close(least_squares_predict(xs, ys), (w * xs[:, -1]).sum(-1), rtol=1e-8, atol=1e-8)


def test_least_squares_recovers_a_noiseless_task_exactly():
    xs, ys, w = _prompts(4, 9, 5)
    torch.testing.assert_close(least_squares_predict(xs, ys), ys[:, -1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lam", [1e-3, 0.5, 10.0])
def test_ridge_equals_least_squares_on_augmented_rows(lam):
    xs, ys, _ = _prompts(3, 6, 4, noise=0.3)
    X, y = xs[:, :-1], ys[:, :-1]
    d = X.shape[-1]
    X_aug = torch.cat([X, lam ** 0.5 * torch.eye(d, dtype=X.dtype).expand(3, d, d)], 1)
    y_aug = torch.cat([y, torch.zeros(3, d, dtype=y.dtype)], 1)
    w = torch.linalg.lstsq(X_aug, y_aug[..., None]).solution[..., 0]
    torch.testing.assert_close(ridge_predict(xs, ys, lam), (w * xs[:, -1]).sum(-1), rtol=1e-9, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 10), d=st.integers(1, 5), steps=st.integers(0, 8), lr=st.floats(0.01, 1.0))
def test_gd_equals_the_closed_form_of_t_steps(n, d, steps, lr):
    # w_T = (I - (I - lr A)^T) A^+ b with A = X^T X / n, b = X^T y / n, written through the eigenbasis of A
    xs, ys, _ = _prompts(2, n, d, seed=n + d)
    X, y = xs[:, :-1], ys[:, :-1]
    A, b = X.transpose(1, 2) @ X / n, (X.transpose(1, 2) @ y[..., None])[..., 0] / n
    evals, U = torch.linalg.eigh(A)
    coef = (U.transpose(1, 2) @ b[..., None])[..., 0]
    # (1 - (1 - lr e)^T) / e, with its limit T * lr at e = 0
    safe = torch.where(evals.abs() > 1e-12, evals, torch.ones_like(evals))
    gain = torch.where(evals.abs() > 1e-12, (1 - (1 - lr * evals) ** steps) / safe, steps * lr * torch.ones_like(evals))
    w = (U @ (gain * coef)[..., None])[..., 0]
    torch.testing.assert_close(gd_predict(xs, ys, lr, steps), (w * xs[:, -1]).sum(-1), rtol=1e-8, atol=1e-8)


def test_gd_converges_to_least_squares():
    xs, ys, _ = _prompts(3, 20, 4)
    torch.testing.assert_close(gd_predict(xs, ys, 0.5, 400), least_squares_predict(xs, ys), rtol=1e-8, atol=1e-8)


def test_prompt_families_and_shifts():
    xs, ys, w = _prompts(2000, 3, 6, task="sparse", sparsity=2)
    assert ((w != 0).sum(-1) == 2).all()
    assert abs((w ** 2).sum(-1).mean().item() - 6) < 0.5
    xs3, _, w3 = _prompts(2000, 3, 6, x_scale=3.0, w_shift=2.0)
    assert abs(xs3.std().item() - 3) < 0.1 and abs(w3.mean().item() - 2) < 0.1
    xs, ys, w = _prompts(5, 4, 3, noise=0.0)
    torch.testing.assert_close(ys, (xs @ w[..., None])[..., 0])
    z = prompt_tokens(xs, ys)
    assert z.shape == (5, 5, 4) and (z[:, -1, -1] == 0).all() and (z[:, :-1, -1] == ys[:, :-1]).all()


def test_two_layer_net_targets_by_a_loop_over_units():
    xs, ys, w = _prompts(3, 4, 2, task="two_layer_net", hidden=5, noise=0.0)
    assert w.shape == (3, 5, 3)
    for b in range(3):
        for i in range(5):
            want = sum(float(w[b, j, 2]) * max(0.0, float(w[b, j, 0]) * float(xs[b, i, 0]) + float(w[b, j, 1]) * float(xs[b, i, 1]))
                       for j in range(5))
            assert math.isclose(float(ys[b, i]), want, rel_tol=1e-12, abs_tol=1e-12)


def test_two_layer_net_scale_and_linear_part():
    # E y^2 = d s^2 as in the linear family; and the population least-squares fit of f(x) = sum_j a_j relu(u_j.x) under
    # x ~ N(0, I) is w* = E[x f(x)] = sum_j a_j u_j / 2 (E[relu(u.x) x] = u / 2), checked against lstsq on 20000 samples
    _, ys, _ = _prompts(4000, 0, 6, task="two_layer_net", x_scale=0.5)
    assert abs((ys ** 2).mean().item() / (6 * 0.25) - 1) < 0.1
    xs, ys, w = _prompts(2, 20000, 3, task="two_layer_net", hidden=4, seed=1)
    fit = torch.linalg.lstsq(xs, ys[..., None]).solution[..., 0]
    linear_part = (w[..., 3:] * w[..., :3]).sum(1) / 2
    torch.testing.assert_close(fit, linear_part, rtol=0.0, atol=0.05)
    lin_w = _prompts(2, 3, 3, seed=2)
    torch.testing.assert_close(task_values(lin_w.xs, lin_w.w), lin_w.ys)


def test_bad_input():
    g = torch.Generator()
    with pytest.raises(ValueError, match="task"):
        regression_prompts(2, 3, 4, generator=g, task="dense")
    with pytest.raises(ValueError, match="sparsity"):
        regression_prompts(2, 3, 4, generator=g, task="sparse", sparsity=5)
    with pytest.raises(TypeError, match="generator"):
        regression_prompts(2, 3, 4, generator=0)
    with pytest.raises(ValueError, match="hidden"):
        regression_prompts(2, 3, 4, generator=g, task="two_layer_net", hidden=0)
    with pytest.raises(ValueError, match="w"):
        task_values(torch.zeros(2, 3, 4), torch.zeros(2, 6, 4))
    xs, ys, _ = _prompts(2, 3, 4)
    with pytest.raises(ValueError, match="ys"):
        least_squares_predict(xs, ys[:, :-1])
    with pytest.raises(ValueError, match="lam"):
        ridge_predict(xs, ys, 0.0)
    with pytest.raises(ValueError, match="lr"):
        gd_predict(xs, ys, -1.0)


def test_bayes_mixture_reduces_to_ridge_and_to_one_coordinate():
    xs, ys, _ = _prompts(20, 4, 3, noise=0.3)
    torch.testing.assert_close(bayes_mixture_predict(xs, ys, 0.3, 0.0), ridge_predict(xs, ys, 0.09), rtol=1e-9, atol=1e-9)
    # p_sparse = 1 with d = 1: one hypothesis, w = s e_1 with s ~ N(0, 1): scalar ridge with lam = noise^2 / d
    xs1, ys1, _ = _prompts(20, 4, 1, noise=0.3)
    torch.testing.assert_close(bayes_mixture_predict(xs1, ys1, 0.3, 1.0), ridge_predict(xs1, ys1, 0.09), rtol=1e-9, atol=1e-9)


def test_bayes_mixture_posterior_weights_by_enumeration():
    # a brute-force check of the evidence: the weight of each hypothesis from the Gaussian density via torch.distributions
    xs, ys, _ = _prompts(5, 3, 2, noise=0.5, task="sparse", sparsity=1)
    X, y, xq = xs[:, :-1], ys[:, :-1], xs[:, -1]
    priors = [(0.6, torch.eye(2, dtype=torch.float64)), (0.2, torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64))),
              (0.2, torch.diag(torch.tensor([0.0, 2.0], dtype=torch.float64)))]
    want = []
    for b in range(5):
        logs, means = [], []
        for pi, S in priors:
            C = X[b] @ S @ X[b].T + 0.25 * torch.eye(3, dtype=torch.float64)
            logs.append(math.log(pi) + torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), C).log_prob(y[b]))
            means.append(xq[b] @ S @ X[b].T @ torch.linalg.solve(C, y[b]))
        w = torch.softmax(torch.stack(logs), 0)
        want.append((w * torch.stack(means)).sum())
    torch.testing.assert_close(bayes_mixture_predict(xs, ys, 0.5, 0.4), torch.stack(want), rtol=1e-9, atol=1e-9)


def test_bayes_mixture_bad_input():
    xs, ys, _ = _prompts(2, 3, 4)
    with pytest.raises(ValueError, match="noise"):
        bayes_mixture_predict(xs, ys, 0.0, 0.5)
    with pytest.raises(ValueError, match="p_sparse"):
        bayes_mixture_predict(xs, ys, 0.1, 1.5)
