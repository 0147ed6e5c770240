r"""Keys chosen per query from cheap evidence: SEA's estimated attention map, Landmark attention's block summaries,
TidalDecode's positions shared across layers, MoA's per-head spans; and :class:`RuleAttention`, a token mixer that
applies such a rule inside a model (so a full-attention model's weights can be evaluated under it).

Shapes as :func:`minilib.attention.sdpa`: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``; the
masks are bool, True = the query reads the key, causal with the queries the last ``T`` of the ``S`` positions.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from minilib._checks import check_attention_inputs, check_positive_int, default_scale, require_tensor
from minilib.attention import MultiHeadAttention, attend, causal_mask, expand_kv_heads, sdpa
from minilib.sparse.content import topk_mask
from minilib.sparse.masks import sliding_window_mask

__all__ = ["sea_mask", "sea_attention", "landmark_mask", "landmark_attention", "tidal_positions", "tidal_decode", "head_window_mask",
           "moa_allocate", "RuleAttention", "rule_factory"]


def sea_mask(q, k, *, k_top: int, causal: bool = True) -> torch.Tensor:
    r"""SEA's estimated mask ``(B, H, T, S)``: the ``k_top`` keys of each query under a linear-attention estimate
    of the scores, $\hat a_{ts} = \phi(q_t) \cdot \phi(k_s)$ with $\phi(x) = \operatorname{elu}(x) + 1$.

    The estimate costs $O((T + S) D)$ per feature when computed as linear attention; here it is formed densely to
    pick the top entries. SEA trains its estimator (a kernel plus a small convolutional decoder); this is the
    training-free kernel alone. See :cite:`lee2024sea`.
    """
    check_attention_inputs(q, k, k)
    check_positive_int("k_top", k_top)
    estimate = (F.elu(q) + 1) @ (F.elu(expand_kv_heads(k, q.shape[1])) + 1).transpose(-2, -1)
    return topk_mask(estimate, k_top, causal=causal)


def sea_attention(q, k, v, *, k_top: int, causal: bool = True, scale: float | None = None) -> torch.Tensor:
    r"""Estimate, keep, attend: exact softmax attention on :func:`sea_mask`'s entries.

    $$ o_t = \sum_{s \in \hat{\mathcal K}_t} \operatorname{softmax}_{s \in \hat{\mathcal K}_t}(\text{scale}\; q_t \cdot k_s)\, v_s,
       \qquad \hat{\mathcal K}_t = \operatorname{top}_k\{\phi(q_t) \cdot \phi(k_s)\} $$

    ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``. See :cite:`lee2024sea`.
    """
    return sdpa(q, k, v, mask=sea_mask(q, k, k_top=k_top, causal=causal), causal=causal, scale=scale)


def landmark_mask(q, k, *, block_size: int, k_blocks: int, landmarks: torch.Tensor | None = None) -> torch.Tensor:
    r"""Landmark attention's retrieval as a causal mask ``(B, H, T, S)``: a query reads the earlier keys of its own
    block and every key of the ``k_blocks`` earlier blocks whose landmark it scores highest.

    $$ \mathcal B_t = \operatorname{top}_k\{\, q_t \cdot \ell_j : j < \lfloor p_t / b \rfloor \,\}, \qquad
       M_{ts} = [\,\lfloor s/b \rfloor = \lfloor p_t/b \rfloor,\ s \le p_t\,] \vee [\,\lfloor s/b \rfloor \in \mathcal B_t\,] $$

    ``landmarks (B, Hkv, ceil(S / b), D)``: one key per block. The paper trains a landmark token per block with a
    grouped softmax so that its score gates the block; the default here is the training-free stand-in, the mean
    key of the block. A query reads at most $b + k b$ keys whatever $S$. See :cite:`mohtashami2023landmark`.
    """
    check_attention_inputs(q, k, k)
    check_positive_int("block_size", block_size)
    check_positive_int("k_blocks", k_blocks)
    B, H, T, D = q.shape
    S = k.shape[2]
    n_blocks = -(-S // block_size)
    block = torch.arange(S, device=k.device) // block_size
    if landmarks is None:
        counts = torch.bincount(block, minlength=n_blocks).to(k.dtype)
        landmarks = k.new_zeros(*k.shape[:2], n_blocks, D).index_add_(2, block, k) / counts[:, None]
    elif tuple(landmarks.shape) != (*k.shape[:2], n_blocks, D):
        raise ValueError(f"landmarks must be (B, Hkv, ceil(S / block_size), D) = {(*k.shape[:2], n_blocks, D)}, "
                         f"got {tuple(landmarks.shape)}")
    own = (torch.arange(T, device=q.device) + S - T) // block_size  # block of each query position
    earlier = torch.arange(n_blocks, device=q.device)[None, :] < own[:, None]  # (T, n_blocks)
    scores = (q @ expand_kv_heads(landmarks, H).transpose(-2, -1)).masked_fill(~earlier, float("-inf"))
    picked = scores.topk(min(k_blocks, n_blocks), dim=-1).indices
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, picked, True) & earlier
    same = (block[None, :] == own[:, None]) & causal_mask(T, S, device=q.device)
    return chosen[..., block] | same


def landmark_attention(q, k, v, *, block_size: int, k_blocks: int, landmarks: torch.Tensor | None = None,
                       scale: float | None = None) -> torch.Tensor:
    r"""Exact causal attention over the keys :func:`landmark_mask` retrieves (own block + top ``k_blocks`` blocks).
    ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``. See :cite:`mohtashami2023landmark`."""
    mask = landmark_mask(q, k, block_size=block_size, k_blocks=k_blocks, landmarks=landmarks)
    return sdpa(q, k, v, mask=mask, causal=True, scale=scale)


def tidal_positions(q, k, *, k_top: int, scale: float | None = None) -> torch.Tensor:
    r"""TidalDecode's token selection: for each query the ``k_top`` positions with the largest causal attention
    weight summed over the heads, $\mathcal P_t = \operatorname{top}_k\{\sum_h A^{(h)}_{ts}\}$. ``(B, 1, T, S)``
    bool, shared by the heads. See :cite:`yang2024tidaldecode`."""
    check_attention_inputs(q, k, k)
    check_positive_int("k_top", k_top)
    scores = default_scale(q.shape[-1], scale) * q @ expand_kv_heads(k, q.shape[1]).transpose(-2, -1)
    weights = torch.softmax(scores.masked_fill(~causal_mask(*scores.shape[-2:], device=q.device), float("-inf")), -1)
    return topk_mask(weights.sum(1, keepdim=True), k_top, causal=True)


def tidal_decode(q, k, v, *, k_top: int, positions: torch.Tensor | None = None, scale: float | None = None):
    r"""Position-persistent sparse attention (TidalDecode). A *selection* layer (``positions=None``) runs full
    causal attention and picks the positions of :func:`tidal_positions`; every other layer passes those
    ``positions`` and attends exactly to them only:

    $$ o^{(h)}_t = \sum_{s \in \mathcal P_t} \operatorname{softmax}_{s \in \mathcal P_t}(\text{scale}\; q^{(h)}_t \cdot k^{(h)}_s)\, v^{(h)}_s $$

    Returns ``(out (B,H,T,Dv), positions (B, 1, T, S) bool)`` (those given, or those selected). Decoding one token
    is the last row. See :cite:`yang2024tidaldecode`.
    """
    check_attention_inputs(q, k, v)
    if positions is None:
        return sdpa(q, k, v, causal=True, scale=scale), tidal_positions(q, k, k_top=k_top, scale=scale)
    check_positive_int("k_top", k_top)
    require_tensor("positions", positions, ndim=4)
    if positions.dtype != torch.bool or positions.shape[-2:] != (q.shape[2], k.shape[2]):
        raise ValueError(f"positions must be a bool mask (B, 1, T, S) with T, S = {q.shape[2]}, {k.shape[2]}, "
                         f"got {positions.dtype} {tuple(positions.shape)}")
    return sdpa(q, k, v, mask=positions, causal=True, scale=scale), positions


def head_window_mask(T: int, windows, *, S: int | None = None) -> torch.Tensor:
    r"""One causal sliding window per head, ``(H, T, S)`` bool with ``H = len(windows)``: head $h$ reads its
    ``windows[h]`` most recent keys (MoA's heterogeneous spans; see :func:`minilib.sparse.sliding_window_mask`)."""
    windows = list(windows)
    if not windows:
        raise ValueError("windows must name one window per head, got none")
    return torch.stack([sliding_window_mask(T, check_positive_int("windows", int(w)), S=S) for w in windows])


def moa_allocate(loss_increase: torch.Tensor, spans, *, mean_span: float) -> list[int]:
    r"""MoA's budgeted allocation: one span per head minimising the summed profiled loss increase, with the mean
    span at most ``mean_span``.

    $$ \min_{c_1..c_H} \sum_h \Delta_{h, c_h} \quad \text{s.t.} \quad \tfrac1H \sum_h \text{spans}_{c_h} \le \bar w $$

    ``loss_increase (H, n_spans)``: the loss increase measured when head $h$ alone is cut to ``spans[c]``
    (profiling). Solved exactly by dynamic programming over the integer span budget (a multiple-choice knapsack);
    MoA profiles gradients and solves a mixed-integer program, the objective is the same. Returns the span of
    each head. See :cite:`fu2024moa`.
    """
    require_tensor("loss_increase", loss_increase, ndim=2, floating=True)
    spans = [check_positive_int("spans", int(s)) for s in spans]
    H, n = loss_increase.shape
    if n != len(spans):
        raise ValueError(f"loss_increase must be (H, len(spans)) = (H, {len(spans)}), got {tuple(loss_increase.shape)}")
    budget = int(mean_span * H)
    if budget < min(spans) * H:
        raise ValueError(f"mean_span ({mean_span}) is below the smallest span ({min(spans)})")
    cost = loss_increase.tolist()
    best = {0: (0.0, [])}  # spent budget -> (lowest summed increase, spans so far)
    for h in range(H):
        step = {}
        for spent, (total, chosen) in best.items():
            for c, span in enumerate(spans):
                key = spent + span
                if key <= budget and (key not in step or total + cost[h][c] < step[key][0]):
                    step[key] = (total + cost[h][c], chosen + [span])
        best = step
    return min(best.values(), key=lambda entry: entry[0])[1]


class RuleAttention(MultiHeadAttention):
    r"""Causal multi-head attention whose mask a *rule* computes from the layer's own queries and keys:
    ``rule(q (B,H,T,D), k (B,Hkv,S,D)) -> bool mask`` broadcastable to ``(B, H, T, S)``, or ``None`` for full
    attention. Same parameters as :class:`~minilib.attention.MultiHeadAttention`, so a trained model's weights load
    and can be evaluated under SEA, Landmark, TidalDecode or MoA masks. Full forward only: ``new_cache()`` is
    ``None`` and a model decodes it by recomputing the prefix.
    """

    def __init__(self, d_model: int, n_heads: int, *, rule: Callable | None = None, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        if rule is not None and not callable(rule):
            raise TypeError(f"rule must be None or callable as rule(q, k), got {type(rule).__name__}")
        if self.score != "softmax":
            raise ValueError(f"RuleAttention supports score='softmax' only, got {self.score!r}")
        self.rule = rule

    def new_cache(self):
        return None

    def forward(self, x: torch.Tensor, *, cache=None, **unsupported) -> torch.Tensor:
        """``x (B, T, d_model) -> (B, T, d_model)``, causal."""
        if cache is not None or unsupported:
            raise ValueError(f"RuleAttention takes only x (full forward), got cache={cache!r} and {sorted(unsupported)}")
        q, k, v = self.project_qkv(x, torch.arange(x.shape[1], device=x.device))
        return self.combine(x, attend(q, k, v, causal=True, mask=None if self.rule is None else self.rule(q, k)))


def rule_factory(rule_of_layer: Callable[[int], Callable | None]):
    """A mixer factory building :class:`RuleAttention` with ``rule_of_layer(layer)`` as each layer's rule, for
    ``TransformerConfig(mixer=rule_factory(...))``. Rules may share state (TidalDecode's positions)."""
    if not callable(rule_of_layer):
        raise TypeError(f"rule_of_layer must be callable as rule_of_layer(layer), got {type(rule_of_layer).__name__}")

    def factory(config, layer: int) -> RuleAttention:
        return RuleAttention(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, rope=config.pos == "rope",
                             rule=rule_of_layer(layer), **config.mixer_kwargs)

    return factory
