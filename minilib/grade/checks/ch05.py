"""Chapter 05 questions: the bottom-right sliding window, ETC's global-local mask, BiFormer's region routing,
StreamingLLM's eviction and H2O's heavy-hitter eviction.

The references are independent float64 computations written here (triangular masks from ``torch.tril``, a Python
loop over regions, explicit index lists), never ``minilib.sparse``, whose functions the answers may not call.
A mask question returns the attention weights the mask gives (the softmax over the kept keys, zero elsewhere),
so that every answer is a finite floating-point tensor compared entry by entry.
"""
from __future__ import annotations

import torch

from minilib.grade.questions import Case, Question

f32, f64 = torch.float32, torch.float64
NEG = float("-inf")

LIBRARY = ("minilib.sparse.sliding_window_mask", "minilib.sparse.sink_window_mask", "minilib.sparse.global_local_mask",
           "minilib.sparse.dilated_window_mask", "minilib.sparse.block_local_mask", "minilib.sparse.routing_mask",
           "minilib.sparse.bilevel_routing_attention", "minilib.sparse.topk_mask", "minilib.sparse.topk_attention",
           "minilib.sparse.cached_attention", "minilib.attention.causal_mask")


def _randn(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64) * scale


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --- 05.q1 sliding window, bottom-right aligned -------------------------------------------------

def _window_cases() -> list[Case]:
    shapes = [(4, 4, 2, f64), (3, 7, 2, f64), (5, 5, 1, f64), (6, 6, 9, f64), (1, 8, 3, f32), (4, 10, 4, f32),
              (7, 7, 3, f32)]
    cases = []
    for i, (T, S, w, dtype) in enumerate(shapes):
        hint = ""
        if S > T:
            hint = (f"with S={S} keys and T={T} queries, query t sits at position t + {S - T}: it reads keys "
                    f"t + {S - T} - {w - 1} .. t + {S - T} (the last T of the S positions, as when decoding)")
        cases.append(Case(f"T={T}, S={S}, window={w}, {_name(dtype)}", (_randn((2, T, S), 200 + i).to(dtype), w), hint=hint))
    return cases


def _window_reference(scores, window):
    T, S = scores.shape[-2:]
    ones = torch.ones(T, S, dtype=torch.bool)
    keep = ones.tril(S - T) & ~ones.tril(S - T - window)  # s <= p and s > p - window, p = t + S - T
    return torch.softmax(scores.masked_fill(~keep, NEG), dim=-1)


Q1 = Question(
    id="05.q1",
    name="sliding_window_weights",
    arg_names=("scores", "window"),
    title="sliding-window attention weights, bottom-right aligned",
    make_cases=_window_cases,
    reference=_window_reference,
    hint="query t is at position p = t + S - T; keep key s when p - window < s <= p (window keys, itself included), "
    "set every other score to -inf and take the softmax over the last axis",
    forbidden=LIBRARY,
)


# --- 05.q2 global + local (ETC) -----------------------------------------------------------------

def _global_cases() -> list[Case]:
    shapes = [(8, 1, 2, f64), (10, 2, 1, f64), (6, 0, 3, f64), (9, 3, 0, f64), (12, 2, 2, f32), (5, 4, 5, f32)]
    return [Case(f"T={T}, radius={r}, n_global={g}, {_name(dtype)}", (_randn((T, T), 300 + i).to(dtype), r, g),
                 hint="the first n_global tokens are global: their rows and their columns are all kept")
            for i, (T, r, g, dtype) in enumerate(shapes)]


def _global_reference(scores, radius, n_global):
    T = scores.shape[-1]
    keep = torch.zeros(T, T, dtype=torch.bool)
    keep[:n_global, :] = True
    keep[:, :n_global] = True
    ones = torch.ones(T, T, dtype=torch.bool)
    keep |= ones.tril(radius) & ones.triu(-radius)  # |t - s| <= radius
    return torch.softmax(scores.masked_fill(~keep, NEG), dim=-1)


Q2 = Question(
    id="05.q2",
    name="global_local_weights",
    arg_names=("scores", "radius", "n_global"),
    title="ETC's global-local attention weights",
    make_cases=_global_cases,
    reference=_global_reference,
    hint="keep (t, s) when t < n_global or s < n_global or |t - s| <= radius (not causal); scores -inf elsewhere, "
    "then the softmax over the last axis",
    forbidden=LIBRARY,
)


# --- 05.q3 bi-level routing ---------------------------------------------------------------------

def _routing_cases() -> list[Case]:
    shapes = [(4, 3, 2, 1, 4, f64), (3, 4, 3, 2, 5, f64), (4, 4, 2, 4, 3, f64), (2, 5, 4, 2, 2, f32), (5, 2, 3, 1, 4, f32)]
    cases = []
    for i, (n_regions, r, D, k_top, Dv, dtype) in enumerate(shapes):
        T = n_regions * r
        q, k, v = _randn((T, D), 400 + 3 * i, 1.5), _randn((T, D), 401 + 3 * i, 1.5), _randn((T, Dv), 402 + 3 * i)
        cases.append(Case(f"T={T}, region_size={r}, D={D}, k_top={k_top}, {_name(dtype)}",
                          (q.to(dtype), k.to(dtype), v.to(dtype), r, k_top)))
    return cases


