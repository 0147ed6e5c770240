"""Plausible wrong answers to the chapter 04 questions, each with the text its failure must show."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib.linear_attention import linear_attention_recurrent


def _recurrence(q, k, v, step):
    S = torch.zeros(q.shape[-1], v.shape[-1], dtype=q.dtype)
    out = []
    for t in range(q.shape[0]):
        S = step(S, t)
        out.append(q[t] @ S)
    return torch.stack(out)


def recurrent_decay_after_adding(q, k, v, g):
    """Decays the new token too: S_t = g_t (S_{t-1} + k_t v_t^T)."""
    return _recurrence(q, k, v, lambda S, t: g[t] * (S + torch.outer(k[t], v[t])))


def recurrent_decay_one_step_off(q, k, v, g):
    """Uses the previous step's gate: S_t = g_{t-1} S_{t-1} + k_t v_t^T."""
    return _recurrence(q, k, v, lambda S, t: (g[t - 1] if t else 1) * S + torch.outer(k[t], v[t]))


def recurrent_state_not_carried(q, k, v, g):
    """Forgets the state between steps: o_t = (q_t . k_t) v_t."""
    return _recurrence(q, k, v, lambda S, t: torch.outer(k[t], v[t]))


def recurrent_library(q, k, v, g):
    out = linear_attention_recurrent(q[None, None], k[None, None], v[None, None], decay=g[None, None])
    return out[0, 0]


def _powers(L, gammas, exponent, keep):
    t = torch.arange(L)
    diff = t[:, None] - t[None, :]
    return torch.where(keep(diff), gammas[:, None, None] ** exponent(diff), torch.zeros((), dtype=gammas.dtype))


def decay_matrix_transposed(L, gammas):
    """gamma^(s - t) above the diagonal: the mask of an anti-causal scan."""
    return _powers(L, gammas, lambda d: (-d).clamp(min=0), lambda d: d <= 0)


def decay_matrix_not_masked(L, gammas):
    """gamma^|t - s| everywhere: future tokens leak in."""
    return _powers(L, gammas, lambda d: d.abs(), lambda d: d == d)


def decay_matrix_exponent_off_by_one(L, gammas):
    """gamma^(t - s + 1): the current token is decayed once."""
    return _powers(L, gammas, lambda d: d.clamp(min=0) + 1, lambda d: d >= 0)


def decay_matrix_strict(L, gammas):
    """Zero diagonal: a token does not see itself."""
    return _powers(L, gammas, lambda d: d.clamp(min=0), lambda d: d > 0)


def _chunk(q, k, v, S, gamma, *, inter_power=1, key_power=-1, carry=True, state_decay=True):
    C = q.shape[0]
    i = torch.arange(C)
    diff = i[:, None] - i[None, :]
    mask = torch.where(diff >= 0, gamma ** diff.clamp(min=0), torch.zeros((), dtype=q.dtype))
    out = (q @ k.T * mask) @ v
    if carry:
        out = out + (gamma ** (i + inter_power))[:, None] * (q @ S)
    S_new = (gamma ** C if state_decay else 1) * S + ((gamma ** (C + key_power - i))[:, None] * k).T @ v
    return torch.cat([out, S_new])


def chunk_state_not_carried(q, k, v, S, gamma):
    """Drops the inter-chunk term Q S: every chunk starts from nothing."""
    return _chunk(q, k, v, S, gamma, carry=False)


def chunk_inter_decay_one_step_off(q, k, v, S, gamma):
    """Decays the incoming state gamma^i instead of gamma^(i+1) for row i."""
    return _chunk(q, k, v, S, gamma, inter_power=0)


def chunk_keys_decay_one_step_off(q, k, v, S, gamma):
    """Decays key j by gamma^(C-j) on its way into the next state, one step too many."""
    return _chunk(q, k, v, S, gamma, key_power=0)


def chunk_old_state_not_decayed(q, k, v, S, gamma):
    """Hands on S + K^T V without decaying the incoming state by gamma^C."""
    return _chunk(q, k, v, S, gamma, state_decay=False)


def _elu(q, k, v, *, phi=lambda x: F.elu(x) + 1, normalise=True, causal=True):
    w = phi(q) @ phi(k).transpose(-1, -2)
    if causal:
        w = w.tril()
    return (w @ v) / w.sum(-1, keepdim=True) if normalise else w @ v


def elu_missing_normaliser(q, k, v):
    return _elu(q, k, v, normalise=False)


def elu_not_causal(q, k, v):
    return _elu(q, k, v, causal=False)


def elu_without_plus_one(q, k, v):
    """elu alone is negative for negative inputs: the normaliser can vanish or change sign."""
    return _elu(q, k, v, phi=F.elu)


def combine_no_rescale(a, b):
    """Adds l and acc as if both were taken relative to the same max."""
    return torch.cat([torch.maximum(a[..., :1], b[..., :1]), a[..., 1:] + b[..., 1:]], -1)


def combine_rescale_inverted(a, b):
    """Multiplies by exp(M - m) instead of exp(m - M)."""
    m = torch.maximum(a[..., :1], b[..., :1])
    return torch.cat([m, a[..., 1:] * torch.exp(m - a[..., :1]) + b[..., 1:] * torch.exp(m - b[..., :1])], -1)


def combine_unstable(a, b):
    """Goes through exp(m) itself: overflows for large scores."""
    m = torch.maximum(a[..., :1], b[..., :1])
    ea, eb, em = torch.exp(a[..., :1]), torch.exp(b[..., :1]), torch.exp(m)
    return torch.cat([m, (a[..., 1:] * ea + b[..., 1:] * eb) / em], -1)


def combine_logsumexp(a, b):
    m = torch.maximum(a[..., :1], b[..., :1])
    log_l = torch.logsumexp(torch.stack([a[..., :1] + a[..., 1:2].log(), b[..., :1] + b[..., 1:2].log()]), 0)
    acc = a[..., 2:] * torch.exp(a[..., :1] - m) + b[..., 2:] * torch.exp(b[..., :1] - m)
    return torch.cat([m, torch.exp(log_l - m), acc], -1)


WRONG = [
    ("04.q1", recurrent_decay_after_adding, "case 1/5"),
    ("04.q1", recurrent_decay_one_step_off, "case 2/5"),
    ("04.q1", recurrent_state_not_carried, "case 2/5"),
    ("04.q1", recurrent_library, "forbidden"),
    ("04.q2", decay_matrix_transposed, "case 2/5"),
    ("04.q2", decay_matrix_not_masked, "case 2/5"),
    ("04.q2", decay_matrix_exponent_off_by_one, "case 1/5"),
    ("04.q2", decay_matrix_strict, "case 1/5"),
    ("04.q3", chunk_state_not_carried, "case 1/4"),
    ("04.q3", chunk_inter_decay_one_step_off, "case 1/4"),
    ("04.q3", chunk_keys_decay_one_step_off, "case 1/4"),
    ("04.q3", chunk_old_state_not_decayed, "case 1/4"),
    ("04.q4", elu_missing_normaliser, "case 1/4"),
    ("04.q4", elu_not_causal, "case 2/4"),
    ("04.q4", elu_without_plus_one, "case 2/4"),
    ("04.q5", combine_no_rescale, "case 1/5"),
    ("04.q5", combine_rescale_inverted, "case 1/5"),
    ("04.q5", combine_unstable, "NaN/Inf"),
    ("04.q5", combine_logsumexp, "forbidden"),
]
