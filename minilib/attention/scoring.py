r"""Scoring functions: the maps from attention scores to weights that replace or change the softmax."""
from __future__ import annotations

import math

import torch

from minilib._checks import check_attention_inputs, require_tensor
from minilib.attention.dot_product import _scaled_scores, _softmax_rows
from minilib.attention.heads import expand_kv_heads


def sigmoid_attention(q, k, v, *, causal=False, bias=None, scale=None) -> torch.Tensor:
    r"""Sigmoid attention: each weight is an independent gate, no normalisation over keys.

    $$ o_t = \sum_s \sigma\!\left(\text{scale}\; q_t \cdot k_s + b\right) v_s, \qquad b = -\log S \text{ by default} $$

    Shapes as :func:`sdpa`. See :cite:`ramapuram2024sigmoid`.
    """
    check_attention_inputs(q, k, v)
    bias = -math.log(max(k.shape[2], 1)) if bias is None else bias
    scores = _scaled_scores(q, k, causal=causal, mask=None, bias=bias, scale=scale)
    return torch.sigmoid(scores) @ expand_kv_heads(v, q.shape[1])


def clipped_softmax(x: torch.Tensor, *, zeta: float = 1.0, gamma: float = 0.0, dim: int = -1) -> torch.Tensor:
    r"""Clipped softmax, which lets a head put exactly zero weight on keys.

    $$ \operatorname{clip}\big((\zeta - \gamma)\operatorname{softmax}(x) + \gamma,\ 0,\ 1\big) $$

    See :cite:`bondarenko2023quantizable`.
    """
    return torch.clamp((zeta - gamma) * torch.softmax(x, dim=dim) + gamma, 0.0, 1.0)


def softmax_one(x: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    r"""Softmax with an extra zero logit in the denominator ("off-by-one" softmax, an implicit sink).

    $$ \operatorname{softmax}_1(x)_i = \frac{e^{x_i}}{1 + \sum_j e^{x_j}} $$

    The weights sum to less than one, so a head can attend (almost) nowhere without a sink token.
    Equal to ordinary softmax over ``x`` with one more logit fixed at 0 that points at a zero value.
    See :cite:`bondarenko2023quantizable`, :cite:`xiao2024efficient`.
    """
    require_tensor("x", x, floating=True)
    m = x.amax(dim=dim, keepdim=True).clamp_min(0.0)  # >= the implicit zero logit, finite even for all -inf rows
    e = torch.exp(x - m)
    return e / (torch.exp(-m) + e.sum(dim=dim, keepdim=True))


SCORES = ("softmax", "softmax1", "sigmoid", "clipped")


def score_weights(q, k, *, score: str = "softmax", causal=False, mask=None, bias=None, scale=None,
                  zeta: float = 1.0, gamma: float = 0.0) -> torch.Tensor:
    r"""Attention weights for each scoring function, from scores $s_{ts} = \text{scale}\, q_t \cdot k_s + b_{ts}$.

    - ``"softmax"``: $\operatorname{softmax}_s(s_{ts})$ (:func:`attention_weights`);
    - ``"softmax1"``: $e^{s_{ts}} / (1 + \sum_{s'} e^{s_{ts'}})$ (:func:`softmax_one`);
    - ``"sigmoid"``: $\sigma(s_{ts} - \log n_t)$ with $n_t$ the number of keys row $t$ may see ($S$, or
      $S - T + t + 1$ when causal) :cite:`ramapuram2024sigmoid`;
    - ``"clipped"``: $\operatorname{clip}((\zeta - \gamma)\operatorname{softmax}_s(s_{ts}) + \gamma, 0, 1)$
      :cite:`bondarenko2023quantizable`.

    Masked keys get weight 0 in every form. ``q (B,H,T,D)``, ``k (B,Hkv,S,D)`` -> ``(B,H,T,S)``.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    scores = _scaled_scores(q, k, causal=causal, mask=mask, bias=bias, scale=scale)
    if score == "softmax":
        return _softmax_rows(scores)
    if score == "clipped":
        clipped = torch.clamp((zeta - gamma) * _softmax_rows(scores) + gamma, 0.0, 1.0)
        return clipped.masked_fill(scores.isneginf(), 0.0)
    if score == "softmax1":
        return softmax_one(scores)
    T, S = q.shape[2], k.shape[2]
    # causal: row t sees S - T + t + 1 keys; normalising by that count rather than by S keeps each
    # output independent of later tokens, so cached decoding equals the full forward
    visible = torch.arange(S - T + 1, S + 1, device=q.device) if causal else torch.full((T,), S, device=q.device)
    return torch.sigmoid(scores - torch.log(visible.clamp_min(1).to(scores.dtype))[:, None])


def attend(q, k, v, *, score: str = "softmax", causal=False, mask=None, bias=None, scale=None,
           zeta: float = 1.0, gamma: float = 0.0) -> torch.Tensor:
    r"""$o_t = \sum_s w_{ts} v_s$ with the weights of :func:`score_weights`; ``score="softmax"`` is :func:`sdpa`.

    Shapes as :func:`sdpa`: ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``.
    """
    check_attention_inputs(q, k, v)
    weights = score_weights(q, k, score=score, causal=causal, mask=mask, bias=bias, scale=scale, zeta=zeta, gamma=gamma)
    return weights @ expand_kv_heads(v, q.shape[1])
