r"""In-context linear regression: prompts of ``(x_i, y_i)`` pairs and a query, and the reference learners.

A prompt holds ``n`` examples and one query, ``x_i \sim \mathcal N(0, s^2 I_d)``, ``w \sim \mathcal N(\mu, I_d)``
(``task="sparse"``: only ``k`` random coordinates of ``w`` are non-zero), ``y_i = w^\top x_i + \sigma\varepsilon_i``;
``task="two_layer_net"`` replaces ``w^\top x`` by a random ReLU network :math:`\sum_j a_j\,\mathrm{relu}(u_j^\top x)`.
The learners read the ``n`` examples and predict ``y`` at the query: least squares, ridge and ``k`` steps of
gradient descent from ``w = 0`` on :math:`L(w) = \frac{1}{2n}\sum_i (w^\top x_i - y_i)^2`
:cite:`akyurek2023learning,garg2022what`.
"""
from __future__ import annotations

from typing import NamedTuple

import math

import torch

from minilib._checks import check_nonnegative_int, check_number, check_positive_int, require_tensor

__all__ = ["RegressionPrompts", "regression_prompts", "task_values", "prompt_tokens", "least_squares_predict", "ridge_predict",
           "gd_predict", "bayes_mixture_predict"]

#: the task families :func:`regression_prompts` draws ``w`` from
TASKS = ("linear", "sparse", "two_layer_net")


class RegressionPrompts(NamedTuple):
    """``xs (B, n+1, d)`` (the last row is the query), ``ys (B, n+1)`` (the last entry is the query's target),
    ``w`` the task of each prompt: ``(B, d)``, the weight vector, for the linear families; ``(B, hidden, d+1)`` for
    ``two_layer_net``, one row per hidden unit ``j`` holding its input weights ``u_j`` (first ``d`` entries) and its
    output weight ``a_j`` (last entry). :func:`task_values` evaluates either form at new inputs."""

    xs: torch.Tensor
    ys: torch.Tensor
    w: torch.Tensor


def regression_prompts(batch: int, n: int, d: int, *, generator: torch.Generator, noise: float = 0.0,
                       task: str = "linear", sparsity: int = 1, hidden: int = 100, x_scale: float = 1.0,
                       w_shift: float = 0.0, dtype: torch.dtype = torch.float32) -> RegressionPrompts:
    r"""``batch`` prompts of ``n`` examples and one query in ``d`` dimensions.

    $$ x_i \sim \mathcal N(0, s^2 I_d),\quad w \sim \mathcal N(\mu \mathbf 1, I_d),\quad
       y_i = w^\top x_i + \sigma \varepsilon_i, $$
    with ``s = x_scale`` (a covariate shift when it differs from training), ``mu = w_shift`` (a task shift) and
    ``sigma = noise``. ``task="sparse"`` keeps ``sparsity`` random coordinates of ``w``, scaled by
    ``sqrt(d / sparsity)`` so ``E|w|^2 = d`` in both families. ``task="two_layer_net"`` draws ``hidden`` units,
    :math:`u_j \sim \mathcal N(0, I_d)`, :math:`a_j \sim \mathcal N(0, 2/\text{hidden})`, and sets
    :math:`y_i = \sum_j a_j\, \mathrm{relu}(u_j^\top x_i) + \sigma\varepsilon_i` (so :math:`E\,y^2 = d s^2` as in the
    linear family; ``w_shift`` shifts the ``u_j``). The returned ``w`` is then ``(B, hidden, d+1)``, rows ``(u_j, a_j)``.
    :cite:`garg2022what`
    """
    check_positive_int("batch", batch)
    check_nonnegative_int("n", n)
    check_positive_int("d", d)
    check_number("noise", noise, low=0.0)
    check_number("x_scale", x_scale, positive=True)
    check_number("w_shift", w_shift)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "sparse" and not 1 <= check_positive_int("sparsity", sparsity) <= d:
        raise ValueError(f"sparsity must be in 1..d={d}, got {sparsity}")
    check_positive_int("hidden", hidden)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    xs = x_scale * torch.randn(batch, n + 1, d, generator=generator, dtype=torch.float64)
    if task == "two_layer_net":
        u = torch.randn(batch, hidden, d, generator=generator, dtype=torch.float64) + w_shift
        a = torch.randn(batch, hidden, 1, generator=generator, dtype=torch.float64) * (2 / hidden) ** 0.5
        w = torch.cat([u, a], -1)
    else:
        w = torch.randn(batch, d, generator=generator, dtype=torch.float64)
        if task == "sparse":
            keep = torch.rand(batch, d, generator=generator, dtype=torch.float64).argsort(-1) < sparsity
            w = w * keep * (d / sparsity) ** 0.5
        w = w + w_shift
    ys = task_values(xs, w) + noise * torch.randn(batch, n + 1, generator=generator, dtype=torch.float64)
    return RegressionPrompts(xs.to(dtype), ys.to(dtype), w.to(dtype))


