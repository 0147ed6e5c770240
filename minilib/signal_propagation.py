r"""Signal propagation at initialisation: measured and predicted second moments, and DeepScaleLM.

Kedia et al. follow three numbers through every component of a Transformer at initialisation:
the variance $\sigma^2$ of an activation, the correlation $r$ between the vectors of two different
tokens, and the variance of the gradient flowing back. Each component maps these moments by a
closed-form rule (a linear layer multiplies $\sigma^2$ by $d_\text{in}\sigma_w^2$; attention that
is still uniform averages tokens, so it keeps the correlated part and shrinks the rest; ...).
Chaining the rules predicts the per-layer curves that :func:`signal_moments` measures.

DeepScaleLM chooses every weight variance so that each sub-layer maps unit variance to unit
variance, and scales each residual update so that the stream keeps unit variance:

$$ x_{l+1} = \lambda\, x_l + \beta\, f(x_l), \qquad \lambda^2 + \beta^2 = 1. $$

This module reads models through the attributes of :class:`minilib.models.TransformerLM`
(``embed``, ``blocks``, ``block.mixer``, ``block.ffn``) and imports nothing from ``models``; the rules are
those of softmax attention, so every mixer must be a :class:`~minilib.attention.MultiHeadAttention`.
See :cite:`kedia2024stable`.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.attention import MultiHeadAttention

__all__ = ["gaussian_expectation", "causal_average_moments", "ffn_moments", "residual_scales", "deepscale_init_",
           "predicted_moments", "signal_moments"]

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _correlation(name: str, r) -> float:
    """``r`` as a float in [-1, 1]; values past the ends by rounding error (|r| - 1 < 1e-9) are clamped."""
    r = check_number(name, r)
    if abs(r) > 1 + 1e-9:
        raise ValueError(f"{name} must be a correlation in [-1, 1], got {r!r}")
    return max(-1.0, min(1.0, r))


def gaussian_expectation(fn, r: float | None = None) -> float:
    r"""$\mathbb E[f(z)]$ for $z \sim \mathcal N(0,1)$, or $\mathbb E[f(z_1, z_2)]$ for unit normals with correlation $r$.

    $$ z_2 = r z_1 + \sqrt{1-r^2}\, u,\quad z_1, u \sim \mathcal N(0, 1)\ \text{independent} $$

    by 64-point Gauss–Hermite quadrature; ``fn`` maps float64 tensors elementwise.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable on float64 tensors, got {type(fn).__name__}")
    z = torch.from_numpy(_NODES)
    w = torch.from_numpy(_WEIGHTS)
    if r is not None:
        r = _correlation("r", r)
    if r is None:
        return float((w * fn(z)).sum())
    z1, u = z[:, None], z[None, :]
    z2 = r * z1 + math.sqrt(max(0.0, 1.0 - r * r)) * u
    return float((w[:, None] * w[None, :] * fn(z1, z2)).sum())


