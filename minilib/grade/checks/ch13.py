"""Chapter 13 questions: a causal exponential-moving-average mixer, the bytes a decoding cache holds, the MQAR
accuracy metric.

The references are loops over positions and products of sizes written from the equations, never
``minilib.models.zoo``; the answers may not call the library's counters either.
"""
from __future__ import annotations

import torch

from minilib.grade.questions import Case, Question

f32, f64 = torch.float32, torch.float64

LIBRARY = ("minilib.models.zoo", "minilib.attention.kv_cache_bytes", "minilib.attention.cache.kv_cache_bytes")


def _randn(shape, dtype, seed, scale=1.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64) * scale).to(dtype)


def _rand(shape, dtype, seed, low=0.05, high=0.95):
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)
    return (low + (high - low) * u).to(dtype)


# --- 13.q1 a causal exponential moving average ---------------------------------------------

def _ema_cases() -> list[Case]:
    return [
        Case("(1, 5, 2): the first output is alpha * x_0, float64", (_randn((1, 5, 2), f64, 3) + 3.0, _rand((2,), f64, 4)),
             hint="the state starts at zero: y_0 = alpha * x_0, not x_0"),
        Case("(2, 6, 3), float64", (_randn((2, 6, 3), f64, 1), _rand((3,), f64, 2))),
        Case("(3, 7, 4), float32", (_randn((3, 7, 4), f32, 5), _rand((4,), f32, 6))),
        Case("L=1 (2, 1, 3), float64", (_randn((2, 1, 3), f64, 7), _rand((3,), f64, 8))),
        Case("alpha near 1 and near 0 per channel (1, 8, 2), float64",
             (_randn((1, 8, 2), f64, 9), torch.tensor([0.99, 0.02], dtype=f64)),
             hint="alpha weighs the NEW token: alpha near 1 follows x, alpha near 0 keeps the past"),
        Case("(2, 9, 3), float32", (_randn((2, 9, 3), f32, 10), _rand((3,), f32, 11)),
             hint="causal: y_t reads x_0..x_t only, so run the recurrence forward in time"),
    ]


def _ema_reference(x, alpha):
    out = torch.empty_like(x)
    y = torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        y = alpha * x[:, t] + (1 - alpha) * y
        out[:, t] = y
    return out


Q1 = Question(
    id="13.q1",
    name="ema_mix",
    arg_names=("x", "alpha"),
    title="a causal exponential moving average over the sequence, one decay per channel",
    make_cases=_ema_cases,
    reference=_ema_reference,
    hint="y_t = alpha * x_t + (1 - alpha) * y_{t-1} with y_{-1} = 0, channel by channel (alpha has shape (C,)); "
    "y_t = sum_{s<=t} alpha (1 - alpha)^(t-s) x_s",
    forbidden=LIBRARY,
)


# --- 13.q2 decoding memory ---------------------------------------------------------------

def _bytes_cases() -> list[Case]:
    def case(label, contexts, hint="", **sizes):
        return Case(label, (torch.tensor(contexts, dtype=f64),), sizes, hint=hint)

    return [
        case("MHA: L=2, H=Hkv=4, D=16, float32 elements", [1.0, 1024.0, 4096.0],
             n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, element_size=4,
             hint="a KV cache keeps a key AND a value per position, layer and key/value head"),
        case("GQA: L=3, H=8, Hkv=2, D=8, float16 elements", [0.0, 7.0, 100.0],
             n_layers=3, n_heads=8, n_kv_heads=2, head_dim=8, element_size=2,
             hint="only the key/value heads are cached: use n_kv_heads, not n_heads"),
        case("MQA: L=1, H=4, Hkv=1, D=32, float64 elements", [5.0, 10.0],
             n_layers=1, n_heads=4, n_kv_heads=1, head_dim=32, element_size=8),
        case("empty context: L=2, H=Hkv=2, D=4", [0.0],
             n_layers=2, n_heads=2, n_kv_heads=2, head_dim=4, element_size=4,
             hint="a linear-attention state is a D x D matrix per head from the start: it does not grow with the "
             "context, nor is it empty before the first token"),
    ]


def _bytes_reference(contexts, *, n_layers, n_heads, n_kv_heads, head_dim, element_size):
    kv = torch.zeros_like(contexts)
    for i, s in enumerate(contexts.tolist()):
        kv[i] = 2 * n_layers * n_kv_heads * head_dim * s * element_size
    state = torch.full_like(contexts, n_layers * n_heads * head_dim * head_dim * element_size)
    return torch.stack([kv, state], dim=1)


Q2 = Question(
    id="13.q2",
    name="decoding_bytes",
    arg_names=("contexts",),
    title="the bytes decoding holds: a KV cache grows with the context, a linear-attention state does not",
    make_cases=_bytes_cases,
    reference=_bytes_reference,
    hint="column 0: 2 * n_layers * n_kv_heads * head_dim * context * element_size (keys and values); column 1: "
    "n_layers * n_heads * head_dim**2 * element_size (one D x D state per head), whatever the context",
    forbidden=LIBRARY,
)


# --- 13.q3 the MQAR accuracy --------------------------------------------------------------

def _accuracy_cases() -> list[Case]:
    def case(label, B, T, V, dtype, seed, *, density=0.4, hint=""):
        g = torch.Generator().manual_seed(seed)
        logits = _randn((B, T, V), dtype, seed)
        targets = torch.randint(0, V, (B, T), generator=g)
        # make about half of the answers right, so that the metric is not near 0
        right = torch.rand(B, T, generator=g) < 0.5
        logits = logits + 10.0 * right[..., None] * torch.nn.functional.one_hot(targets, V).to(dtype)
        mask = torch.rand(B, T, generator=g) < density
        mask[0, -1] = True
        return Case(label, (logits, targets, mask), hint=hint)

    return [
        case("rows with different numbers of queries (4, 12, 5), float64", 4, 12, 5, f64, 2, density=0.3,
             hint="average over all query positions together, not row by row: rows hold different numbers of queries"),
        case("(3, 10, 6), float64", 3, 10, 6, f64, 1),
        case("(2, 9, 7), float32", 2, 9, 7, f32, 3),
        case("one query (1, 6, 4), float64", 1, 6, 4, f64, 4, density=0.0,
             hint="only the positions where mask is True count; the others have targets too, but no answer"),
        case("(5, 15, 9), float32", 5, 15, 9, f32, 5),
    ]


def _accuracy_reference(logits, targets, mask):
    hits = total = 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if mask[b, t]:
                total += 1
                row = logits[b, t].tolist()
                hits += int(row.index(max(row)) == int(targets[b, t]))
    return torch.tensor(hits / total, dtype=f64)


Q3 = Question(
    id="13.q3",
    name="mqar_accuracy",
    arg_names=("logits", "targets", "mask"),
    title="the MQAR accuracy: the share of query positions whose most likely token is the answer",
    make_cases=_accuracy_cases,
    reference=_accuracy_reference,
    hint="(logits.argmax(-1) == targets)[mask].mean() as a 0-d tensor of the logits' dtype: every True "
    "position of mask counts once",
    forbidden=LIBRARY,
)

QUESTIONS = [Q1, Q2, Q3]
