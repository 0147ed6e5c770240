"""Plausible wrong answers to the chapter 10 questions, each with the text its failure must show."""
from __future__ import annotations

import torch


def gd_lr_over_n_twice(xs, ys, lr):
    """Divides by n twice (the mean of the gradient, then the step size 'per example')."""
    n = xs.shape[1] - 1
    dw = lr / n ** 2 * (ys[:, :-1, None] * xs[:, :-1]).sum(1)
    return (dw * xs[:, -1]).sum(-1)


def gd_includes_query(xs, ys, lr):
    """Sums over all n + 1 tokens: the query's target leaks into the step."""
    n = xs.shape[1] - 1
    dw = lr / n * (ys[:, :, None] * xs).sum(1)
    return (dw * xs[:, -1]).sum(-1)


def gd_wrong_sign(xs, ys, lr):
    """Steps up the gradient."""
    n = xs.shape[1] - 1
    dw = -lr / n * (ys[:, :-1, None] * xs[:, :-1]).sum(1)
    return (dw * xs[:, -1]).sum(-1)


def gd_library(xs, ys, lr):
    from minilib.icl import gd_predict
    return gd_predict(xs, ys, lr)


def _lsa(z, lr, *, keys_include_query=False, residual=True, sign=-1.0, transpose_scores=False):
    d = z.shape[-1] - 1
    w_kq = torch.zeros(d + 1, d + 1, dtype=z.dtype)
    w_kq[:d, :d] = torch.eye(d, dtype=z.dtype)
    w_pv = torch.zeros(d + 1, d + 1, dtype=z.dtype)
    w_pv[d, d] = sign * lr
    context = z if keys_include_query else z[:, :-1]
    scores = z @ w_kq.T @ context.transpose(1, 2)
    update = scores @ (context @ w_pv.T) / (z.shape[1] - 1)
    return z + update if residual else update


def lsa_query_is_a_key(z, lr):
    """Lets the query attend to itself: its y slot (0 in a fresh prompt, not later) enters the sum."""
    return _lsa(z, lr, keys_include_query=True)


def lsa_no_residual(z, lr):
    """Returns the attention update without adding it to the tokens."""
    return _lsa(z, lr, residual=False)


def lsa_plus_lr(z, lr):
    """W_PV = +lr: the residuals grow instead of shrinking."""
    return _lsa(z, lr, sign=1.0)


def width_wrong_axis(keys, queries):
    """Counts, for each key, the queries above it: the selector read along the wrong axis."""
    return (keys[:, None] < queries[None, :]).sum(-1).to(keys.dtype)


def width_leq(keys, queries):
    """Selects keys <= query."""
    return (keys[None, :] <= queries[:, None]).sum(-1).to(keys.dtype)


def width_bool(keys, queries):
    """Returns the count as integers, not in the input's dtype."""
    return (keys[None, :] < queries[:, None]).sum(-1)


def sort_no_tie_break(x):
    """Target position = number of smaller values: equal values collide on one position."""
    target = (x[None, :] < x[:, None]).sum(-1)
    out = torch.zeros_like(x)
    for q in range(len(x)):
        out[target[q]] = x[q]
    return out


def sort_descending(x):
    """Counts the larger values instead."""
    idx = torch.arange(len(x))
    target = (x[None, :] > x[:, None]).sum(-1) + ((x[None, :] == x[:, None]) & (idx[None, :] < idx[:, None])).sum(-1)
    out = torch.zeros_like(x)
    out[target] = x
    return out


def sort_builtin(x):
    return torch.sort(x).values


def sort_wrong_axis(x):
    """Aggregates with select(indices, target, ==): puts element p at position target[p] read the other way round."""
    idx = torch.arange(len(x))
    target = (x[None, :] < x[:, None]).sum(-1) + ((x[None, :] == x[:, None]) & (idx[None, :] < idx[:, None])).sum(-1)
    return x[target]


def _score(attn, tokens, shift):
    T = tokens.shape[0]
    L = T // 2
    match = torch.zeros(T, T, dtype=torch.bool)
    for t in range(L, T):
        for s in range(T):
            if 0 <= s - shift <= t - shift and s <= t and tokens[s - shift] == tokens[t]:
                match[t, s] = True
    return (attn * match).sum((-1, -2)) / L


def score_same_token(attn, tokens):
    """Attention to the earlier copy of the token itself (a duplicate-token head), not to the token after it."""
    T = tokens.shape[0]
    match = (tokens[None, :] == tokens[:, None]) & torch.ones(T, T, dtype=torch.bool).tril(-1)
    match[: T // 2] = False
    return (attn * match).sum((-1, -2)) / (T // 2)


def score_all_queries(attn, tokens):
    """Averages over all T queries instead of the L of the repeated half."""
    T = tokens.shape[0]
    return _score(attn, tokens, 1) * (T // 2) / T


def score_shift_two(attn, tokens):
    """Looks two tokens back (s - 2) instead of one."""
    return _score(attn, tokens, 2)


WRONG = [
    ("10.q1", gd_lr_over_n_twice, "max abs error"),
    ("10.q1", gd_includes_query, "max abs error"),
    ("10.q1", gd_wrong_sign, "max abs error"),
    ("10.q1", gd_library, "forbidden"),
    ("10.q2", lsa_query_is_a_key, "y slots not from a fresh prompt"),
    ("10.q2", lsa_no_residual, "max abs error"),
    ("10.q2", lsa_plus_lr, "max abs error"),
    ("10.q3", width_wrong_axis, "wrong shape"),
    ("10.q3", width_leq, "max abs error"),
    ("10.q3", width_bool, "wrong dtype"),
    ("10.q4", sort_no_tie_break, "repeated values"),
    ("10.q4", sort_descending, "max abs error"),
    ("10.q4", sort_builtin, "forbidden"),
    ("10.q4", sort_wrong_axis, "max abs error"),
    ("10.q5", score_same_token, "max abs error"),
    ("10.q5", score_all_queries, "max abs error"),
    ("10.q5", score_shift_two, "max abs error"),
]
