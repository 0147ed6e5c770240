r"""Attention calibration (ACT): shrink the weight of the keys a head over-attends to, at inference, without training.

Yu et al. :cite:`yu2024unveiling` find *hidden* attention sinks: besides the first token, keys that draw far more
than their share of a head's attention (often delimiters) without carrying what the query needs. ACT scales their
weights down in chosen heads and gives the freed mass to the other keys, leaving the first-token sink alone
(removing it is what breaks streaming models :cite:`xiao2024efficient`). The heads are picked offline on
calibration data; here :func:`calibrated_heads` applies ACT to chosen heads of
:class:`~minilib.attention.MultiHeadAttention` layers, and a chapter chooses them.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from minilib._checks import require_tensor
from minilib.attention.heads import expand_kv_heads
from minilib.attention.multihead import MultiHeadAttention

__all__ = ["attention_calibration", "calibrated_heads"]


def _check_act_arguments(alpha, beta) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")


def attention_calibration(weights: torch.Tensor, *, alpha: float = 5.0, beta: float = 0.4) -> torch.Tensor:
    r"""ACT on attention rows: scale the weights of the sink keys by $\beta$, then rescale each row to its old sum.

    Key $s \ge 1$ is a sink of a head when its mean weight over the $T$ queries exceeds $\alpha$ times the
    uniform share $1/S$; its weights are multiplied by $\beta$ and every row is rescaled to the sum it had:

    $$ \bar a_s = \frac{1}{T} \sum_t A_{ts} > \frac{\alpha}{S}, \qquad
       A'_{ts} = c_t \begin{cases} \beta A_{ts} & s \in \mathcal S \\ A_{ts} & s \notin \mathcal S \end{cases},
       \qquad c_t = \frac{\sum_s A_{ts}}{\beta \sum_{s \in \mathcal S} A_{ts} + \sum_{s \notin \mathcal S} A_{ts}} . $$

    The first key ($s = 0$) is never a sink; a row with no weight left after scaling is left unchanged.
    The paper's version gives the freed mass $(1 - \beta) \sum_{s \in \mathcal S} A_{ts}$ to the non-sink keys
    only (sinks keep exactly $\beta A_{ts}$); rescaling the row, as here, shares it among all keys in proportion
    to their scaled weights, sinks included (chapter 02 uses this form). ``weights (..., T, S)`` -> same shape.
    See :cite:`yu2024unveiling`.
    """
    require_tensor("weights", weights, floating=True)
    if weights.ndim < 2:
        raise ValueError(f"weights must have shape (..., T, S), got {tuple(weights.shape)}")
    _check_act_arguments(alpha, beta)
    sink = weights.mean(-2) > alpha / weights.shape[-1]
    sink[..., 0] = False
    scaled = torch.where(sink.unsqueeze(-2), beta * weights, weights)
    total, kept = weights.sum(-1, keepdim=True), scaled.sum(-1, keepdim=True)
    return torch.where(kept > 0, scaled * total / torch.where(kept > 0, kept, torch.ones_like(kept)), weights)


@contextlib.contextmanager
def calibrated_heads(heads_by_layer: dict[MultiHeadAttention, list[int]], *, alpha: float = 5.0,
                     beta: float = 0.4) -> Iterator[None]:
    r"""Inside the ``with`` block, each given attention layer applies :func:`attention_calibration` to its listed heads.

    ``heads_by_layer`` maps a :class:`~minilib.attention.MultiHeadAttention` to the query heads to calibrate (a
    layer with an empty list is left alone). A forward hook recomputes the layer's output from its own projections
    with the calibrated weights $A'$: $\text{head}_h = A'_h V_{\kappa(h)}$, then the layer's gate and output
    projection. Only the plain self-attention forward is supported (no ``cache``, ``kv``, ``memory``,
    ``positions`` or ``bias``). The hooks are removed on exit. See :cite:`yu2024unveiling`.
    """
    if not isinstance(heads_by_layer, dict):
        raise TypeError(f"heads_by_layer must be a dict {{MultiHeadAttention: [head, ...]}}, got {type(heads_by_layer).__name__}")
    _check_act_arguments(alpha, beta)
    for layer, heads in heads_by_layer.items():
        if not isinstance(layer, MultiHeadAttention):
            raise TypeError(f"heads_by_layer keys must be MultiHeadAttention layers, got {type(layer).__name__}")
        if not all(isinstance(h, int) and 0 <= h < layer.n_heads for h in heads):
            raise ValueError(f"heads_by_layer: heads must be ints in [0, {layer.n_heads}), got {list(heads)!r}")

    def hook(heads):
        def recompute(layer, args, kwargs, output):
            extra = [name for name in ("cache", "kv", "memory", "positions", "bias") if kwargs.get(name) is not None]
            if extra:
                raise ValueError(f"calibrated_heads supports the plain self-attention forward only, got {extra}")
            x = args[0]
            causal = kwargs.get("causal", True)
            q, k, v = layer.project_qkv(x, torch.arange(x.shape[1], device=x.device))
            w = layer.weights(q, k, causal=causal)
            w[:, heads] = attention_calibration(w[:, heads], alpha=alpha, beta=beta)
            return layer.combine(x, w @ expand_kv_heads(v, layer.n_heads))
        return recompute

    handles = [layer.register_forward_hook(hook(list(heads)), with_kwargs=True)
               for layer, heads in heads_by_layer.items() if len(heads)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
