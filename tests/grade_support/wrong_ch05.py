"""Plausible wrong answers to the chapter 05 questions, each with the text its failure must show."""
from __future__ import annotations

import torch

NEG = float("-inf")


def _masked(scores, keep):
    return torch.softmax(scores.masked_fill(~keep, NEG), dim=-1)


def window_off_by_one(scores, window):
    """Keeps window + 1 keys (s >= p - window)."""
    T, S = scores.shape[-2:]
    p, s = torch.arange(S - T, S)[:, None], torch.arange(S)[None, :]
    return _masked(scores, (s <= p) & (s >= p - window))


def window_top_left(scores, window):
    """Aligns query t with key t, as if T == S (wrong once there are more keys than queries)."""
    T, S = scores.shape[-2:]
    t, s = torch.arange(T)[:, None], torch.arange(S)[None, :]
    return _masked(scores, (s <= t) & (s > t - window))


def window_two_sided(scores, window):
    """A symmetric band |p - s| < window: reads future keys."""
    T, S = scores.shape[-2:]
    p, s = torch.arange(S - T, S)[:, None], torch.arange(S)[None, :]
    return _masked(scores, (p - s).abs() < window)


def window_library(scores, window):
    from minilib.sparse import sliding_window_mask

    T, S = scores.shape[-2:]
    return _masked(scores, sliding_window_mask(T, window, S=S))


def global_columns_only(scores, radius, n_global):
    """Every token reads the globals, but the global tokens' own rows stay local."""
    T = scores.shape[-1]
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return _masked(scores, (s < n_global) | ((t - s).abs() <= radius))


def global_radius_off_by_one(scores, radius, n_global):
    """A radius-r neighbourhood of 2r - 1 keys (|t - s| < r)."""
    T = scores.shape[-1]
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return _masked(scores, (t < n_global) | (s < n_global) | ((t - s).abs() < radius))


def global_at_the_end(scores, radius, n_global):
    """Takes the last n_global tokens as the global ones."""
    T = scores.shape[-1]
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    g = T - n_global
    return _masked(scores, (t >= g) | (s >= g) | ((t - s).abs() <= radius))


def _route(q, k, v, region_size, chosen_for):
    n = q.shape[0] // region_size
    out = torch.empty(q.shape[0], v.shape[-1], dtype=q.dtype)
    for i in range(n):
        rows = slice(i * region_size, (i + 1) * region_size)
        keys = torch.cat([torch.arange(j * region_size, (j + 1) * region_size) for j in chosen_for(i)])
        s = q[rows] @ k[keys].T / q.shape[-1] ** 0.5
        out[rows] = torch.softmax(s, -1) @ v[keys]
    return out


def routing_lowest_affinity(q, k, v, region_size, k_top):
    """Keeps the k_top regions of *smallest* affinity."""
    n = q.shape[0] // region_size
    qr, kr = q.view(n, region_size, -1).mean(1), k.view(n, region_size, -1).mean(1)
    aff = qr @ kr.T
    return _route(q, k, v, region_size, lambda i: aff[i].topk(k_top, largest=False).indices.tolist())


def routing_first_token(q, k, v, region_size, k_top):
    """Summarises each region by its first token instead of its mean."""
    n = q.shape[0] // region_size
    qr, kr = q[::region_size], k[::region_size]
    aff = qr @ kr.T
    return _route(q, k, v, region_size, lambda i: aff[i].topk(k_top).indices.tolist())


def routing_strided_regions(q, k, v, region_size, k_top):
    """Regions as strided sets (token i in region i % n) for the routing, consecutive blocks for attention."""
    n = q.shape[0] // region_size
    qr, kr = q.view(region_size, n, -1).mean(0), k.view(region_size, n, -1).mean(0)
    aff = qr @ kr.T
    return _route(q, k, v, region_size, lambda i: aff[i].topk(k_top).indices.tolist())


def streaming_evicts_sinks(k, n_sinks, window):
    """Keeps the last n_sinks + window keys: the plain window of the same size, the sinks evicted."""
    return k[max(0, k.shape[0] - n_sinks - window):]


def streaming_window_off_by_one(k, n_sinks, window):
    """Keeps window - 1 recent keys."""
    S = k.shape[0]
    return k[[s for s in range(S) if s < n_sinks or s > S - window]]


def streaming_duplicates(k, n_sinks, window):
    """Concatenates sinks and window without checking that they overlap."""
    return torch.cat([k[:n_sinks], k[max(0, k.shape[0] - window):]])


def _heavy(scores, k, budget, n_recent):
    S = k.shape[0]
    older = scores[: S - n_recent].topk(budget - n_recent).indices
    keep = torch.cat([older, torch.arange(S - n_recent, S)]).sort().values
    return k[keep]


def heavy_wrong_axis(attn, k, budget, n_recent):
    """Sums each query's row (always 1) instead of the attention each key received."""
    return _heavy(attn.sum(1) + 1e-3 * torch.arange(k.shape[0], dtype=attn.dtype), k, budget, n_recent)


def heavy_mean_over_seen(attn, k, budget, n_recent):
    """Averages over the queries that could see the key (H2O sums: old keys have more queries)."""
    S = k.shape[0]
    return _heavy(attn.sum(0) / torch.arange(S, 0, -1, dtype=attn.dtype), k, budget, n_recent)


def heavy_no_recent(attn, k, budget, n_recent):
    """Ranks every key by accumulated attention, without protecting the recent ones."""
    keep = attn.sum(0).topk(budget).indices.sort().values
    return k[keep]


WRONG = [
    ("05.q1", window_off_by_one, "max abs error"),
    ("05.q1", window_top_left, "S=7"),
    ("05.q1", window_two_sided, "case 1/7"),
    ("05.q1", window_library, "forbidden"),
    ("05.q2", global_columns_only, "case 1/6"),
    ("05.q2", global_radius_off_by_one, "case 1/6"),
    ("05.q2", global_at_the_end, "case 1/6"),
    ("05.q3", routing_lowest_affinity, "max abs error"),
    ("05.q3", routing_first_token, "max abs error"),
    ("05.q3", routing_strided_regions, "max abs error"),
    ("05.q4", streaming_evicts_sinks, "case 1/6"),
    ("05.q4", streaming_window_off_by_one, "wrong shape"),
    ("05.q4", streaming_duplicates, "S=5, n_sinks=2, window=4"),
    ("05.q5", heavy_wrong_axis, "max abs error"),
    ("05.q5", heavy_mean_over_seen, "max abs error"),
    ("05.q5", heavy_no_recent, "max abs error"),
]
