"""Plausible wrong answers to the chapter 08 questions, each with the text its failure must show."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _f(h, w, b):
    return h + torch.tanh(h @ w + b)


def loop_inject_once(x, w, b, n_loops):
    """Adds the input only before the first loop."""
    h = x
    for _ in range(n_loops):
        h = _f(h, w, b)
    return h


def loop_inject_after(x, w, b, n_loops):
    """Adds the input to each loop's output instead of its input."""
    h = torch.zeros_like(x)
    for _ in range(n_loops):
        h = _f(h, w, b) + x
    return h


def loop_start_at_x(x, w, b, n_loops):
    """Starts from h_0 = x and injects too: the first loop sees 2x."""
    h = x
    for _ in range(n_loops):
        h = _f(h + x, w, b)
    return h


def loop_library(x, w, b, n_loops):
    from minilib.looped import LoopedTransformer  # forbidden
    return LoopedTransformer(torch.nn.Identity(), n_loops)(x[None])[0]


def lora_forgotten(x, w, a, b):
    """Uses the shared weight alone."""
    return x @ w.T


def lora_rank_scaled(x, w, a, b):
    """Divides the update by the rank (a LoRA alpha / r that the question does not have)."""
    return x @ (w + b @ a / a.shape[0]).T


def lora_wrong_order(x, w, a, b):
    """Adds x (B A) without transposing the delta (right only when B A is symmetric)."""
    return x @ w.T + x @ (b @ a)


def ffn_wrong_axis(x, w1, w2, m):
    """Slices the first m rows (output units) of the down-projection as well as its columns."""
    return F.gelu(x @ w1[:m].T) @ w2[:m, :m].T


def ffn_last_units(x, w1, w2, m):
    """Keeps the last m hidden units instead of the first m."""
    return F.gelu(x @ w1[-m:].T) @ w2[:, -m:].T


def ffn_relu(x, w1, w2, m):
    """ReLU instead of GELU."""
    return torch.relu(x @ w1[:m].T) @ w2[:, :m].T


def accept_all(draft, logits):
    """Accepts every draft token, then the verifier's last token, without checking them."""
    k = draft.shape[0]
    return torch.cat([draft.to(logits.dtype), logits[k].argmax()[None].to(logits.dtype)])


def accept_matching_anywhere(draft, logits):
    """Accepts every position where draft and verifier agree, skipping mismatches instead of stopping."""
    target = logits.argmax(-1)
    k = draft.shape[0]
    keep = [int(t) for d, t in zip(draft, target[:k]) if int(d) == int(t)]
    out = torch.full((k + 1,), -1.0, dtype=logits.dtype)
    out[:len(keep)] = torch.tensor(keep, dtype=logits.dtype)
    out[len(keep)] = target[len(keep)]
    return out


def accept_draft_token_at_mismatch(draft, logits):
    """At the first mismatch appends the draft's (mismatched) token instead of the verifier's."""
    target = logits.argmax(-1)
    k = draft.shape[0]
    n = 0
    while n < k and int(draft[n]) == int(target[n]):
        n += 1
    out = torch.full((k + 1,), -1.0, dtype=logits.dtype)
    out[:n] = draft[:n].to(logits.dtype)
    out[n] = draft[n] if n < k else target[n]
    return out


def exit_at_or_above(probs, threshold):
    """Exits when the top probability reaches the threshold (>=), so threshold 1.0 could exit early."""
    confident = probs.amax(-1) >= threshold
    first = torch.where(confident.any(0), confident.to(torch.int64).argmax(0) + 1, probs.shape[0] + 1)
    return first.to(probs.dtype)


def exit_last_confident(probs, threshold):
    """Takes the last confident layer instead of the first."""
    confident = probs.amax(-1) > threshold
    last = probs.shape[0] - confident.flip(0).to(torch.int64).argmax(0)
    return torch.where(confident.any(0), last, probs.shape[0] + 1).to(probs.dtype)


def exit_zero_based(probs, threshold):
    """Counts layers from 0 and gives never-confident tokens the last read-out's index."""
    confident = probs.amax(-1) > threshold
    first = torch.where(confident.any(0), confident.to(torch.int64).argmax(0), probs.shape[0])
    return first.to(probs.dtype)


WRONG = [
    ("08.q1", loop_inject_once, "case 2/4"),
    ("08.q1", loop_inject_after, "max abs error"),
    ("08.q1", loop_start_at_x, "max abs error"),
    ("08.q1", loop_library, "forbidden"),
    ("08.q2", lora_forgotten, "max abs error"),
    ("08.q2", lora_rank_scaled, "max abs error"),
    ("08.q2", lora_wrong_order, "case 1/4"),
    ("08.q3", ffn_wrong_axis, "wrong shape"),
    ("08.q3", ffn_last_units, "max abs error"),
    ("08.q3", ffn_relu, "max abs error"),
    ("08.q4", accept_all, "case 2/5"),
    ("08.q4", accept_matching_anywhere, "case 2/5"),
    ("08.q4", accept_draft_token_at_mismatch, "case 2/5"),
    ("08.q5", exit_at_or_above, "case 2/5"),
    ("08.q5", exit_last_confident, "case 1/5"),
    ("08.q5", exit_zero_based, "case 1/5"),
]