def causal_average_moments(seq_len: int, r: float, *, r_grad: float = 0.0, score_var: float = 0.0,
                           n_samples: int = 32) -> tuple[float, float, float, float]:
    r"""Moments of causal softmax attention $o_t = \sum_{s \le t} A_{ts} v_s$ at initialisation.

    Values of unit variance and pairwise correlation $r$ have covariance $C = (1-r) I + r\,\mathbf 1\mathbf 1^\top$
    over positions, output gradients likewise $C_g$ with correlation ``r_grad``. Then

    $$ g_\text{fwd} = \overline{\operatorname{diag}\,\mathbb E[A C A^\top]},\quad
       r_\text{out} = \frac{\overline{\operatorname{offdiag}\,\mathbb E[A C A^\top]}}{g_\text{fwd}},\quad
       g_\text{bwd} = \overline{\operatorname{diag}\,\mathbb E[A^\top C_g A]},\quad
       r_{g,\text{out}} = \frac{\overline{\operatorname{offdiag}\,\mathbb E[A^\top C_g A]}}{g_\text{bwd}} $$

    (bars: means over positions / pairs). With ``score_var = 0`` the attention is uniform,
    $A_{ts} = 1/(t+1)$, as for small query/key weights; otherwise the scores are independent
    $\mathcal N(0, \text{score\_var})$ and the expectation is a seeded average over ``n_samples`` draws.
    Returns ``(g_fwd, r_out, g_bwd, r_grad_out)``. Causal form of the attention rule of :cite:`kedia2024stable`.
    """
    check_positive_int("seq_len", seq_len)
    r, r_grad = _correlation("r", r), _correlation("r_grad", r_grad)
    AAt, AtA, cct = _attention_statistics(seq_len, float(score_var), n_samples)
    ones = torch.ones(seq_len, seq_len, dtype=torch.float64)

    def diag_and_corr(M: torch.Tensor, fallback: float) -> tuple[float, float]:
        T = M.shape[0]
        diag = M.diagonal().mean().item()
        off = (M.sum() - M.diagonal().sum()).item() / (T * (T - 1)) if T > 1 else fallback * diag
        return diag, off / diag

    # rows of A sum to 1, so E[A 11^T A^T] = 11^T; c = A^T 1 holds the column sums.
    g_fwd, r_out = diag_and_corr((1 - r) * AAt + r * ones, r)
    g_bwd, r_g_out = diag_and_corr((1 - r_grad) * AtA + r_grad * cct, r_grad)
    return g_fwd, r_out, g_bwd, r_g_out


@functools.lru_cache(maxsize=8)
def _standard_scores(T: int, n_samples: int) -> torch.Tensor:
    return torch.randn(n_samples, T, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _attention_statistics(T: int, score_var: float, n_samples: int):
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool))
    if score_var == 0:
        A = (keep.double() / keep.sum(-1, keepdim=True))[None]
    else:
        z = math.sqrt(score_var) * _standard_scores(T, n_samples)
        A = torch.softmax(z.masked_fill(~keep, float("-inf")), dim=-1)
    c = A.sum(1)
    return (A @ A.transpose(1, 2)).mean(0), (A.transpose(1, 2) @ A).mean(0), (c[:, :, None] * c[:, None, :]).mean(0)


def _act(kind: str):
    return F.gelu if kind == "gelu" else F.silu


def _act_grad(kind: str):
    if kind == "gelu":
        return lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return lambda z: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))


def ffn_moments(kind: str, *, s1: float, s2: float, s3: float = 1.0, q: float = 1.0, r: float = 0.0,
                r_grad: float = 0.0) -> tuple[float, float, float, float]:
    r"""Output variance and correlation, backward gain and gradient correlation of the feed-forward block.

    For input variance $q$ and token correlation $r$, $s_1 = d\,\sigma_{W_1}^2$, $s_2 = d_{ff}\,\sigma_{W_2}^2$,
    $s_3 = d\,\sigma_{W_3}^2$, pre-activations $a = \sqrt{s_1 q}\, z$ ($z$ standard normal), $\phi$ = GELU or SiLU:

    $$ \text{GELU: } g_\text{fwd} = s_2\,\mathbb E[\phi(a)^2],\quad g_\text{bwd} = s_2 s_1\,\mathbb E[\phi'(a)^2] $$
    $$ \text{SwiGLU: } g_\text{fwd} = s_2 s_3 q\,\mathbb E[\phi(a)^2],\quad
       g_\text{bwd} = s_2\big(s_1 s_3 q\,\mathbb E[\phi'(a)^2] + s_3\,\mathbb E[\phi(a)^2]\big) $$

    The correlations replace one factor $\phi(a)^2$ by $\phi(a_1)\phi(a_2)$ over a token pair of
    correlation $r$ (and multiply by ``r_grad`` backward). Returns ``(g_fwd, r_out, g_bwd, r_grad_out)``.
    See :cite:`kedia2024stable`.
    """
    if kind not in ("gelu", "swiglu"):
        raise ValueError(f"kind must be 'gelu' or 'swiglu', got {kind!r}")
    phi, dphi, a = _act(kind), _act_grad(kind), math.sqrt(s1 * q)
    m2 = gaussian_expectation(lambda z: phi(a * z) ** 2)
    d2 = gaussian_expectation(lambda z: dphi(a * z) ** 2)
    m11 = gaussian_expectation(lambda z1, z2: phi(a * z1) * phi(a * z2), r)
    d11 = gaussian_expectation(lambda z1, z2: dphi(a * z1) * dphi(a * z2), r)
    if kind == "gelu":
        return s2 * m2, m11 / m2, s2 * s1 * d2, r_grad * d11 / d2
    g_bwd = s2 * (s1 * s3 * q * d2 + s3 * m2)
    return s2 * s3 * q * m2, r * m11 / m2, g_bwd, r_grad * s2 * (s1 * s3 * q * r * d11 + s3 * m11) / g_bwd


