r"""Scoring functions: the maps from attention scores to weights that replace or change the softmax."""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_nonnegative_int, check_number, compute_dtype, require_tensor
from minilib.attention.dot_product import _scaled_scores, _softmax_rows, _weighted_values

__all__ = ["sigmoid_length_bias", "sigmoid_attention", "clipped_softmax", "softmax_one", "score_weights", "attend"]


def sigmoid_length_bias(T: int, S: int, *, causal: bool = False, device=None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Sigmoid attention's default bias $b_t = -\log n_t$, with $n_t$ the number of keys query row $t$ sees.

    $n_t = S$, or $n_t = S - T + t + 1$ when causal (bottom-right: the queries are the last ``T`` of ``S``
    positions; a row that sees no key counts 1). Returns ``(T, 1)``, broadcast over the keys.

    Ramapuram et al. :cite:`ramapuram2024sigmoid` use one scalar $b = -\log n$ with $n$ the sequence length, which
    is this bias for non-causal attention. For a causal row the length it reads is $n_t$: with $b_t = -\log n_t$,
    $\sigma(s - \log n_t) \approx e^{s} / n_t$ is a softmax over the $n_t$ keys the row sees with its
    denominator replaced by their count, and the output at position $t$ does not depend on how many positions
    follow it, so decoding with a KV cache gives the outputs of the full forward. The paper's fixed scalar for
    a causal language model is ``bias=-math.log(n)`` in :func:`sigmoid_attention`.
    """
    T, S = check_nonnegative_int("T", T), check_nonnegative_int("S", S)
    seen = torch.arange(S - T + 1, S + 1, device=device) if causal else torch.full((T,), S, device=device)
    return -torch.log(seen.clamp_min(1).to(dtype))[:, None]


def sigmoid_attention(q, k, v, *, causal=False, bias=None, scale=None) -> torch.Tensor:
    r"""Sigmoid attention: each weight is an independent gate, no normalisation over keys.

    $$ o_t = \sum_{s \in \mathcal K_t} \sigma\!\left(\text{scale}\; q_t \cdot k_s + b_t\right) v_s, \qquad
       b_t = -\log |\mathcal K_t| \text{ by default} $$

    $\mathcal K_t$ is the set of keys row $t$ sees: all $S$, or with ``causal=True`` the keys
    $s \le t + (S - T)$ (:func:`sigmoid_length_bias`). A given ``bias`` (a float, or a tensor broadcastable to
    ``(B,H,T,S)``) replaces the default $b_t$: ``bias=0.0`` is the unbiased sigmoid, ``bias=-math.log(n)`` the
    paper's fixed scalar. The same weights are ``score_weights(score="sigmoid")``. Shapes as :func:`sdpa`.
    See :cite:`ramapuram2024sigmoid`.
    """
    check_attention_inputs(q, k, v, causal=causal, scale=scale)
    T, S = q.shape[2], k.shape[2]
    if bias is None:
        bias = sigmoid_length_bias(T, S, causal=causal, device=q.device, dtype=compute_dtype(q, k))
    scores = _scaled_scores(q, k, causal=causal, mask=None, bias=bias, scale=scale)
    return _weighted_values(torch.sigmoid(scores), q, k, v)


def clipped_softmax(x: torch.Tensor, *, zeta: float = 1.0, gamma: float = 0.0, dim: int = -1) -> torch.Tensor:
    r"""Clipped softmax, which lets a head put exactly zero weight on keys.

    $$ \operatorname{clip}\big((\zeta - \gamma)\operatorname{softmax}(x) + \gamma,\ 0,\ 1\big) $$

    ``x`` any float tensor; ``gamma < zeta`` (the paper stretches with $\gamma \le 0 < 1 \le \zeta$).
    See :cite:`bondarenko2023quantizable`.
    """
    require_tensor("x", x, floating=True)
    if check_number("gamma", gamma) >= check_number("zeta", zeta):
        raise ValueError(f"clipped softmax needs gamma < zeta, got zeta={zeta}, gamma={gamma}")
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
      $S - T + t + 1$ when causal): :func:`sigmoid_attention`'s weights at its default bias
      (:func:`sigmoid_length_bias`), ``bias`` being added to the scores as for every score :cite:`ramapuram2024sigmoid`;
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
    return torch.sigmoid(scores + sigmoid_length_bias(q.shape[2], k.shape[2], causal=causal, device=q.device,
                                                      dtype=scores.dtype))


def attend(q, k, v, *, score: str = "softmax", causal=False, mask=None, bias=None, scale=None,
           zeta: float = 1.0, gamma: float = 0.0) -> torch.Tensor:
    r"""$o_t = \sum_s w_{ts} v_s$ with the weights of :func:`score_weights`; ``score="softmax"`` is :func:`sdpa`.

    Shapes as :func:`sdpa`: ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``.
    """
    check_attention_inputs(q, k, v, causal=causal, scale=scale)
    weights = score_weights(q, k, score=score, causal=causal, mask=mask, bias=bias, scale=scale, zeta=zeta, gamma=gamma)
    return _weighted_values(weights, q, k, v)
