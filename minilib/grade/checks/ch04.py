"""Chapter 04 questions: the decayed recurrence, RetNet's decay matrix, one chunk step, elu+1 attention, Aaren's combine.

The references are independent float64 computations written as the double sums and products of the
definitions (products of gates, explicit powers, a softmax over the keys), never ``minilib.linear_attention``,
whose functions the answers may not call either.
"""
from __future__ import annotations

import torch

from minilib.grade.questions import Case, Question

f32, f64 = torch.float32, torch.float64

LIBRARY = tuple(f"minilib.linear_attention.{name}" for name in (
    "linear_attention_parallel", "linear_attention_recurrent", "linear_attention_chunked", "feature_map",
    "aaren_combine", "attention_scan", "attention_rnn_step", "multiscale_decays"))
SOFTMAX = ("torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax", "torch.logsumexp",
           "torch.nn.functional.scaled_dot_product_attention", "minilib.attention.sdpa")


def _randn(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64) * scale


def _rand(shape, seed, low, high):
    return low + (high - low) * torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def _decayed_sum(q, k, v, gates, S0=None):
    """o_t = sum_{s<=t} (prod_{r=s+1..t} g_r) (q_t . k_s) v_s [+ (prod_{r<=t} g_r) S0^T q_t], as the double loop."""
    L = q.shape[0]
    out = torch.zeros(L, v.shape[-1], dtype=f64)
    for t in range(L):
        for s in range(t + 1):
            out[t] += gates[s + 1:t + 1].prod() * (q[t] @ k[s]) * v[s]
        if S0 is not None:
            out[t] += gates[:t + 1].prod() * (q[t] @ S0)
    return out


# --- 04.q1 the recurrent update with decay ------------------------------------------------------

def _recurrent_cases() -> list[Case]:
    def case(label, L, D, Dv, dtype, seed, low=0.5, high=1.0, hint=""):
        args = (_randn((L, D), seed), _randn((L, D), seed + 1), _randn((L, Dv), seed + 2), _rand(L, seed + 3, low, high))
        return Case(label, tuple(a.to(dtype) for a in args), hint=hint)

    return [
        case("L=1 (D=3, Dv=2), float64", 1, 3, 2, f64, 1,
             hint="with one token S_1 = g_1 * 0 + k_1 v_1^T, so o_1 = (q_1 . k_1) v_1"),
        case("L=6, D=4, Dv=3, gates in (0.5, 1), float64", 6, 4, 3, f64, 2,
             hint="the gate g_t multiplies the state carried in from t-1 *before* k_t v_t^T is added: the newest "
             "token is not decayed"),
        case("all gates 1: plain linear attention (L=5), float64", 5, 2, 2, f64, 3, low=1.0, high=1.0),
        case("strong decay, gates in (0.05, 0.3) (L=7), float64", 7, 3, 4, f64, 4, low=0.05, high=0.3),
        case("L=9, D=5, Dv=2, float32", 9, 5, 2, f32, 5),
    ]


Q1 = Question(
    id="04.q1",
    name="recurrent_linear_attention",
    arg_names=("q", "k", "v", "g"),
    title="the recurrence S_t = g_t S_{t-1} + k_t v_t^T, o_t = S_t^T q_t",
    make_cases=_recurrent_cases,
    reference=lambda q, k, v, g: _decayed_sum(q, k, v, g),
    hint="S = zeros(D, Dv); for each t: S = g[t] * S + outer(k[t], v[t]); out[t] = q[t] @ S",
    forbidden=LIBRARY,
)


# --- 04.q2 RetNet's decay matrix ----------------------------------------------------------------

def _decay_matrix_cases() -> list[Case]:
    return [
        Case("L=1, one head, float64", (1, torch.tensor([0.9], dtype=f64))),
        Case("L=5, gammas (0.5, 0.9), float64", (5, torch.tensor([0.5, 0.9], dtype=f64)),
             hint="D[h, t, s] = gamma_h ** (t - s) on and below the diagonal (s <= t), 0 above it; the diagonal is 1"),
        Case("L=8, RetNet's gammas 1 - 2**(-5-h), h=0..3, float64",
             (8, 1 - 2.0 ** (-5 - torch.arange(4, dtype=f64)))),
        Case("L=6, gamma = 1 (no decay), float32", (6, torch.tensor([1.0], dtype=f32))),
        Case("L=7, gammas (0.3, 0.7, 0.99), float32", (7, torch.tensor([0.3, 0.7, 0.99], dtype=f32))),
    ]