def residual_scales(n_layers: int) -> tuple[float, float]:
    r"""DeepScaleLM's residual weights $(\lambda, \beta)$ with $\lambda^2 + \beta^2 = 1$ and $\beta^2 = 1/L$.

    $$ x_{l+1} = \lambda x_l + \beta f(x_l),\qquad \beta^2 = \frac{1}{L},\ \lambda^2 = 1 - \frac1L $$

    for a model of $L$ layers ($2L$ residual branches); at $L = 192$ this is the
    $\beta^2 \approx 0.005$ of the authors' released scripts. See :cite:`kedia2024stable`.
    """
    check_positive_int("n_layers", n_layers)
    beta2 = 1.0 / n_layers if n_layers > 1 else 0.5
    return math.sqrt(1.0 - beta2), math.sqrt(beta2)


def _attention(block) -> MultiHeadAttention:
    if not isinstance(block.mixer, MultiHeadAttention):
        raise ValueError(f"signal propagation follows softmax attention: the block's mixer must be a "
                         f"MultiHeadAttention, got {type(block.mixer).__name__}")
    return block.mixer


def _additive_tables(model) -> int:
    return 2 if model.pos in ("learned", "sinusoidal") else 1


@torch.no_grad()
def deepscale_init_(model: nn.Module, *, seq_len: int, r0: float) -> nn.Module:
    r"""DeepScaleLM initialisation, in place: every sub-layer maps unit variance to unit variance.

    $$ \sigma_E^2 = \tfrac{1}{n_\text{tables}},\quad \sigma_{Q}^2 = \sigma_K^2 = \tfrac1d,\quad
       d\sigma_V^2 = d\sigma_O^2 = g_\text{fwd}(r_l)^{-1/2},\quad
       \sigma_{W_1}^2 = \sigma_{W_3}^2 = \tfrac1d,\quad \sigma_{W_2}^2 = \frac{1}{d_{ff}\,\mathbb E[\phi(z)^2]} $$

    with $g_\text{fwd}(r_l)$ from :func:`causal_average_moments` (unit score variance, which
    $\sigma_Q^2 = \sigma_K^2 = 1/d$ gives) at the token correlation $r_l$ predicted for layer $l$,
    starting from ``r0`` (e.g. $1/V$ for uniform random tokens), and the residual weights of
    :func:`residual_scales`. Returns ``model``. See :cite:`kedia2024stable`.
    """
    d = model.embed.weight.shape[1]
    lam, beta = residual_scales(len(model.blocks))
    emb_std = math.sqrt(1.0 / _additive_tables(model))
    nn.init.normal_(model.embed.weight, std=emb_std)
    if model.pos_embed is not None:
        nn.init.normal_(model.pos_embed.weight, std=emb_std)
    r = r0 / _additive_tables(model)
    for block in model.blocks:
        block.residual_scales = (lam, beta)
        attn, ffn = _attention(block), block.ffn
        g_fwd, r_attn, _, _ = causal_average_moments(seq_len, r, score_var=1.0)
        vo_std = math.sqrt(g_fwd ** -0.5 / d)
        for lin, std in ((attn.wq, d ** -0.5), (attn.wk, d ** -0.5), (attn.wv, vo_std), (attn.wo, vo_std)):
            nn.init.normal_(lin.weight, std=std)
        r = lam ** 2 * r + beta ** 2 * r_attn
        m2 = gaussian_expectation(lambda z: _act(ffn.kind)(z) ** 2)
        nn.init.normal_(ffn.w1.weight, std=d ** -0.5)
        if ffn.w3 is not None:
            nn.init.normal_(ffn.w3.weight, std=d ** -0.5)
        nn.init.normal_(ffn.w2.weight, std=(ffn.w2.in_features * m2) ** -0.5)
        r = lam ** 2 * r + beta ** 2 * ffn_moments(ffn.kind, s1=1.0, s2=1.0 / m2, r=r)[1]
    return model


