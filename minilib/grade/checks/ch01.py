"""Chapter 01 questions: stable softmax, causal attention, heads, RoPE, RMSNorm.

Every reference is an independent float64 computation (a torch built-in or a naive loop),
never the library code the chapter teaches, so a bug shared by both cannot hide.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib.grade.checks.common import EXACT, LIBRARY_ATTENTION, SDPA, SOFTMAX, causal_keep, dtype_name, f32, f64
from minilib.grade.checks.common import randn as _randn
from minilib.grade.questions import Case, Question


# --- 01.q1 stable softmax -------------------------------------------------------------------

def _softmax_cases() -> list[Case]:
    big = torch.tensor([[1e4, -1e4, 1e4 - 1.0, 0.0, 9999.5], [-1e4, -1e4 + 2.0, -1e4, -1e4 + 0.5, -1e4]])
    return [
        Case("(3, 5), float64", (_randn((3, 5), f64, 1),)),
        Case("(2, 3, 7), float32", (_randn((2, 3, 7), f32, 2, 3.0),)),
        Case("single element (1, 1), float64", (_randn((1, 1), f64, 3),)),
        Case("dim=0 on (4, 6), float64", (_randn((4, 6), f64, 4),), {"dim": 0},
             hint="normalise along the `dim` argument, not always the last one"),
        Case("dim=1 on (2, 5, 3), float32", (_randn((2, 5, 3), f32, 5),), {"dim": 1},
             hint="normalise along the `dim` argument, not always the last one"),
        Case("logits of ±1e4, float64", (big.to(f64),)),
        # exp(x - logsumexp(x)) is also correct, but x - logsumexp(x) rounds to float32's spacing
        # at 1e4 (~1e-3) where x - max(x) is exact: that much error is allowed here.
        Case("logits of ±1e4, float32", (big.to(f32),), tolerance=(1e-6, 2e-3)),
        Case("equal logits (2, 4), float32", (torch.full((2, 4), 3.0, dtype=f32),)),
    ]


Q1 = Question(
    id="01.q1",
    name="stable_softmax",
    arg_names=("x",),
    title="numerically stable softmax",
    make_cases=_softmax_cases,
    reference=lambda x, dim=-1: torch.softmax(x, dim=dim),
    hint="exp overflows above ~88 (float32) or ~709 (float64): subtract the maximum along `dim` "
    "first, softmax(x) = softmax(x - max(x))",
    forbidden=SOFTMAX + LIBRARY_ATTENTION,
)


# --- 01.q2 causal attention -----------------------------------------------------------------

def _attention_cases() -> list[Case]:
    cases = []
    shapes = [  # (B, H, T, S, D, dtype)
        (1, 1, 1, 1, 4, f64), (2, 3, 5, 5, 8, f64), (1, 2, 3, 7, 4, f64), (2, 2, 1, 6, 16, f32),
        (1, 1, 6, 6, 3, f32), (2, 1, 4, 9, 5, f32),
    ]
    for i, (B, H, T, S, D, dtype) in enumerate(shapes):
        q, k, v = (_randn(s, dtype, 100 + 3 * i + j) for j, s in
                   enumerate([(B, H, T, D), (B, H, S, D), (B, H, S, D)]))
        label = f"B={B}, H={H}, T={T}, S={S}, D={D}, {dtype_name(dtype)}"
        hint = (f"queries are the last T={T} of S={S} positions: row t may attend to keys "
                f"s <= t + (S - T) = t + {S - T}" if T != S else "")
        cases.append(Case(label, (q, k, v), hint=hint))
    q, k, v = (_randn((1, 2, 5, 8), f64, 130 + j, 1000.0 if j == 0 else 1.0) for j in range(3))
    cases.append(Case("scores of size ~1e3 (exp overflows): B=1, H=2, T=5, S=5, D=8, float64", (q, k, v),
                      hint="exp(1e3) overflows to inf and inf / inf is NaN: subtract each row's maximum before "
                      "exp (as torch.softmax does), masked -inf entries stay -inf"))
    return cases


def _attention_reference(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_keep(q.shape[-2], k.shape[-2]))


Q2 = Question(
    id="01.q2",
    name="causal_attention",
    arg_names=("q", "k", "v"),
    title="causal scaled dot-product attention",
    make_cases=_attention_cases,
    reference=_attention_reference,
    hint="scores = q k^T * D**-0.5; row t may attend to keys s <= t + (S - T) (itself included), "
    "set the others to -inf before the softmax over keys",
    points=2,
    forbidden=SDPA + LIBRARY_ATTENTION,
)


# --- 01.q3 / 01.q4 split and merge heads ------------------------------------------------------

_HEAD_SHAPES = [(2, 3, 8, 2, f64), (1, 1, 6, 3, f32), (2, 5, 12, 4, f32), (3, 2, 5, 5, f64),
                (1, 4, 6, 1, f32)]  # (B, T, D, H, dtype)


def _split_cases() -> list[Case]:
    return [Case(f"B={B}, T={T}, D={D}, n_heads={H}, {dtype_name(dt)}", (_randn((B, T, D), dt, 200 + i), H))
            for i, (B, T, D, H, dt) in enumerate(_HEAD_SHAPES)]


def _split_reference(x, n_heads):
    Dh = x.shape[-1] // n_heads
    return torch.stack([x[:, :, h * Dh:(h + 1) * Dh] for h in range(n_heads)], dim=1)


def _merge_cases() -> list[Case]:
    return [Case(f"B={B}, H={H}, T={T}, Dh={D // H}, {dtype_name(dt)}", (_randn((B, H, T, D // H), dt, 300 + i),))
            for i, (B, T, D, H, dt) in enumerate(_HEAD_SHAPES)]


Q3 = Question(
    id="01.q3",
    name="split_heads",
    arg_names=("x", "n_heads"),
    title="split the model dimension into heads",
    make_cases=_split_cases,
    reference=_split_reference,
    hint="head h takes columns h*Dh:(h+1)*Dh: view as (B, T, H, Dh), then swap the T and H axes "
    "(a plain reshape to (B, H, T, Dh) mixes time steps into heads)",
    tolerance=EXACT,
    forbidden=("minilib.attention.split_heads", "minilib.attention"),
)

Q4 = Question(
    id="01.q4",
    name="merge_heads",
    arg_names=("x",),
    title="merge heads back into the model dimension",
    make_cases=_merge_cases,
    reference=lambda x: torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1),
    hint="the inverse of split_heads: swap the H and T axes back to (B, T, H, Dh), then flatten "
    "the last two (a plain reshape of (B, H, T, Dh) mixes heads into time steps)",
    tolerance=EXACT,
    forbidden=("minilib.attention.merge_heads", "minilib.attention"),
)


# --- 01.q5 RoPE -------------------------------------------------------------------------------

def _rope_cases() -> list[Case]:
    return [
        Case("x (2, 3, 5, 8), positions 0..4, float64", (_randn((2, 3, 5, 8), f64, 400), torch.arange(5))),
        Case("T=1, x (1, 4), position 7, float32", (_randn((1, 4), f32, 401), torch.tensor([7]))),
        Case("x (3, 6, 10), shuffled positions, float64",
             (_randn((3, 6, 10), f64, 402), torch.tensor([0, 5, 2, 9, 31, 1]))),
        Case("base=500, x (2, 4, 6), float32", (_randn((2, 4, 6), f32, 403), torch.arange(4)), {"base": 500.0},
             hint="use the `base` argument: angle = positions[t] * base**(-2i/D)"),
        Case("D=2, x (2, 2, 3, 2), positions 3..5, float64", (_randn((2, 2, 3, 2), f64, 404), torch.arange(3, 6))),
    ]


def _rope_reference(x, positions, base=10000.0):
    D = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=f64) / D)
    angle = positions.to(f64)[:, None] * inv_freq[None, :]  # (T, D/2)
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], D // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle)).reshape(x.shape)


Q5 = Question(
    id="01.q5",
    name="apply_rope",
    arg_names=("x", "positions"),
    title="rotary position embedding (interleaved pairs)",
    make_cases=_rope_cases,
    reference=_rope_reference,
    hint="rotate each pair (x[..., 2i], x[..., 2i+1]) by +theta = positions[t] * base**(-2i/D): "
    "(a, b) -> (a cos theta - b sin theta, a sin theta + b cos theta); pairs are adjacent columns, "
    "not i and i + D/2",
    points=2,
    forbidden=("minilib.positional.rope", "minilib.positional"),
    # Angles computed in float32 (e.g. from an integer arange divided by D) are accurate to ~1e-7
    # relative; a position-dependent error of that size is not what this question tests.
    tolerance={f32: (1e-5, 1e-5), f64: (1e-5, 1e-5)},
)


# --- 01.q6 RMSNorm ----------------------------------------------------------------------------

def _rms_cases() -> list[Case]:
    def case(label, shape, dtype, seed, scale=1.0, **kwargs):
        x = _randn(shape, dtype, seed, scale)
        w = _randn(shape[-1:], dtype, seed + 50)
        return Case(label, (x, w), kwargs)

    return [
        case("x (2, 3, 8), float64", (2, 3, 8), f64, 500),
        case("x (1, 5), float32", (1, 5), f32, 501),
        case("odd D: x (4, 7), float64", (4, 7), f64, 502),
        case("eps=0.5, x (3, 6), float64", (3, 6), f64, 503, eps=0.5),
        case("small inputs (|x| ~ 1e-3, eps=1e-6 matters), float32", (2, 9), f32, 504, 1e-3),
        case("D=1, x (3, 1), float64", (3, 1), f64, 505),
    ]


Q6 = Question(
    id="01.q6",
    name="rms_norm",
    arg_names=("x", "weight"),
    title="RMSNorm",
    make_cases=_rms_cases,
    reference=lambda x, weight, eps=1e-6: F.rms_norm(x, x.shape[-1:], weight, eps),
    hint="y = x / sqrt(mean(x**2 over the last axis) + eps) * weight: no mean subtraction, "
    "eps inside the square root",
    forbidden=("torch.nn.functional.rms_norm", "torch.rms_norm", "minilib.norms.RMSNorm", "minilib.norms"),
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5, Q6]