def task_values(xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r"""The noiseless targets of tasks ``w`` at inputs ``xs (B, m, d)``: ``(B, m)``.

    ``w (B, d)``: :math:`f(x) = w^\top x`; ``w (B, hidden, d+1)`` (rows :math:`(u_j, a_j)`, see
    :class:`RegressionPrompts`): :math:`f(x) = \sum_j a_j\, \mathrm{relu}(u_j^\top x)`. :cite:`garg2022what`
    """
    require_tensor("xs", xs, ndim=3, floating=True)
    require_tensor("w", w, floating=True)
    d = xs.shape[-1]
    if w.ndim == 2 and w.shape == (xs.shape[0], d):
        return (xs @ w[:, :, None])[..., 0]
    if w.ndim == 3 and w.shape[0] == xs.shape[0] and w.shape[-1] == d + 1:
        hidden = torch.relu(xs @ w[..., :d].transpose(1, 2))                  # (B, m, hidden)
        return (hidden @ w[..., d:])[..., 0]
    raise ValueError(f"w must be (B, d) = {(xs.shape[0], d)} or (B, hidden, d+1) = {(xs.shape[0], 'hidden', d + 1)} "
                     f"for xs of shape {tuple(xs.shape)}, got {tuple(w.shape)}")


def _check_prompt(xs, ys) -> None:
    require_tensor("xs", xs, ndim=3, floating=True)
    require_tensor("ys", ys, ndim=2, floating=True)
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape (B, n+1) = {tuple(xs.shape[:2])} to match xs {tuple(xs.shape)}, "
                         f"got {tuple(ys.shape)}")


