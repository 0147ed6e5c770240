"""Chapter 08 questions: the looped forward with input injection, a LoRA-relaxed shared linear layer, MatFormer
sub-FFN extraction, the greedy speculative-decoding acceptance step and the per-token early-exit rule.

The references are written out here in float64 with plain tensor operations, never ``minilib.looped`` or
``minilib.models.looped``; the answers may not call those modules either.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib.grade.checks.common import f32, f64, randn
from minilib.grade.questions import Case, Question

#: The chapter's own library code (the looped stacks, MatFFN, speculative decoding) is off limits.
LIBRARY_LOOPED = ("minilib.looped", "minilib.models.looped", "minilib.feedforward")


# --- 08.q1 looped forward with input injection ----------------------------------------------------

def _loop_cases() -> list[Case]:
    def case(label, N, d, n_loops, dtype, seed, hint=""):
        x = randn((N, d), dtype, seed)
        w = randn((d, d), dtype, seed + 1, 0.5)
        b = randn((d,), dtype, seed + 2, 0.1)
        return Case(label, (x, w, b, n_loops), hint=hint)

    return [
        case("one loop (N=3, d=4), float64", 3, 4, 1, f64, 1, hint="one loop from h_0 = 0 is f(0 + x) = f(x)"),
        case("two loops (N=3, d=4), float64", 3, 4, 2, f64, 2,
             hint="the input is added again before every loop: h_2 = f(h_1 + x), not f(h_1)"),
        case("five loops (N=2, d=6), float64", 2, 6, 5, f64, 3),
        case("three loops (N=4, d=3), float32", 4, 3, 3, f32, 4),
    ]


def _block(h, w, b):
    return h + torch.tanh(h @ w + b)


def _loop_reference(x, w, b, n_loops):
    h = torch.zeros_like(x)
    for _ in range(n_loops):
        h = _block(h + x, w, b)
    return h


Q1 = Question(
    id="08.q1",
    name="looped_forward",
    arg_names=("x", "w", "b", "n_loops"),
    title="the looped forward with input injection",
    make_cases=_loop_cases,
    reference=_loop_reference,
    hint="h = zeros_like(x); repeat n_loops times: h = f(h + x) with f(u) = u + tanh(u @ w + b)",
    forbidden=LIBRARY_LOOPED,
)


# --- 08.q2 LoRA-relaxed shared linear layer --------------------------------------------------------

def _lora_cases() -> list[Case]:
    def case(label, N, d_in, d_out, r, dtype, seed, hint=""):
        return Case(label, (randn((N, d_in), dtype, seed), randn((d_out, d_in), dtype, seed + 1),
                            randn((r, d_in), dtype, seed + 2), randn((d_out, r), dtype, seed + 3)), hint=hint)

    return [
        case("square, rank 2 (N=3, d_in=d_out=4), float64", 3, 4, 4, 2, f64, 10,
             hint="the relaxed weight is W + B A, of W's shape (d_out, d_in); y = x (W + B A)^T"),
        case("rectangular, rank 1 (N=2, d_in=5, d_out=3), float64", 2, 5, 3, 1, f64, 11,
             hint="A is (r, d_in) and B is (d_out, r): the product B A has W's shape"),
        case("full rank (N=4, d_in=3, d_out=3, r=3), float64", 4, 3, 3, 3, f64, 12),
        case("rank 2 (N=5, d_in=6, d_out=4), float32", 5, 6, 4, 2, f32, 13),
    ]


def _lora_reference(x, w, a, b):
    return x @ (w + b @ a).T


Q2 = Question(
    id="08.q2",
    name="lora_linear",
    arg_names=("x", "w", "a", "b"),
    title="a LoRA-relaxed shared linear layer",
    make_cases=_lora_cases,
    reference=_lora_reference,
    hint="y = x @ (w + b @ a).T: the shared weight plus this layer's low-rank delta B A, no extra scaling",
    forbidden=LIBRARY_LOOPED,
)


# --- 08.q3 MatFormer sub-FFN -----------------------------------------------------------------------

def _sub_ffn_cases() -> list[Case]:
    def case(label, N, d, d_ff, m, dtype, seed, hint=""):
        return Case(label, (randn((N, d), dtype, seed), randn((d_ff, d), dtype, seed + 1, 0.5),
                            randn((d, d_ff), dtype, seed + 2, 0.5), m), hint=hint)

    return [
        case("half width (N=3, d=8, d_ff=16, m=8), float64", 3, 8, 16, 8, f64, 20,
             hint="keep hidden units 0..m-1: rows of w1 (d_ff, d) and columns of w2 (d, d_ff)"),
        case("quarter width (N=2, d=6, d_ff=16, m=4), float64", 2, 6, 16, 4, f64, 21,
             hint="w2 maps hidden units to outputs: slice its columns w2[:, :m], not its rows"),
        case("full width (N=2, d=4, d_ff=8, m=8), float64", 2, 4, 8, 8, f64, 22),
        case("m = 1 (N=4, d=5, d_ff=10, m=1), float64", 4, 5, 10, 1, f64, 23),
        case("eighth width (N=3, d=4, d_ff=16, m=2), float32", 3, 4, 16, 2, f32, 24),
    ]


def _sub_ffn_reference(x, w1, w2, m):
    return F.gelu(x @ w1[:m].T) @ w2[:, :m].T


Q3 = Question(
    id="08.q3",
    name="sub_ffn",
    arg_names=("x", "w1", "w2", "m"),
    title="MatFormer: the sub-FFN of the first m hidden units",
    make_cases=_sub_ffn_cases,
    reference=_sub_ffn_reference,
    hint="gelu(x @ w1[:m].T) @ w2[:, :m].T: the first m rows of w1 and the first m columns of w2",
    forbidden=LIBRARY_LOOPED,
)


# --- 08.q4 greedy speculative acceptance -------------------------------------------------------------

def _accept_cases() -> list[Case]:
    def case(label, draft, k, V, dtype, seed, agree, hint=""):
        logits = randn((k + 1, V), dtype, seed)
        target = logits.argmax(-1)
        draft = torch.tensor(draft) if draft is not None else target[:k].clone()
        if agree is not None:
            draft = target[:k].clone()
            if agree < k:
                draft[agree] = (target[agree] + 1) % V
        return Case(label, (draft, logits), hint=hint)

    return [
        case("all k=3 draft tokens agree: bonus token (V=6), float64", None, 3, 6, f64, 30, 3,
             hint="when every draft token agrees, the verifier's prediction after the last one is a free extra token"),
        case("the first draft token disagrees (k=4, V=7), float64", None, 4, 7, f64, 31, 0,
             hint="accept nothing and take the verifier's token at position 0"),
        case("the third draft token disagrees (k=4, V=5), float64", None, 4, 5, f64, 32, 2,
             hint="stop at the first mismatch: the tokens after it are not accepted even if they agree"),
        case("k=1 agrees (V=4), float32", None, 1, 4, f32, 33, 1),
        case("k=5, mismatch at 4 (V=9), float32", None, 5, 9, f32, 34, 4),
    ]


def _accept_reference(draft, logits):
    target = logits.argmax(-1)
    k = draft.shape[0]
    n = 0
    while n < k and int(draft[n]) == int(target[n]):
        n += 1
    out = torch.full((k + 1,), -1.0, dtype=logits.dtype)
    out[:n] = draft[:n].to(logits.dtype)
    out[n] = target[n]
    return out


Q4 = Question(
    id="08.q4",
    name="greedy_accept_step",
    arg_names=("draft", "logits"),
    title="greedy speculative decoding: the acceptance step",
    make_cases=_accept_cases,
    reference=_accept_reference,
    hint="t = logits.argmax(-1); n = length of the longest prefix with draft[:n] == t[:n]; "
    "return draft[:n], then t[n], padded with -1 to length k + 1, in the logits' dtype",
    forbidden=LIBRARY_LOOPED,
)


# --- 08.q5 per-token early exit: the exit layer of every token --------------------------------------------

def _exit_cases() -> list[Case]:
    def case(label, n_layers, N, V, threshold, dtype, seed, hint=""):
        probs = torch.softmax(randn((n_layers - 1, N, V), f64, seed, 2.0), dim=-1)
        return Case(label, (probs.to(dtype), threshold), hint=hint)

    at_threshold = torch.tensor([[[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]],
                                 [[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]]], dtype=f64)
    confident_twice = torch.tensor([[[0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.4, 0.4, 0.2]],
                                    [[0.3, 0.4, 0.3], [0.7, 0.2, 0.1], [0.5, 0.3, 0.2]],
                                    [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.45, 0.45, 0.1]]], dtype=f64)
    return [
        case("4 layers, 6 tokens (V=5), threshold 0.6, float64", 4, 6, 5, 0.6, f64, 40,
             hint="a token leaves after the FIRST layer whose top probability exceeds the threshold (layers count from 1)"),
        Case("a top probability equal to the threshold does not exit (threshold 0.5)", (at_threshold, 0.5),
             hint="exit needs max prob > threshold, strictly: at threshold 1.0 no token may ever leave early"),
        Case("confident at layers 1 and 3 but not 2: the first one counts (4 layers)", (confident_twice, 0.6),
             hint="take the first confident layer, not the last; a token never confident runs all n_layers = L - 1 + 1 layers"),
        case("6 layers, 10 tokens (V=4), threshold 1.0: nobody leaves, float32", 6, 10, 4, 1.0, f32, 41),
        case("3 layers, 8 tokens (V=3), threshold 0.45, float32", 3, 8, 3, 0.45, f32, 42),
    ]


def _exit_reference(probs, threshold):
    n_layers = probs.shape[0] + 1
    out = torch.full((probs.shape[1],), float(n_layers), dtype=probs.dtype)
    for token in range(probs.shape[1]):
        for layer in range(probs.shape[0]):
            if float(probs[layer, token].max()) > threshold:
                out[token] = layer + 1
                break
    return out


Q5 = Question(
    id="08.q5",
    name="exit_layers",
    arg_names=("probs", "threshold"),
    title="per-token early exit: the exit layer of every token",
    make_cases=_exit_cases,
    reference=_exit_reference,
    hint="confident = probs.amax(-1) > threshold, (L - 1, N); a token's exit layer is 1 + the first confident layer, "
    "or L = probs.shape[0] + 1 if none is; return (N,) in probs' dtype",
    forbidden=LIBRARY_LOOPED,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
