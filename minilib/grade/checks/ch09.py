"""Chapter 09 questions: SwiGLU, top-k gates, MoE dispatch and combine, the load-balancing loss, Pattention.

Every reference is an independent float64 computation written here (loops over tokens and experts,
torch built-ins), never ``minilib.feedforward`` or ``minilib.moe``; the answers may not call them either.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minilib.grade.checks.common import f32, f64, randn
from minilib.grade.questions import Case, Question

#: The library's FFN and mixture-of-experts code, off limits to every answer of this chapter.
LIBRARY_FFN = ("minilib.feedforward", "minilib.moe")


# --- 09.q1 swiglu ------------------------------------------------------------------------------

def _swiglu_cases() -> list[Case]:
    def case(label, n, d, f, dtype, seed, scale=1.0, hint=""):
        return Case(label, (randn((n, d), dtype, seed, scale), randn((d, f), dtype, seed + 1, d ** -0.5),
                            randn((d, f), dtype, seed + 2, d ** -0.5), randn((f, d), dtype, seed + 3, f ** -0.5)),
                    hint=hint)

    return [case("N=5, d=4, d_ff=8, float64", 5, 4, 8, f64, 1,
                 hint="the gate is silu(x @ w1), the value x @ w3 (no activation): silu(x @ w1) * (x @ w3), then @ w2"),
            case("one token, d=6, d_ff=16, float64", 1, 6, 16, f64, 5),
            case("N=7, d=8, d_ff=24, float32", 7, 8, 24, f32, 9),
            case("large pre-activations (x times 20), float64", 4, 4, 8, f64, 13, scale=20.0,
                 hint="silu(z) = z * sigmoid(z): for z << 0 it tends to 0, for z >> 0 to z")]


def _swiglu_reference(x, w1, w3, w2):
    a = x @ w1
    return (a / (1 + torch.exp(-a)) * (x @ w3)) @ w2


Q1 = Question(
    id="09.q1", name="swiglu", arg_names=("x", "w1", "w3", "w2"),
    title="the SwiGLU feed-forward network",
    make_cases=_swiglu_cases, reference=_swiglu_reference,
    hint="(silu(x @ w1) * (x @ w3)) @ w2 with silu(z) = z * sigmoid(z)",
    forbidden=LIBRARY_FFN)


# --- 09.q2 top-k gates -------------------------------------------------------------------------

def _gates_cases() -> list[Case]:
    def case(label, n, e, k, dtype, seed, scale=1.0, hint=""):
        return Case(label, (randn((n, e), dtype, seed, scale), k), hint=hint)

    return [case("N=6, E=4, k=2, float64", 6, 4, 2, f64, 1,
                 hint="softmax over all E experts first, keep the k largest, then divide them by their sum so "
                      "each row's gates add up to 1"),
            case("k=1 (Switch): the one kept gate is 1, float64", 5, 8, 1, f64, 2),
            case("k=E: every expert, the gates are the softmax, float64", 3, 3, 3, f64, 3),
            case("N=9, E=8, k=3, float32", 9, 8, 3, f32, 4),
            case("logits of size 50, float64", 4, 6, 2, f64, 5, scale=50.0,
                 hint="exp(50) overflows float32's comfort zone: subtract each row's max before exponentiating")]


def _gates_reference(logits, k):
    n, e = logits.shape
    out = torch.zeros_like(logits)
    for t in range(n):
        p = torch.exp(logits[t] - logits[t].max())
        p = p / p.sum()
        chosen = sorted(range(e), key=lambda j: -p[j].item())[:k]
        total = sum(p[j] for j in chosen)
        for j in chosen:
            out[t, j] = p[j] / total
    return out


Q2 = Question(
    id="09.q2", name="top_k_gates", arg_names=("logits", "k"),
    title="top-k router: dense gates with renormalised weights",
    make_cases=_gates_cases, reference=_gates_reference,
    hint="p = softmax(logits, -1); keep the k largest per row (torch.topk), renormalise them to sum to 1, "
         "scatter them into a zero (N, E) matrix",
    forbidden=LIBRARY_FFN)


# --- 09.q3 dispatch and combine ----------------------------------------------------------------

def _gates(n, e, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gates = torch.zeros(n, e, dtype=f64)
    for t in range(n):
        chosen = torch.randperm(e, generator=g)[:k]
        w = torch.rand(k, generator=g, dtype=f64) + 0.1
        gates[t, chosen] = w / w.sum()
    return gates.to(dtype)


def _combine_cases() -> list[Case]:
    def case(label, n, d, f, e, k, dtype, seed, hint=""):
        return Case(label, (randn((n, d), dtype, seed), _gates(n, e, k, dtype, seed + 1),
                            randn((e, d, f), dtype, seed + 2, d ** -0.5), randn((e, f, d), dtype, seed + 3, f ** -0.5)),
                    hint=hint)

    cases = [case("N=8, d=4, d_ff=6, E=4, k=2, float64", 8, 4, 6, 4, 2, f64, 1,
                  hint="y_t = sum_e gates[t, e] * relu(x_t @ w1[e]) @ w2[e]: each expert's output is weighted by "
                       "its gate before the sum"),
             case("k=1, E=3, float64", 6, 4, 8, 3, 1, f64, 5),
             case("N=12, E=6, k=3, float32", 12, 8, 16, 6, 3, f32, 9)]
    x, gates, w1, w2 = case("", 5, 4, 6, 4, 2, f64, 13).args
    gates[:, 3] = 0.0  # expert 3 gets no token
    cases.append(Case("an expert with no tokens, float64", (x, gates, w1, w2),
                      hint="an expert that no token chose contributes nothing (and must not fail on 0 tokens)"))
    return cases


def _combine_reference(x, gates, w1, w2):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for e in range(gates.shape[1]):
            if gates[t, e] != 0:
                out[t] += gates[t, e] * (torch.clamp(x[t] @ w1[e], min=0) @ w2[e])
    return out


Q3 = Question(
    id="09.q3", name="moe_dispatch_combine", arg_names=("x", "gates", "w1", "w2"),
    title="dispatch tokens to their experts and combine the weighted outputs",
    make_cases=_combine_cases, reference=_combine_reference,
    hint="for each expert e: idx = gates[:, e].nonzero(); h = relu(x[idx] @ w1[e]) @ w2[e]; "
         "out.index_add_(0, idx, gates[idx, e, None] * h)",
    forbidden=LIBRARY_FFN)


# --- 09.q4 load-balancing loss -----------------------------------------------------------------

def _balance_cases() -> list[Case]:
    def probs(n, e, dtype, seed, scale=1.0):
        return torch.softmax(randn((n, e), f64, seed, scale), -1).to(dtype)

    def case(label, n, e, k, dtype, seed, scale=1.0, hint=""):
        p = probs(n, e, f64, seed, scale)
        return Case(label, (p.to(dtype), p.topk(k, -1).indices), hint=hint)

    uniform = torch.full((8, 4), 0.25, dtype=f64)
    return [case("N=10, E=4, k=1, float64", 10, 4, 1, f64, 1,
                 hint="f_e = (assignments to e) / (N k), a count over the token axis of experts; "
                      "P_e = probs[:, e].mean() over tokens; loss = E * sum_e f_e P_e"),
            case("k=2: N k assignments, float64", 12, 6, 2, f64, 2,
                 hint="with top-2 there are N * k assignments: f_e divides the count by N k, so sum_e f_e = 1"),
            Case("a uniform router with a balanced load gives exactly 1, float64",
                 (uniform, torch.arange(8).remainder(4)[:, None])),
            case("a peaked router (logits x 5), E=8, k=2, float32", 16, 8, 2, f32, 3, scale=5.0)]


def _balance_reference(probs, experts):
    n, e = probs.shape
    total = experts.numel()
    loss = torch.zeros((), dtype=f64)
    for j in range(e):
        f_j = sum(int((experts[t] == j).sum()) for t in range(n)) / total
        loss = loss + f_j * probs[:, j].sum() / n
    return e * loss


Q4 = Question(
    id="09.q4", name="load_balancing_loss", arg_names=("probs", "experts"),
    title="Switch's load-balancing loss",
    make_cases=_balance_cases, reference=_balance_reference,
    hint="E * sum_e f_e * P_e with f_e the fraction of the N k assignments in experts that go to e and "
         "P_e the mean of probs[:, e]",
    forbidden=LIBRARY_FFN)


# --- 09.q5 Pattention --------------------------------------------------------------------------

def _pattention_cases() -> list[Case]:
    def case(label, n, d, m, dv, dtype, seed, zeros=0, hint=""):
        keys, values = randn((m, d), dtype, seed + 1), randn((m, dv), dtype, seed + 2)
        if zeros:
            keys, values = (torch.cat([keys, torch.zeros(zeros, d, dtype=dtype)]),
                            torch.cat([values, torch.zeros(zeros, dv, dtype=dtype)]))
        return Case(label, (randn((n, d), dtype, seed), keys, values, math.sqrt(m)), hint=hint)

    return [case("N=5, d=4, 6 parameter tokens, float64", 5, 4, 6, 3, f64, 1,
                 hint="scores s = x @ keys.T (N, m); each row divided by its L2 norm and multiplied by tau; "
                      "then GELU (not softmax), then @ values"),
            case("one token, 16 parameter tokens, float32", 1, 8, 16, 8, f32, 4),
            case("grown: 4 zero-initialised parameter tokens appended to 6, float64", 4, 4, 6, 3, f64, 7, zeros=4,
                 hint="zero keys give zero scores; they must add nothing: the row's L2 norm ignores them and "
                      "GELU(0) = 0, whereas a softmax would give them weight exp(0)"),
            case("N=7, d=8, 12 parameter tokens, float64", 7, 8, 12, 5, f64, 10)]


def _pattention_reference(x, keys, values, tau):
    s = x @ keys.T
    a = s * tau / torch.sqrt((s * s).sum(-1, keepdim=True))
    return (0.5 * a * (1 + torch.erf(a / math.sqrt(2)))) @ values


Q5 = Question(
    id="09.q5", name="pattention", arg_names=("x", "keys", "values", "tau"),
    title="TokenFormer's Pattention: tokens attend to parameter tokens",
    make_cases=_pattention_cases, reference=_pattention_reference,
    hint="s = x @ keys.T; a = tau * s / ||s||_2 (per row); return gelu(a) @ values",
    forbidden=LIBRARY_FFN)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
