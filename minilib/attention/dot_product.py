r"""Softmax attention written as directly as the equation: the causal mask, the weights and the output.

Shapes: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` with ``H % Hkv == 0``
(grouped-query attention: each key/value head serves ``H // Hkv`` consecutive query heads).
With ``causal=True`` and ``T != S`` the queries are the *last* ``T`` of the ``S`` positions
(bottom-right alignment, as when decoding with a cache); when ``T > S`` the first ``T - S`` queries see
no key and their rows are zeros, the rule of every attention form in minilib.

Precision: the inputs may mix float dtypes; scores, softmax and the weighted sum run in
:func:`~minilib._checks.compute_dtype` (float32 for float16/bfloat16, as the flash forms and torch's own
kernels do, so logits near 1e4 do not overflow) and the output has the inputs' promoted dtype. NaN in an
input is not checked for (it would cost a pass over the inputs) and propagates to the rows that read it.
"""
from __future__ import annotations

import torch

from minilib._checks import (check_attention_inputs, check_bias, check_nonnegative_int, compute_dtype, default_scale,
                             promoted_dtype, require_tensor)
from minilib.attention.heads import expand_kv_heads

__all__ = ["causal_mask", "attention_weights", "sdpa", "attention_entropy", "grouped_attention"]


def causal_mask(T: int, S: int | None = None, *, device=None) -> torch.Tensor:
    r"""Boolean ``(T, S)`` mask, True where query ``t`` may see key ``s``: $s \le t + (S - T)$.

    Bottom-right aligned: query ``t`` sits at absolute position ``S - T + t``. See :cite:`vaswani2017attention`.
    """
    T = check_nonnegative_int("T", T)
    S = T if S is None else check_nonnegative_int("S", S)
    t = torch.arange(T, device=device)[:, None]
    s = torch.arange(S, device=device)[None, :]
    return s <= t + (S - T)


def _scaled_scores(q, k, *, causal, mask, bias, scale) -> torch.Tensor:
    r"""$s_{ts} = \text{scale}\; q_t \cdot k_s + \text{bias}_{ts}$, with $-\infty$ where masked. ``(B, H, T, S)``
    in :func:`~minilib._checks.compute_dtype` of ``q`` and ``k``."""
    check_attention_inputs(q, k, k, causal=causal, scale=scale)
    (B, H, T, D), S = q.shape, k.shape[2]
    dtype = compute_dtype(q, k)
    scores = default_scale(D, scale) * (q.to(dtype) @ expand_kv_heads(k.to(dtype), H).transpose(-2, -1))
    if bias is not None:
        check_bias(bias, scores.shape)
        scores = scores + bias
    keep = torch.ones((), dtype=torch.bool, device=q.device)
    if causal:
        keep = keep & causal_mask(T, S, device=q.device)
    if mask is not None:
        require_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to scores {tuple(scores.shape)}") from None
        keep = keep & mask
    return scores.masked_fill(~keep, float("-inf"))


def _softmax_rows(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of scores holding -inf where masked; a fully masked row gives zeros, not NaN."""
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _weighted_values(weights: torch.Tensor, q, k, v) -> torch.Tensor:
    """$o = W V$ computed in the weights' and values' compute dtype, returned in the inputs' promoted dtype."""
    dtype = compute_dtype(weights, v)
    return (weights.to(dtype) @ expand_kv_heads(v.to(dtype), q.shape[1])).to(promoted_dtype(q, k, v))


def attention_weights(q, k, *, causal=False, mask=None, bias=None, scale=None) -> torch.Tensor:
    r"""Attention probabilities $A = \operatorname{softmax}_s\!\left(\tfrac{q_t \cdot k_s}{\sqrt{D}} + b_{ts}\right)$ over kept keys.

    ``q (B,H,T,D)``, ``k (B,Hkv,S,D)`` -> ``(B,H,T,S)``. A row with no kept key is all zeros
    (rather than NaN). See :cite:`vaswani2017attention`.
    """
    return _softmax_rows(_scaled_scores(q, k, causal=causal, mask=mask, bias=bias, scale=scale))


def sdpa(q, k, v, *, causal=False, mask=None, bias=None, scale=None) -> torch.Tensor:
    r"""Scaled dot-product attention, the reference form that materialises the ``(B,H,T,S)`` scores.

    $$ \operatorname{Attention}(Q,K,V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{D}} + \text{bias}\right) V $$

    ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``, ``v (B,Hkv,S,Dv)`` -> ``(B,H,T,Dv)``. ``mask`` is bool,
    broadcastable to ``(B,H,T,S)``, True = keep. See :cite:`vaswani2017attention`.
    """
    check_attention_inputs(q, k, v, causal=causal, scale=scale)
    weights = attention_weights(q, k, causal=causal, mask=mask, bias=bias, scale=scale)
    return _weighted_values(weights, q, k, v)


def attention_entropy(weights: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    r"""Shannon entropy of each attention row, in nats, with $0 \log 0 = 0$.

    $$ \operatorname{Ent}(A_t) = -\sum_s A_{ts} \log A_{ts} $$

    ``weights (B, H, T, S) -> (B, H, T)``; average over ``B`` and ``T`` for the per-head entropy that
    :cite:`zhai2023stabilizing` track during training (collapse = entropy near 0).
    """
    require_tensor("weights", weights, floating=True)
    return -torch.special.xlogy(weights, weights).sum(dim=dim)


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                      scale: float | None = None) -> torch.Tensor:
    r"""Softmax attention with query heads grouped over their shared key/value head, never copying keys or values.

    $$ o_{h,t} = \sum_s \operatorname{softmax}_s\!\left(\text{scale}\; q_{h,t} \cdot k_{\kappa(h),s}\right) v_{\kappa(h),s},
       \qquad \kappa(h) = \lfloor h / G \rfloor,\ G = H / H_{kv} $$

    Same result as :func:`sdpa`, which first repeats each key/value head $G$ times (:func:`expand_kv_heads`);
    here the $G$ query heads of a group are stacked and multiply the group's one key/value head, so a decoding
    step reads each cached head once: the memory traffic that GQA/MQA save :cite:`ainslie2023gqa`,
    :cite:`shazeer2019fast`. ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``, ``v (B,Hkv,S,Dv)`` -> ``(B,H,T,Dv)``.
    """
    check_attention_inputs(q, k, v, causal=causal, scale=scale)
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    out_dtype, dtype = promoted_dtype(q, k, v), compute_dtype(q, k, v)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    scores = default_scale(D, scale) * (q.reshape(B, Hkv, (H // Hkv) * T, D) @ k.transpose(-2, -1))  # rows: (group member, t)
    if causal:
        keep = causal_mask(T, S, device=q.device).repeat(H // Hkv, 1)
        scores = scores.masked_fill(~keep, float("-inf"))
    return (_softmax_rows(scores) @ v).reshape(B, H, T, v.shape[-1]).to(out_dtype)