def _decay_matrix_reference(L, gammas):
    out = torch.zeros(len(gammas), L, L, dtype=f64)
    for h, gamma in enumerate(gammas.tolist()):
        for t in range(L):
            for s in range(t + 1):
                out[h, t, s] = gamma ** (t - s)
    return out


Q2 = Question(
    id="04.q2",
    name="retnet_decay_matrix",
    arg_names=("L", "gammas"),
    title="the parallel form's mask: D[h, t, s] = gamma_h^(t-s) for s <= t, else 0",
    make_cases=_decay_matrix_cases,
    reference=_decay_matrix_reference,
    hint="t = arange(L); diff = t[:, None] - t[None, :]; "
    "where(diff >= 0, gammas[:, None, None] ** diff.clamp(min=0), 0)",
    forbidden=LIBRARY,
)


# --- 04.q3 one chunk: intra + inter, and the state handed on ------------------------------------

def _chunk_cases() -> list[Case]:
    def case(label, C, D, Dv, gamma, dtype, seed, hint=""):
        args = (_randn((C, D), seed), _randn((C, D), seed + 1), _randn((C, Dv), seed + 2), _randn((D, Dv), seed + 3),
                torch.tensor(gamma, dtype=f64))
        return Case(label, tuple(a.to(dtype) for a in args), hint=hint)

    return [
        case("C=1 (D=2, Dv=3), gamma 0.8, float64", 1, 2, 3, 0.8, f64, 1),
        case("C=4, D=3, Dv=2, no decay (gamma 1), float64", 4, 3, 2, 1.0, f64, 2,
             hint="the incoming state contributes Q S to every row; the state handed on is S + K^T V"),
        case("C=5, D=3, Dv=4, gamma 0.7, float64", 5, 3, 4, 0.7, f64, 3,
             hint="row i sees the incoming state decayed i+1 times (gamma^(i+1)); key j reaches the outgoing state "
             "decayed C-1-j times, and the incoming state C times"),
        case("C=6, D=4, Dv=2, gamma 0.95, float32", 6, 4, 2, 0.95, f32, 4),
    ]


def _chunk_reference(q, k, v, S, gamma):
    C = q.shape[0]
    gates = gamma.expand(C)
    out = _decayed_sum(q, k, v, gates, S0=S)
    S_new = gamma ** C * S + sum(gamma ** (C - 1 - j) * torch.outer(k[j], v[j]) for j in range(C))
    return torch.cat([out, S_new], dim=0)


Q3 = Question(
    id="04.q3",
    name="chunk_step",
    arg_names=("q", "k", "v", "S", "gamma"),
    title="one chunk with constant decay: outputs and the state handed to the next chunk",
    make_cases=_chunk_cases,
    reference=_chunk_reference,
    hint="i = arange(C); Dm = where(i[:,None] >= i[None,:], gamma ** (i[:,None] - i[None,:]), 0); "
    "out = (q @ k.T * Dm) @ v + gamma ** (i + 1)[:, None] * (q @ S); "
    "S_new = gamma ** C * S + (gamma ** (C - 1 - i)[:, None] * k).T @ v; return cat([out, S_new])",
    forbidden=LIBRARY,
)


# --- 04.q4 elu+1 normalised causal linear attention ---------------------------------------------

def _elu_cases() -> list[Case]:
    def case(label, B, L, D, Dv, dtype, seed, shift=0.0, hint=""):
        args = (_randn((B, L, D), seed) + shift, _randn((B, L, D), seed + 1) + shift, _randn((B, L, Dv), seed + 2))
        return Case(label, tuple(a.to(dtype) for a in args), hint=hint)

    return [
        case("B=1, L=1 (D=2, Dv=2), float64", 1, 1, 2, 2, f64, 1,
             hint="one token: the normaliser equals the numerator's weight, so the output is v_1 itself"),
        case("B=2, L=6, D=3, Dv=4, float64", 2, 6, 3, 4, f64, 2),
        case("B=1, L=9, D=4, Dv=3, float32", 1, 9, 4, 3, f32, 3),
        case("inputs around -3 (elu+1 near 0) B=2, L=5, float64", 2, 5, 3, 2, f64, 4, shift=-3.0,
             hint="phi(x) = elu(x) + 1 is positive for every x; elu alone is negative and breaks the normaliser"),
    ]