def _routing_reference(q, k, v, region_size, k_top):
    n = q.shape[0] // region_size
    regions = [slice(i * region_size, (i + 1) * region_size) for i in range(n)]
    out = torch.empty(q.shape[0], v.shape[-1], dtype=f64)
    for i, rq in enumerate(regions):
        affinity = [float(q[rq].mean(0) @ k[rk].mean(0)) for rk in regions]
        chosen = sorted(range(n), key=lambda j: -affinity[j])[:k_top]
        keys = torch.cat([torch.arange(n * region_size)[regions[j]] for j in chosen])
        s = q[rq] @ k[keys].T / q.shape[-1] ** 0.5
        out[rq] = torch.exp(s - torch.logsumexp(s, -1, keepdim=True)) @ v[keys]
    return out


Q3 = Question(
    id="05.q3",
    name="bilevel_routing",
    arg_names=("q", "k", "v", "region_size", "k_top"),
    title="BiFormer's bi-level routing: top-k regions, then token attention inside them",
    make_cases=_routing_cases,
    reference=_routing_reference,
    hint="regions are consecutive blocks of region_size tokens; affinity A[i, j] = mean(q over region i) . mean(k over "
    "region j); each query region keeps its k_top regions of largest affinity; its tokens then attend (softmax of "
    "q k^T / sqrt(D)) to all tokens of those regions",
    forbidden=LIBRARY,
)


# --- 05.q4 StreamingLLM eviction ----------------------------------------------------------------

def _streaming_cases() -> list[Case]:
    shapes = [(10, 2, 3, f64), (12, 4, 4, f64), (6, 1, 5, f64), (5, 2, 4, f64), (9, 0, 3, f32), (20, 4, 8, f32)]
    cases = []
    for i, (S, n_sinks, window, dtype) in enumerate(shapes):
        hint = ""
        if S <= n_sinks + window:
            hint = f"S={S} <= n_sinks + window = {n_sinks + window}: nothing is evicted, every key stays once"
        cases.append(Case(f"S={S}, n_sinks={n_sinks}, window={window}, {_name(dtype)}",
                          (_randn((S, 3), 500 + i).to(dtype), n_sinks, window), hint=hint))
    return cases


def _streaming_reference(k, n_sinks, window):
    S = k.shape[0]
    kept = [s for s in range(S) if s < n_sinks or s >= S - window]
    return k[kept]


Q4 = Question(
    id="05.q4",
    name="streaming_evict",
    arg_names=("k", "n_sinks", "window"),
    title="StreamingLLM: keep the attention sinks and the recent window",
    make_cases=_streaming_cases,
    reference=_streaming_reference,
    hint="keep the first n_sinks keys (the sinks) and the last window keys, in their original order, each at most "
    "once; evict the middle",
    forbidden=LIBRARY,
)


# --- 05.q5 heavy-hitter eviction ----------------------------------------------------------------

def _heavy_cases() -> list[Case]:
    shapes = [(8, 4, 2, f64), (10, 5, 1, f64), (6, 3, 0, f64), (7, 7, 2, f64), (12, 6, 3, f32), (9, 4, 4, f32)]
    cases = []
    for i, (S, budget, n_recent, dtype) in enumerate(shapes):
        scores = _randn((S, S), 600 + i, 2.0).masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), NEG)
        attn = torch.softmax(scores, -1)  # row t: how query t spread its attention over keys 0..t
        cases.append(Case(f"S={S}, budget={budget}, n_recent={n_recent}, {_name(dtype)}",
                          (attn.to(dtype), _randn((S, 2), 650 + i).to(dtype), budget, n_recent)))
    return cases


def _heavy_reference(attn, k, budget, n_recent):
    S = k.shape[0]
    received = [float(sum(attn[t, s] for t in range(S))) for s in range(S)]  # column sums
    recent = list(range(S - n_recent, S))
    older = sorted(range(S - n_recent), key=lambda s: -received[s])[:budget - n_recent]
    return k[sorted(older + recent)]


Q5 = Question(
    id="05.q5",
    name="heavy_hitter_evict",
    arg_names=("attn", "k", "budget", "n_recent"),
    title="H2O: keep the recent keys and the heavy hitters by accumulated attention",
    make_cases=_heavy_cases,
    reference=_heavy_reference,
    hint="a key's score is the attention it received, summed over the queries (the column sum attn[:, s]); keep the "
    "last n_recent keys, fill the rest of the budget with the highest-scoring older keys, return the kept keys in "
    "their original order",
    forbidden=LIBRARY,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