def _mean_square(w: torch.Tensor) -> float:
    return w.detach().double().pow(2).mean().item()


def _attention_backward(seq_len: int, r: float, score_var: float, gain: float, r_grad: float) -> tuple[float, float]:
    _, _, g_bwd, r_out = causal_average_moments(seq_len, r, r_grad=r_grad, score_var=score_var)
    return gain * g_bwd, r_out


def _ffn_backward(ffn_args: dict, r_grad: float) -> tuple[float, float]:
    _, _, g_bwd, r_out = ffn_moments(r_grad=r_grad, **ffn_args)
    return g_bwd, r_out


@torch.no_grad()
def predicted_moments(model: nn.Module, *, seq_len: int, r0: float) -> dict[str, torch.Tensor]:
    r"""Per-layer forward variance, token correlation and gradient variance predicted by moment propagation.

    Each sub-layer $f$ with residual weights $(\lambda, \beta)$ maps the stream variance $q$,
    token correlation $r$ and gradient variance $p$ (top to bottom) as

    $$ \text{Pre-LN: } q' = \lambda^2 q + \beta^2 g_\text{fwd},\quad
       p = p' \Big(\lambda^2 + \beta^2\, \tfrac{d-2}{d}\,\tfrac{g_\text{bwd}}{q}\Big) $$
    $$ \text{Post-LN: } q' = 1,\quad p = p'\, \frac{\lambda^2 + \beta^2 g_\text{bwd}}{\lambda^2 q + \beta^2 g_\text{fwd}} $$

    with the gains of :func:`causal_average_moments` (attention; weight variances read from ``model``,
    score variance $d\sigma_Q^2\, d\sigma_K^2\, q_\text{in}^2$) and :func:`ffn_moments`, and
    $r' = (\lambda^2 q r + \beta^2 g_\text{fwd} r_f)/q'$ (the gradient correlation likewise, downwards).
    The LayerNorm Jacobian contributes $1/q$ and, on a branch, removes 2 of $d$ directions.
    Returns ``forward (L+1,)``, ``backward (L+1,)`` (top = 1) and ``r (L+1,)``, index 0 being the
    embedding output. Norm gains are taken as 1. See :cite:`kedia2024stable`.
    """
    check_number("r0", r0, low=0.0, high=1.0)  # a token correlation of random ids, in [0, 1]
    d = model.embed.weight.shape[1]
    q = _mean_square(model.embed.weight)
    if model.pos_embed is not None:
        q += _mean_square(model.pos_embed.weight)
    if model.pos == "sinusoidal":
        q += _mean_square(model.pos_table[:seq_len])
    r = r0 * _mean_square(model.embed.weight) / q
    fwd, corr, subs = [q], [r], []
    for block in model.blocks:
        lam2, beta2 = (s ** 2 for s in block.residual_scales)
        attn, ffn = _attention(block), block.ffn
        s_q, s_k, s_v, s_o = (lin.in_features * _mean_square(lin.weight) for lin in (attn.wq, attn.wk, attn.wv, attn.wo))
        s1 = ffn.w1.in_features * _mean_square(ffn.w1.weight)
        s2 = ffn.w2.in_features * _mean_square(ffn.w2.weight)
        s3 = 1.0 if ffn.w3 is None else ffn.w3.in_features * _mean_square(ffn.w3.weight)
        for sub in ("attn", "ffn"):
            q_in = 1.0 if block.pre_norm else q
            if sub == "attn":
                score_var = s_q * s_k * q_in ** 2
                g_avg, r_f, _, _ = causal_average_moments(seq_len, r, score_var=score_var)
                g_f = q_in * s_v * s_o * g_avg
                backward = functools.partial(_attention_backward, seq_len, r, score_var, s_v * s_o)
            else:
                ffn_args = dict(kind=ffn.kind, s1=s1, s2=s2, s3=s3, q=q_in, r=r)
                g_f, r_f, _, _ = ffn_moments(**ffn_args)
                backward = functools.partial(_ffn_backward, ffn_args)
            y = lam2 * q + beta2 * g_f
            r = (lam2 * q * r + beta2 * g_f * r_f) / y
            subs.append((block.pre_norm, lam2, beta2, q, y, backward))
            q = y if block.pre_norm else 1.0
        fwd.append(q)
        corr.append(r)
    p, r_g, grad = 1.0, 0.0, [1.0]
    for i, (pre_norm, lam2, beta2, q_in, y, backward) in enumerate(reversed(subs)):
        g_b, r_b = backward(r_g)
        branch = beta2 * g_b * ((d - 2) / d / q_in if pre_norm else 1.0)
        p = p * (lam2 + branch) * (1.0 if pre_norm else 1.0 / y)
        r_g = (lam2 * r_g + branch * r_b) / (lam2 + branch)
        if i % 2 == 1:
            grad.append(p)
    as_t = lambda v: torch.tensor(v, dtype=torch.float64)
    return {"forward": as_t(fwd), "backward": as_t(grad[::-1]), "r": as_t(corr)}


