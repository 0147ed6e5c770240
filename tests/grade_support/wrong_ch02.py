"""Plausible wrong answers to the chapter 02 questions, each with the text its failure must show."""
from __future__ import annotations

import math

import torch

import minilib.attention
import minilib.positional


def repeat_tiled(x, n_rep):
    """Tiles the block of heads (0,1,0,1) instead of repeating each head in place (0,0,1,1)."""
    return x.repeat(1, n_rep, 1, 1)


def repeat_unchanged(x, n_rep):
    return x


def repeat_library(x, n_rep):
    return minilib.attention.expand_kv_heads(x, x.shape[1] * n_rep)


def _sigmoid(q, k, v, causal, bias, weight=torch.sigmoid):
    H, Hkv, T, S, D = q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]
    k, v = (t.repeat_interleave(H // Hkv, dim=1) for t in (k, v))
    s = q @ k.transpose(-2, -1) / math.sqrt(D) + bias
    keep = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else torch.ones(T, S, dtype=torch.bool)
    return weight(s.masked_fill(~keep, float("-inf"))) @ v


def sigmoid_no_bias(q, k, v, causal=False):
    return _sigmoid(q, k, v, causal, 0.0)


def sigmoid_softmax_instead(q, k, v, causal=False):
    return _sigmoid(q, k, v, causal, 0.0, weight=lambda s: torch.softmax(s, -1))


def sigmoid_bias_all_keys(q, k, v, causal=False):
    """Uses -log S (all the keys) as the bias of every row, also for causal rows that see fewer."""
    return _sigmoid(q, k, v, causal, -math.log(k.shape[2]))


def sigmoid_top_left(q, k, v, causal=False):
    """Aligns the causal mask top-left (query t at position t) when T < S."""
    T, S, D = q.shape[2], k.shape[2], q.shape[3]
    k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    seen = torch.arange(1, T + 1, dtype=q.dtype)[:, None].clamp(max=S) if causal else S * torch.ones(T, 1, dtype=q.dtype)
    s = q @ k.transpose(-2, -1) / math.sqrt(D) - torch.log(seen)
    keep = torch.ones(T, S, dtype=torch.bool).tril(0) if causal else torch.ones(T, S, dtype=torch.bool)
    return torch.sigmoid(s).masked_fill(~keep, 0.0) @ v


def sigmoid_library(q, k, v, causal=False):
    return minilib.attention.sigmoid_attention(q, k, v, causal=causal)


def clip_forgotten(x, zeta, gamma):
    return (zeta - gamma) * torch.softmax(x, -1) + gamma


def clip_zeta_only(x, zeta, gamma):
    return torch.clamp(zeta * torch.softmax(x, -1) + gamma, 0.0, 1.0)


def clip_library(x, zeta, gamma):
    return minilib.attention.clipped_softmax(x, zeta=zeta, gamma=gamma)


def _rope(x, positions, base):
    D = x.shape[-1]
    angle = positions.to(torch.float64)[:, None] * base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def ntk_position_interpolation(x, positions, base=10000.0, scale=1.0):
    """Position interpolation (divide the positions), not NTK-aware scaling."""
    return _rope(x, positions / scale, base)


def ntk_base_times_scale(x, positions, base=10000.0, scale=1.0):
    """Forgets the exponent D / (D - 2)."""
    return _rope(x, positions, base * scale)


def ntk_rotate_half(x, positions, base=10000.0, scale=1.0):
    """Pairs column i with column i + D/2 instead of adjacent columns."""
    D = x.shape[-1]
    new_base = base * scale ** (D / (D - 2))
    angle = positions.to(x.dtype)[:, None] * new_base ** (-torch.arange(0, D, 2, dtype=x.dtype) / D)
    a, b = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1)


def ntk_library(x, positions, base=10000.0, scale=1.0):
    D = x.shape[-1]
    return minilib.positional.rope(x, positions, base=base * scale ** (D / (D - 2)))


def _alibi(scores, slopes, sign=-1.0, offset=True):
    H, T, S = scores.shape[1:]
    t = torch.arange(T)[:, None] + (S - T if offset else 0)
    distance = (t - torch.arange(S)[None, :]).clamp(min=0).to(scores.dtype)
    return scores + sign * slopes.to(scores.dtype)[:, None, None] * distance


def _slopes(H):
    return 2.0 ** (-8.0 * torch.arange(1, H + 1, dtype=torch.float64) / H)


def alibi_positive(scores):
    return _alibi(scores, _slopes(scores.shape[1]), sign=1.0)


def alibi_slopes_ignore_h(scores):
    """Slopes 2^-i whatever H is (right only for H = 8)."""
    return _alibi(scores, 2.0 ** -torch.arange(1, scores.shape[1] + 1, dtype=torch.float64))


def alibi_top_left(scores):
    """Query t at position t even when T < S."""
    return _alibi(scores, _slopes(scores.shape[1]), offset=False)


def alibi_symmetric(scores):
    """-slope * |t - s|: penalises future keys too."""
    H, T, S = scores.shape[1:]
    distance = (torch.arange(S - T, S)[:, None] - torch.arange(S)[None, :]).abs().to(scores.dtype)
    return scores - _slopes(H).to(scores.dtype)[:, None, None] * distance


def alibi_library(scores):
    H, T, S = scores.shape[1:]
    return scores + minilib.positional.alibi_bias(H, T, S).to(scores.dtype)


def moh_renormalised(router_logits, top_k):
    p = torch.softmax(router_logits, -1)
    values, index = p.topk(top_k, dim=-1)
    return torch.zeros_like(p).scatter(-1, index, values / values.sum(-1, keepdim=True))


def moh_topk_over_tokens(router_logits, top_k):
    """Keeps, for each head, the top_k tokens: top-k along the wrong axis."""
    p = torch.softmax(router_logits, -1)
    values, index = p.topk(top_k, dim=1)
    return torch.zeros_like(p).scatter(1, index, values)


def moh_softmax_of_kept_logits(router_logits, top_k):
    """Selects the top_k logits, then takes the softmax over those only (renormalised as well)."""
    values, index = router_logits.topk(top_k, dim=-1)
    return torch.zeros_like(router_logits).scatter(-1, index, torch.softmax(values, -1))


def repeat_library_hidden(x, n_rep):
    """The library's helper reached by a computed name from its submodule."""
    import importlib

    heads = importlib.import_module("minilib.attention." + "heads")
    return getattr(heads, "expand_kv_" + "heads")(x, x.shape[1] * n_rep)


def alibi_grader_reference(scores):
    from minilib.grade.questions import get

    return get("02.q5").reference(scores.double()).to(scores.dtype)


BYPASSES = [
    ("02.q1", repeat_library_hidden, "called forbidden minilib.attention.expand_kv_heads"),
    ("02.q5", alibi_grader_reference, "forbidden the grader's own answers"),
]

# (question, wrong answer, text the failure message must contain)
WRONG = BYPASSES + [
    ("02.q1", repeat_tiled, "case 2/5 (Hkv=2, n_rep=3"),
    ("02.q1", repeat_unchanged, "wrong shape"),
    ("02.q1", repeat_library, "forbidden minilib.attention.expand_kv_heads"),
    ("02.q2", sigmoid_no_bias, "case 1/7"),
    ("02.q2", sigmoid_softmax_instead, "case 1/7"),
    ("02.q2", sigmoid_bias_all_keys, "causal=True"),
    ("02.q2", sigmoid_top_left, "T=3, S=8"),
    ("02.q2", sigmoid_library, "forbidden minilib.attention.sigmoid_attention"),
    ("02.q3", clip_forgotten, "case 1/6"),
    ("02.q3", clip_zeta_only, "max abs error"),
    ("02.q3", clip_library, "forbidden minilib.attention.clipped_softmax"),
    ("02.q4", ntk_position_interpolation, "case 1/6"),
    ("02.q4", ntk_base_times_scale, "case 1/6"),
    ("02.q4", ntk_rotate_half, "max abs error"),
    ("02.q4", ntk_library, "forbidden minilib.positional.rope"),
    ("02.q5", alibi_positive, "case 1/6"),
    ("02.q5", alibi_slopes_ignore_h, "H=4"),
    ("02.q5", alibi_top_left, "queries are the last 3 of 7 positions"),
    ("02.q5", alibi_symmetric, "max abs error"),
    ("02.q5", alibi_library, "forbidden minilib.positional.alibi_bias"),
    ("02.q6", moh_renormalised, "case 1/5"),
    ("02.q6", moh_topk_over_tokens, "max abs error"),
    ("02.q6", moh_softmax_of_kept_logits, "max abs error"),
]
