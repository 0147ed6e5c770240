"""Chapter 12 questions: absmax INT8 fake quantisation, rounding to the FP4 (E2M1) grid, a 2:4 mask, one
ToMe bipartite merging step, and the speculative-decoding acceptance rule.

Every reference is an independent float64 computation written here with Python loops over elements, groups and
token pairs, never ``minilib.compress``, so a bug shared by the library and the grader cannot hide. The answers
may not call the library's own implementation.
"""
from __future__ import annotations

import math

import torch

from minilib.grade.checks.common import EXACT, f32, f64
from minilib.grade.checks.common import randn as _randn
from minilib.grade.questions import Case, Question

COMPRESS = ("minilib.compress",)


# --- 12.q1 absmax INT8 ------------------------------------------------------------------------

INT8_HINT = ("the step is max|x| / 127 (127 levels each side of zero, not 128); each value goes to round(x / step), "
             "rounding to the NEAREST integer (half to even, torch.round), never toward zero, then back times the step")


def _int8_cases() -> list[Case]:
    dyadic = torch.tensor([[-1.0, 0.25, 0.5], [0.75, -0.125, 1.0]], dtype=f32) * 127 / 128
    return [
        Case("8 values, float64", (_randn(8, f64, 1),)),
        Case("(3, 5) values of scale 100, float64", (_randn((3, 5), f64, 2, scale=100.0),)),
        Case("one value: it maps to 127 steps exactly", (torch.tensor([-0.3], dtype=f64),)),
        Case("all zeros: returned unchanged", (torch.zeros(2, 3, dtype=f64),), hint="an all-zero x has step 0: return x"),
        Case("(2, 3) float32 on a coarse grid", (dyadic,)),
        Case("(4, 4, 3) heavy-tailed values, float64", (_randn((4, 4, 3), f64, 3) ** 3,)),
    ]


def _int8_reference(x):
    flat = x.flatten().tolist()
    step = max(abs(v) for v in flat) / 127
    if step == 0:
        return x.clone()
    return torch.tensor([min(max(round(v / step), -127), 127) * step for v in flat], dtype=f64).reshape(x.shape)


Q1 = Question(
    id="12.q1",
    name="absmax_int8",
    arg_names=("x",),
    title="absmax INT8: quantise to the symmetric 8-bit grid and back (fake quantisation)",
    make_cases=_int8_cases,
    reference=_int8_reference,
    hint=INT8_HINT,
    tolerance={f32: (1e-6, 1e-5), f64: (1e-12, 1e-10)},
    forbidden=COMPRESS,
)


# --- 12.q2 FP4 E2M1 rounding ------------------------------------------------------------------

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
FP4_HINT = ("E2M1 represents ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}: the steps are 0.5 below 2, 1 between 2 and 4, and 2 "
            "above 4 (not a uniform grid); clip |x| to 6, go to the NEAREST value (not toward zero), keep the sign")


def _fp4_cases() -> list[Case]:
    near = torch.tensor([2.4, 2.6, 3.4, 4.9, 5.1, 0.2, 0.3, 1.2, -1.8, -3.7, 0.74, 0.76], dtype=f64)
    return [
        Case("values between grid points (none on a tie)", (near,)),
        Case("16 normal values times 2, float64", (_randn(16, f64, 4, scale=2.0),)),
        Case("beyond the grid: clipped to ±6", (torch.tensor([7.5, -100.0, 6.2, -5.9], dtype=f64),)),
        Case("(3, 4) float32 values times 3", (_randn((3, 4), f32, 5, scale=3.0),)),
        Case("exact grid values stay", (torch.tensor(E2M1 + [-v for v in E2M1], dtype=f64),)),
    ]


def _fp4_reference(x):
    out = []
    for v in x.flatten().tolist():
        mag = min(abs(v), 6.0)
        best = min(E2M1, key=lambda g: abs(g - mag))
        out.append(math.copysign(best, v) if best else 0.0)
    return torch.tensor(out, dtype=f64).reshape(x.shape)


Q2 = Question(
    id="12.q2",
    name="round_to_e2m1",
    arg_names=("x",),
    title="round values (in units of the format) to the nearest FP4 E2M1 value",
    make_cases=_fp4_cases,
    reference=_fp4_reference,
    hint=FP4_HINT,
    tolerance=EXACT,
    forbidden=COMPRESS,
)


# --- 12.q3 2:4 pruning ------------------------------------------------------------------------

MASK_HINT = ("in every group of 4 consecutive weights of a row (along the last dimension) keep the 2 of LARGEST "
             "magnitude |w| (not the largest signed values, not the smallest) and set the other 2 to zero")


def _mask_cases() -> list[Case]:
    return [
        Case("one group of 4", (torch.tensor([[0.1, -3.0, 2.0, 0.5]], dtype=f64),)),
        Case("(3, 8) weights, float64", (_randn((3, 8), f64, 6),)),
        Case("negative weights of large magnitude", (torch.tensor([[-5.0, 1.0, -4.0, 2.0, 0.3, -0.1, 0.2, -0.4]], dtype=f64),)),
        Case("(4, 12) weights, float32", (_randn((4, 12), f32, 7),)),
        Case("(2, 3, 4): batches of rows", (_randn((2, 3, 4), f64, 8),)),
    ]


