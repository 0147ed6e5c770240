r"""Softmax attention written as directly as the equation: the causal mask, the weights and the output.

Shapes: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` with ``H % Hkv == 0``
(grouped-query attention: each key/value head serves ``H // Hkv`` consecutive query heads).
With ``causal=True`` and ``T != S`` the queries are the *last* ``T`` of the ``S`` positions
(bottom-right alignment, as when decoding with a cache).
"""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_nonnegative_int, default_scale, require_tensor
from minilib.attention.heads import expand_kv_heads


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
    r"""$s_{ts} = \text{scale}\; q_t \cdot k_s + \text{bias}_{ts}$, with $-\infty$ where masked. ``(B, H, T, S)``."""
    check_attention_inputs(q, k, k)
    T, S, D = q.shape[2], k.shape[2], q.shape[3]
    scores = default_scale(D, scale) * (q @ expand_kv_heads(k, q.shape[1]).transpose(-2, -1))
    if bias is not None:
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
    check_attention_inputs(q, k, v)
    weights = attention_weights(q, k, causal=causal, mask=mask, bias=bias, scale=scale)
    return weights @ expand_kv_heads(v, q.shape[1])


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
    check_attention_inputs(q, k, v)
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    scores = default_scale(D, scale) * (q.reshape(B, Hkv, (H // Hkv) * T, D) @ k.transpose(-2, -1))  # rows: (group member, t)
    if causal:
        keep = causal_mask(T, S, device=q.device).repeat(H // Hkv, 1)
        scores = scores.masked_fill(~keep, float("-inf"))
    return (_softmax_rows(scores) @ v).reshape(B, H, T, v.shape[-1])