def signal_moments(model: nn.Module, idx: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    r"""Measured second moments of the residual stream and of its gradient, after every layer.

    $$ \text{forward}_l = \overline{x_l^2},\qquad
       \text{backward}_l = \overline{(\partial \mathcal L / \partial x_l)^2} \big/ \overline{(\partial \mathcal L / \partial x_L)^2},
       \qquad \mathcal L = \langle x_L, G \rangle,\ G_{btc} \sim \mathcal N(0, 1) $$

    $x_0$ is the embedding output and $x_l$ the output of block $l$; the backward signal is a
    seeded standard-normal cotangent injected at the last block's output. ``idx (B, T)`` ->
    ``forward (L+1,)``, ``backward (L+1,)``. See :cite:`kedia2024stable`.
    """
    require_tensor("idx", idx, ndim=2)
    streams: list[torch.Tensor] = []

    def keep_input(_module, args):
        args[0].retain_grad()
        streams.append(args[0])

    def keep_output(_module, _args, out):
        out.retain_grad()
        streams.append(out)

    handles = [model.blocks[0].register_forward_pre_hook(keep_input)]
    handles += [block.register_forward_hook(keep_output) for block in model.blocks]
    try:
        with torch.enable_grad():
            model(idx)
            top = streams[-1]
            g = torch.randn(top.shape, generator=torch.Generator().manual_seed(seed), dtype=top.dtype)
            (top * g).sum().backward()
    finally:
        for h in handles:
            h.remove()
    fwd = torch.stack([x.detach().double().pow(2).mean() for x in streams])
    bwd = torch.stack([x.grad.double().pow(2).mean() for x in streams])
    model.zero_grad(set_to_none=True)
    return {"forward": fwd, "backward": bwd / bwd[-1]}