def _mask_reference(w):
    rows = w.reshape(-1, 4).tolist()
    out = []
    for group in rows:
        keep = sorted(range(4), key=lambda i: -abs(group[i]))[:2]
        out.extend(v if i in keep else 0.0 for i, v in enumerate(group))
    return torch.tensor(out, dtype=f64).reshape(w.shape)


Q3 = Question(
    id="12.q3",
    name="prune_2_4",
    arg_names=("w",),
    title="2:4 semi-structured pruning: keep the two largest of every four weights",
    make_cases=_mask_cases,
    reference=_mask_reference,
    hint=MASK_HINT,
    tolerance=EXACT,
    forbidden=COMPRESS,
)


# --- 12.q4 ToMe bipartite merging step --------------------------------------------------------

TOME_HINT = ("A = tokens 0, 2, 4, ... and B = tokens 1, 3, 5, ...; each A token's best match is the B token of highest "
             "COSINE similarity (normalise before the dot product); merge the r A tokens whose best similarity is "
             "HIGHEST into their matches by averaging (every token counts once: a B token that receives two A tokens "
             "becomes the mean of three), drop those A tokens, keep the others in their original order")


def _tome_cases() -> list[Case]:
    scaled = _randn((8, 3), f64, 9) * torch.tensor([1.0, 5.0, 0.2, 3.0, 1.0, 0.5, 2.0, 1.0], dtype=f64)[:, None]
    return [
        Case("N=6 tokens, r=1", (_randn((6, 4), f64, 10), 1)),
        Case("N=7 (odd), r=3", (_randn((7, 3), f64, 11), 3)),
        Case("r=0: unchanged", (_randn((5, 2), f64, 12), 0)),
        Case("tokens of very different norms, r=2 (cosine, not dot product)", (scaled, 2)),
        Case("N=10, r=5: every A token merged, float32", (_randn((10, 4), f32, 13), 5)),
    ]


def _tome_reference(x, r):
    N = x.shape[0]
    rows = x.tolist()

    def cos(i, j):
        dot = sum(a * b for a, b in zip(rows[i], rows[j]))
        return dot / math.sqrt(sum(a * a for a in rows[i]) * sum(b * b for b in rows[j]))

    a_tokens, b_tokens = list(range(0, N, 2)), list(range(1, N, 2))
    best = {i: max(b_tokens, key=lambda j: cos(i, j)) for i in a_tokens} if b_tokens else {}
    merged = sorted(a_tokens, key=lambda i: -cos(i, best[i]))[:r]
    groups = {j: [j] for j in range(N) if j not in merged}
    for i in merged:
        groups[best[i]].append(i)
    return torch.tensor([[sum(rows[m][c] for m in groups[j]) / len(groups[j]) for c in range(x.shape[1])]
                         for j in sorted(groups)], dtype=f64).reshape(N - r, x.shape[1])


Q4 = Question(
    id="12.q4",
    name="tome_step",
    arg_names=("x", "r"),
    title="one step of ToMe's bipartite soft matching: merge the r most similar pairs",
    make_cases=_tome_cases,
    reference=_tome_reference,
    hint=TOME_HINT,
    forbidden=COMPRESS,
)


# --- 12.q5 speculative acceptance ------------------------------------------------------------

ACCEPT_HINT = ("accept the draft token x when u < p(x) / q(x) (target over draft, not draft over target), and then the "
               "emitted token is x: return the one-hot vector of x; otherwise return the residual max(p - q, 0) "
               "divided by its sum (the target minus the draft, clipped at zero and normalised)")


def _accept_cases() -> list[Case]:
    p = torch.tensor([0.5, 0.1, 0.3, 0.1], dtype=f64)
    q = torch.tensor([0.2, 0.5, 0.1, 0.2], dtype=f64)
    return [
        Case("p(x) > q(x): always accepted", (p, q, 0, 0.99)),
        Case("p(x)/q(x) = 0.2 and u = 0.1: accepted", (p, q, 1, 0.1)),
        Case("p(x)/q(x) = 0.2 and u = 0.5: rejected, residual", (p, q, 1, 0.5)),
        Case("p(x)/q(x) = 0.5 and u = 0.7: rejected", (p, q, 3, 0.7)),
        Case("float32, vocabulary of 6, rejected", (torch.softmax(_randn(6, f64, 14), 0).to(f32),
                                                    torch.softmax(_randn(6, f64, 15), 0).to(f32), 2, 0.95)),
        Case("float32, vocabulary of 6, accepted", (torch.softmax(_randn(6, f64, 14), 0).to(f32),
                                                    torch.softmax(_randn(6, f64, 15), 0).to(f32), 2, 0.05)),
    ]


def _accept_reference(p, q, token, u):
    V = p.shape[0]
    pl, ql = p.tolist(), q.tolist()
    if u < pl[token] / ql[token]:
        return torch.tensor([1.0 if i == token else 0.0 for i in range(V)], dtype=f64)
    residual = [max(a - b, 0.0) for a, b in zip(pl, ql)]
    total = sum(residual)
    return torch.tensor([v / total for v in residual], dtype=f64)


Q5 = Question(
    id="12.q5",
    name="accept_or_resample",
    arg_names=("p", "q", "token", "u"),
    title="the speculative acceptance rule: accept the draft token or resample from the residual",
    make_cases=_accept_cases,
    reference=_accept_reference,
    hint=ACCEPT_HINT,
    forbidden=COMPRESS,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