def _elu_reference(q, k, v):
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    out = torch.zeros(*q.shape[:2], v.shape[-1], dtype=f64)
    for t in range(q.shape[1]):
        w = (phi_q[:, t, None, :] * phi_k[:, :t + 1]).sum(-1)  # (B, t+1)
        out[:, t] = (w[..., None] * v[:, :t + 1]).sum(1) / w.sum(1, keepdim=True)
    return out


Q4 = Question(
    id="04.q4",
    name="elu_linear_attention",
    arg_names=("q", "k", "v"),
    title="causal linear attention with phi = elu + 1 and its normaliser",
    make_cases=_elu_cases,
    reference=_elu_reference,
    hint="causal: position t sums over s <= t only, in the numerator and in the normaliser; phi = elu(x) + 1 > 0; "
    "num = cumsum over time of phi(k)[:,:,:,None] * v[:,:,None,:]; "
    "den = cumsum of phi(k); out_t = (phi(q_t) @ num_t) / (phi(q_t) . den_t)",
    forbidden=LIBRARY,
)


# --- 04.q5 Aaren's combine operator -------------------------------------------------------------

def _summary(scores, values):
    """(m, l, acc) packed as (..., 2 + Dv) for scores (..., n) and values (..., n, Dv)."""
    m = scores.amax(-1)
    e = (scores - m[..., None]).exp()
    return torch.cat([m[..., None], e.sum(-1)[..., None], (e[..., None] * values).sum(-2)], -1)


def _combine_cases() -> list[Case]:
    def case(label, N, n_a, n_b, Dv, dtype, seed, shift=0.0, scale=1.0, hint=""):
        s = _randn((N, n_a + n_b), seed, scale)
        s[:, n_a:] += shift
        v = _randn((N, n_a + n_b, Dv), seed + 1)
        a, b = _summary(s[:, :n_a], v[:, :n_a]), _summary(s[:, n_a:], v[:, n_a:])
        return Case(label, (a.to(dtype), b.to(dtype)), hint=hint)

    return [
        case("single tokens (N=3, Dv=2), float64", 3, 1, 1, 2, f64, 1),
        case("b holds the larger max (N=4, Dv=3), float64", 4, 3, 2, 3, f64, 2, shift=3.0,
             hint="rescale both summaries to M = max(m_a, m_b): multiply a's l and acc by exp(m_a - M), b's by exp(m_b - M)"),
        case("a holds the larger max (N=4, Dv=3), float64", 4, 5, 3, 3, f64, 3, shift=-3.0),
        case("scores of size 1e3 (N=2, Dv=2), float32", 2, 4, 4, 2, f32, 4, shift=50.0, scale=1e3,
             hint="exp(m) overflows for m of 1e3: only ever exponentiate differences m - M <= 0"),
        case("mixed (N=5, Dv=4), float32", 5, 2, 6, 4, f32, 5, shift=1.0),
    ]


def _combine_reference(a, b):
    # the summary of the concatenated prefix, rebuilt in log space: log l = m + log l, log acc weights likewise
    m = torch.maximum(a[..., 0], b[..., 0])
    log_l = torch.logaddexp(a[..., 0] + a[..., 1].log(), b[..., 0] + b[..., 1].log())
    acc = (a[..., 0] - m).exp()[..., None] * a[..., 2:] + (b[..., 0] - m).exp()[..., None] * b[..., 2:]
    return torch.cat([m[..., None], (log_l - m).exp()[..., None], acc], -1)


Q5 = Question(
    id="04.q5",
    name="aaren_combine",
    arg_names=("a", "b"),
    title="attention as an RNN: merge two (m, l, acc) summaries, earlier one first",
    make_cases=_combine_cases,
    reference=_combine_reference,
    hint="M = max(a[...,0], b[...,0]); wa = exp(a[...,0] - M); wb = exp(b[...,0] - M); "
    "return cat([M, a_l * wa + b_l * wb, a_acc * wa + b_acc * wb]) along the last axis",
    forbidden=LIBRARY + SOFTMAX,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