def prompt_tokens(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    r"""The prompt as tokens ``z_i = (x_i, y_i)``, the query's ``y`` slot set to 0: ``(B, n+1, d+1)``.

    $$ Z = \begin{pmatrix} x_1 & \cdots & x_n & x_q \\ y_1 & \cdots & y_n & 0 \end{pmatrix}^\top. $$
    :cite:`vonoswald2023transformers`
    """
    _check_prompt(xs, ys)
    z = torch.cat([xs, ys[..., None]], -1)
    z[:, -1, -1] = 0.0
    return z


def least_squares_predict(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    r"""Minimum-norm least squares on the ``n`` examples, evaluated at the query: ``(B,)``.

    $$ \hat w = X^{+} y, \qquad \hat y_q = \hat w^\top x_q \quad (X^{+}\text{: pseudo-inverse; } n < d
       \text{ gives the minimum-norm interpolant}). $$
    Computed in float64, returned in the input dtype. :cite:`akyurek2023learning`
    """
    _check_prompt(xs, ys)
    X, y = xs[:, :-1].double(), ys[:, :-1].double()
    w = (torch.linalg.pinv(X) @ y[..., None])[..., 0]
    return (w * xs[:, -1].double()).sum(-1).to(xs.dtype)


def ridge_predict(xs: torch.Tensor, ys: torch.Tensor, lam: float) -> torch.Tensor:
    r"""Ridge regression on the ``n`` examples, evaluated at the query: ``(B,)``.

    $$ \hat w = (X^\top X + \lambda I)^{-1} X^\top y. $$
    With ``w ~ N(0, I)`` and noise ``sigma``, ``lam = sigma**2`` is the Bayes posterior mean.
    :cite:`akyurek2023learning`
    """
    _check_prompt(xs, ys)
    check_number("lam", lam, positive=True)
    X, y = xs[:, :-1].double(), ys[:, :-1].double()
    gram = X.transpose(1, 2) @ X + lam * torch.eye(X.shape[-1], dtype=torch.float64)
    w = torch.linalg.solve(gram, X.transpose(1, 2) @ y[..., None])[..., 0]
    return (w * xs[:, -1].double()).sum(-1).to(xs.dtype)


def gd_predict(xs: torch.Tensor, ys: torch.Tensor, lr: float, steps: int = 1) -> torch.Tensor:
    r"""``steps`` steps of gradient descent from ``w = 0`` on the in-context loss, evaluated at the query: ``(B,)``.

    $$ w_{t+1} = w_t - \eta \nabla L(w_t) = w_t + \frac{\eta}{n} X^\top (y - X w_t), \qquad
       \hat y_q = w_T^\top x_q. $$
    One step gives :math:`\hat y_q = \frac{\eta}{n}\sum_i y_i\, x_i^\top x_q`. :cite:`vonoswald2023transformers`
    """
    _check_prompt(xs, ys)
    check_number("lr", lr, positive=True)
    check_nonnegative_int("steps", steps)
    X, y = xs[:, :-1], ys[:, :-1]
    n = X.shape[1]
    if n == 0:
        raise ValueError(f"gd_predict needs at least one example, got xs of shape {tuple(xs.shape)}")
    w = xs.new_zeros(xs.shape[0], xs.shape[-1])
    for _ in range(steps):
        residual = y - (X @ w[:, :, None])[..., 0]
        w = w + lr / n * (X.transpose(1, 2) @ residual[..., None])[..., 0]
    return (w * xs[:, -1]).sum(-1)


def bayes_mixture_predict(xs: torch.Tensor, ys: torch.Tensor, noise: float, p_sparse: float) -> torch.Tensor:
    r"""The Bayes posterior mean at the query under the mixture prior of :func:`regression_prompts`: ``(B,)``.

    With probability ``1 - p_sparse`` the task is dense, :math:`w \sim \mathcal N(0, I_d)`; otherwise it is 1-sparse,
    :math:`w = s\, e_j` with ``j`` uniform and :math:`s \sim \mathcal N(0, d)`. Each hypothesis ``h`` is Gaussian,
    :math:`w \sim \mathcal N(0, S_h)`, so with :math:`C_h = X S_h X^\top + \sigma^2 I`

    $$ p(h \mid X, y) \propto \pi_h\, \mathcal N(y; 0, C_h), \qquad
       \hat y_q = \sum_h p(h \mid X, y)\; x_q^\top S_h X^\top C_h^{-1} y . $$
    ``p_sparse = 0`` is ridge with ``lam = noise**2``. Needs ``noise > 0``. :cite:`panwar2024incontext`
    """
    _check_prompt(xs, ys)
    check_number("noise", noise, positive=True)
    check_number("p_sparse", p_sparse, low=0.0, high=1.0)
    X, y, xq = xs[:, :-1].double(), ys[:, :-1].double(), xs[:, -1].double()
    d = X.shape[-1]
    eye_d = torch.eye(d, dtype=torch.float64)
    hypotheses = [(1 - p_sparse, eye_d)] + [(p_sparse / d, d * torch.diag(eye_d[j])) for j in range(d)]
    log_post, preds = [], []
    for prior, S in hypotheses:
        cov = X @ S @ X.transpose(1, 2) + noise ** 2 * torch.eye(X.shape[1], dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        alpha = torch.cholesky_solve(y[..., None], chol)                       # C_h^-1 y, (B, n, 1)
        log_det_half = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        log_prior = math.log(prior) if prior > 0 else -math.inf
        log_post.append(log_prior - 0.5 * (y[..., None] * alpha).sum((1, 2)) - log_det_half)
        preds.append(((xq @ S)[:, None, :] @ X.transpose(1, 2) @ alpha)[:, 0, 0])
    weights = torch.softmax(torch.stack(log_post, -1), -1)
    return (weights * torch.stack(preds, -1)).sum(-1).to(xs.dtype)
