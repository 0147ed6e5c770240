"""Chapter 02 questions: GQA head sharing, sigmoid attention, clipped softmax, NTK-aware RoPE,
ALiBi, Mixture-of-Head routing weights.

Every reference is an independent float64 computation written here (index arithmetic, loops over
heads and positions, torch built-ins), never ``minilib.attention`` or ``minilib.positional``, so a
bug shared by the library and the grader cannot hide. The answers may not call the library's own
implementation of the function they write.
"""
from __future__ import annotations

import math

import torch

from minilib.grade.checks.common import EXACT, f32, f64
from minilib.grade.checks.common import dtype_name as _name
from minilib.grade.checks.common import randn as _randn
from minilib.grade.questions import Case, Question


# --- 02.q1 repeat_kv --------------------------------------------------------------------------

REPEAT_HINT = ("query head h reads key/value head h // n_rep, so adjacent query heads share one: "
               "the output heads are kv heads 0,0,..,1,1,.. (each repeated n_rep times in place); "
               "x.repeat(1, n_rep, 1, 1) tiles the whole block as 0,1,..,0,1,.. instead")


def _repeat_cases() -> list[Case]:
    shapes = [  # (label, B, Hkv, S, D, n_rep, dtype)
        ("GQA ratio 1: n_rep=1 returns the same heads", 2, 3, 4, 4, 1, f64),
        ("Hkv=2, n_rep=3: heads 0,0,0,1,1,1", 2, 2, 5, 4, 3, f64),
        ("MQA: Hkv=1, n_rep=4", 1, 1, 6, 8, 4, f32),
        ("Hkv=4, n_rep=2, odd D=3", 2, 4, 3, 3, 2, f32),
        ("Hkv=3, n_rep=2, S=1 (one cached position)", 1, 3, 1, 5, 2, f64),
    ]
    return [Case(f"{label}; x ({B}, {Hkv}, {S}, {D}), {_name(dt)}", (_randn((B, Hkv, S, D), dt, 10 + i), n_rep),
                 hint=REPEAT_HINT)
            for i, (label, B, Hkv, S, D, n_rep, dt) in enumerate(shapes)]


def _repeat_reference(x, n_rep):
    B, Hkv, S, D = x.shape
    out = torch.empty(B, Hkv * n_rep, S, D, dtype=x.dtype)
    for h in range(Hkv * n_rep):
        out[:, h] = x[:, h // n_rep]
    return out


Q1 = Question(
    id="02.q1",
    name="repeat_kv",
    arg_names=("x", "n_rep"),
    title="share key/value heads between query heads (GQA, MQA)",
    make_cases=_repeat_cases,
    reference=_repeat_reference,
    hint=REPEAT_HINT,
    tolerance=EXACT,
    forbidden=("minilib.attention.expand_kv_heads", "minilib.attention"),
)


# --- 02.q2 sigmoid attention ------------------------------------------------------------------

def _kv_head(H: int, Hkv: int) -> list[int]:
    """The key/value head each query head reads."""
    return [h // (H // Hkv) for h in range(H)]


def _sigmoid_cases() -> list[Case]:
    shapes = [  # (B, H, Hkv, T, S, D, causal, dtype, q scale)
        (1, 2, 2, 4, 4, 8, False, f64, 1.0),
        (2, 4, 2, 3, 7, 5, False, f64, 1.0),
        (1, 2, 2, 5, 5, 4, True, f64, 1.0),
        (2, 4, 1, 3, 8, 6, True, f64, 1.0),
        (1, 3, 3, 6, 6, 4, True, f32, 1.0),
        (1, 2, 1, 1, 9, 8, True, f32, 1.0),
        (1, 2, 2, 4, 6, 16, True, f32, 25.0),
    ]
    cases = []
    for i, (B, H, Hkv, T, S, D, causal, dtype, qs) in enumerate(shapes):
        q = _randn((B, H, T, D), dtype, 100 + 3 * i, qs)
        k, v = _randn((B, Hkv, S, D), dtype, 101 + 3 * i), _randn((B, Hkv, S, D), dtype, 102 + 3 * i)
        heads = "MHA" if H == Hkv else ("MQA" if Hkv == 1 else "GQA")
        label = f"{heads} H={H}, Hkv={Hkv}, T={T}, S={S}, D={D}, causal={causal}, {_name(dtype)}"
        if qs > 1:
            label = "large logits (|s| up to 50): " + label
        hint = ""
        if causal:
            where = f"queries are the last T={T} of S={S} positions: " if T != S else ""
            hint = (f"{where}row t sees keys s <= t + {S - T}, the others get weight 0, and its bias is minus the "
                    f"log of the number it sees, -log(t + {S - T + 1}), not -log S = -log {S} for every row")
        elif Hkv != H:
            hint = "k and v have fewer heads than q: query head h reads kv head h // (H // Hkv) (repeat_kv)"
        cases.append(Case(label, (q, k, v), {"causal": causal}, hint=hint))
    return cases


def _sigmoid_reference(q, k, v, causal=False):
    B, H, T, D = q.shape
    S = k.shape[2]
    out = torch.zeros(B, H, T, v.shape[-1], dtype=f64)
    for h, g in enumerate(_kv_head(H, k.shape[1])):
        for t in range(T):
            for s in range(S):
                if causal and s > t + (S - T):
                    continue
                seen = t + (S - T) + 1 if causal else S
                logit = (q[:, h, t] * k[:, g, s]).sum(-1) / math.sqrt(D) - math.log(seen)
                out[:, h, t] += torch.sigmoid(logit)[:, None] * v[:, g, s]
    return out


Q2 = Question(
    id="02.q2",
    name="sigmoid_attention",
    arg_names=("q", "k", "v"),
    title="sigmoid attention with bias b = -log (keys the row sees)",
    make_cases=_sigmoid_cases,
    reference=_sigmoid_reference,
    hint="out_t = sum_s sigmoid(q_t . k_s / sqrt(D) - log n_t) v_s with n_t the number of keys row t sees "
    "(S = k.shape[2], or t + S - T + 1 when causal); no normalisation over keys; masked (future) keys get weight 0",
    points=2,
    forbidden=("minilib.attention.sigmoid_attention", "minilib.attention.attend",
               "minilib.attention.expand_kv_heads", "minilib.attention"),
)


# --- 02.q3 clipped softmax --------------------------------------------------------------------

CLIP_HINT = "clip((zeta - gamma) * softmax(x) + gamma, 0, 1): values below 0 become exactly 0, above 1 exactly 1"


def _clip_cases() -> list[Case]:
    peaked = _randn((3, 6), f64, 203)
    peaked[:, 2] += 8.0  # one key takes almost all the weight: (zeta - gamma) p + gamma > 1 there
    big = torch.tensor([[1e4, -1e4, 1e4 - 2.0, 0.0, 9999.0], [-5e3, -5e3 + 3.0, -5e3, -5e3 + 0.5, -5e3 - 1.0]])
    return [
        Case("zeta=1, gamma=-0.03: small weights clip to exactly 0; x (2, 3, 8), float64",
             (_randn((2, 3, 8), f64, 201, 2.0), 1.0, -0.03),
             hint=CLIP_HINT + "; with gamma < 0 the small probabilities go negative before the clip"),
        Case("zeta=1, gamma=0: plain softmax; x (4, 5), float32", (_randn((4, 5), f32, 202), 1.0, 0.0)),
        Case("zeta=1.1, gamma=0: a dominant key clips to exactly 1; x (3, 6), float64", (peaked, 1.1, 0.0),
             hint=CLIP_HINT + "; with zeta > 1 a probability near 1 goes above 1 before the clip"),
        Case("zeta=1.05, gamma=-0.05: both ends clip; x (2, 4, 16), float32",
             (_randn((2, 4, 16), f32, 204, 4.0), 1.05, -0.05), hint=CLIP_HINT),
        Case("one key (S=1), zeta=1.2, gamma=-0.1, float64", (_randn((3, 1), f64, 205), 1.2, -0.1),
             hint="softmax over one key is 1, so the result is clip(zeta, 0, 1) = 1"),
        Case("logits of size 1e4, zeta=1, gamma=-0.01, float32", (big.to(f32), 1.0, -0.01),
             hint="use a stable softmax (torch.softmax, or subtract the row max before exp)"),
    ]


def _clip_reference(x, zeta, gamma):
    p = torch.exp(x - torch.logsumexp(x, dim=-1, keepdim=True))
    return torch.minimum(torch.maximum((zeta - gamma) * p + gamma, torch.zeros_like(p)), torch.ones_like(p))


Q3 = Question(
    id="02.q3",
    name="clipped_softmax",
    arg_names=("x", "zeta", "gamma"),
    title="clipped softmax (a head can give exactly zero weight)",
    make_cases=_clip_cases,
    reference=_clip_reference,
    hint=CLIP_HINT + "; stretch by (zeta - gamma), not by zeta",
    forbidden=("minilib.attention.clipped_softmax", "minilib.attention.attend", "minilib.attention"),
)


# --- 02.q4 NTK-aware RoPE ---------------------------------------------------------------------

NTK_HINT = ("NTK-aware scaling changes the base, not the positions: base' = base * scale ** (D / (D - 2)), "
            "theta_i = base' ** (-2i / D), angle = positions[t] * theta_i (positions / scale is position "
            "interpolation, a different method); pairs are adjacent columns (x[..., 2i], x[..., 2i+1])")


def _ntk_cases() -> list[Case]:
    return [
        Case("scale=4, x (2, 3, 5, 8), positions 0..4, float64",
             (_randn((2, 3, 5, 8), f64, 300), torch.arange(5), 10000.0, 4.0), hint=NTK_HINT),
        Case("scale=1 is plain RoPE, x (3, 6, 10), shuffled positions, float64",
             (_randn((3, 6, 10), f64, 301), torch.tensor([0, 5, 2, 9, 31, 1]), 10000.0, 1.0),
             hint="with scale=1 the answer is plain RoPE: rotate each pair (x[..., 2i], x[..., 2i+1]) by "
             "positions[t] * base ** (-2i / D); pairs are adjacent columns, not i and i + D/2"),
        Case("scale=8, positions 24..39 (beyond a 16-token training length), x (1, 16, 16), float32",
             (_randn((1, 16, 16), f32, 302), torch.arange(24, 40), 10000.0, 8.0), hint=NTK_HINT),
        Case("base=500, scale=2, D=4, x (2, 4, 4), float64",
             (_randn((2, 4, 4), f64, 303), torch.arange(4), 500.0, 2.0),
             hint="use the `base` argument: base' = base * scale ** (D / (D - 2)) = 500 * 2 ** 2 here"),
        Case("T=1, position 37, scale=3, x (1, 6), float32",
             (_randn((1, 6), f32, 304), torch.tensor([37]), 10000.0, 3.0), hint=NTK_HINT),
        Case("scale=16, D=32, x (2, 2, 7, 32), positions 0..6, float64",
             (_randn((2, 2, 7, 32), f64, 305), torch.arange(7), 10000.0, 16.0), hint=NTK_HINT),
    ]


def _ntk_reference(x, positions, base, scale):
    D = x.shape[-1]
    new_base = base * scale ** (D / (D - 2))
    out = torch.empty_like(x)
    for i in range(D // 2):
        theta = new_base ** (-2.0 * i / D)
        angle = (positions.to(f64) * theta)[:, None]  # (T, 1), broadcast over the leading axes
        a, b = x[..., :, 2 * i:2 * i + 1], x[..., :, 2 * i + 1:2 * i + 2]
        out[..., 2 * i:2 * i + 1] = a * torch.cos(angle) - b * torch.sin(angle)
        out[..., 2 * i + 1:2 * i + 2] = a * torch.sin(angle) + b * torch.cos(angle)
    return out


Q4 = Question(
    id="02.q4",
    name="rope_ntk",
    arg_names=("x", "positions", "base", "scale"),
    title="RoPE with NTK-aware base scaling",
    make_cases=_ntk_cases,
    reference=_ntk_reference,
    hint=NTK_HINT,
    points=2,
    forbidden=("minilib.positional.rope", "minilib.positional.rope_angles", "minilib.positional"),
    # Angles computed in float32 are accurate to ~1e-7 relative (as in 01.q5); that is not what
    # this question tests.
    tolerance={f32: (1e-5, 1e-5), f64: (1e-5, 1e-5)},
)


# --- 02.q5 ALiBi ------------------------------------------------------------------------------

def _alibi_cases() -> list[Case]:
    shapes = [  # (B, H, T, S, dtype)
        (2, 4, 5, 5, f64), (1, 8, 6, 6, f32), (1, 1, 4, 4, f64), (2, 2, 3, 7, f64), (1, 16, 5, 5, f32),
        (1, 4, 1, 9, f32),
    ]
    cases = []
    for i, (B, H, T, S, dtype) in enumerate(shapes):
        label = f"H={H}, T={T}, S={S}, scores ({B}, {H}, {T}, {S}), {_name(dtype)}"
        hint = (f"bias = -m_h * (t - s) for keys s <= t (a penalty, hence the minus sign) and 0 for later keys; "
                f"m_h = 2 ** (-8 * (h + 1) / H) for head h = 0..H-1, here H = {H}: head 0 has slope 2 ** {-8 / H:g}")
        if T != S:
            label = f"queries are the last {T} of {S} positions: " + label
            hint = (f"query row t sits at position t + (S - T) = t + {S - T}; the bias is "
                    f"-slope * (t + {S - T} - s) for keys s <= t + {S - T}, 0 for later keys")
        cases.append(Case(label, (_randn((B, H, T, S), dtype, 400 + i),), hint=hint))
    return cases


def _alibi_reference(scores):
    B, H, T, S = scores.shape
    out = scores.clone()
    for h in range(H):
        slope = 2.0 ** (-8.0 * (h + 1) / H)
        for t in range(T):
            for s in range(S):
                out[:, h, t, s] -= slope * max(t + S - T - s, 0)
    return out


Q5 = Question(
    id="02.q5",
    name="add_alibi",
    arg_names=("scores",),
    title="add the ALiBi bias to attention scores",
    make_cases=_alibi_cases,
    reference=_alibi_reference,
    hint="scores[b, h, t, s] - m_h * max(t + S - T - s, 0) with m_h = 2 ** (-8 * (h + 1) / H): "
    "a penalty growing with the distance to past keys (minus sign), none for future keys",
    forbidden=("minilib.positional.alibi_bias", "minilib.positional.alibi_slopes", "minilib.positional"),
)


# --- 02.q6 Mixture-of-Head routing weights ----------------------------------------------------

MOH_HINT = ("softmax over all H heads first, then keep the top_k largest weights of each token and "
            "set the others to 0, without renormalising the kept ones (they sum to less than 1)")


def _moh_cases() -> list[Case]:
    shapes = [  # (B, T, H, top_k, dtype, scale)
        (2, 5, 4, 2, f64, 1.0), (1, 6, 8, 6, f32, 1.0), (2, 3, 8, 1, f64, 1.0), (1, 4, 4, 4, f64, 1.0),
        (2, 3, 6, 3, f32, 30.0),
    ]
    cases = []
    for i, (B, T, H, k, dtype, scale) in enumerate(shapes):
        logits = _randn((B, T, H), f64, 500 + i, scale)
        top = logits.sort(dim=-1, descending=True).values
        if k < H:  # no near-ties at the top-k boundary: float32 answers must pick the same heads
            assert (top[..., k - 1] - top[..., k]).min() > 1e-3, (i, (top[..., k - 1] - top[..., k]).min())
        label = f"router_logits ({B}, {T}, {H}), top_k={k}, {_name(dtype)}"
        hint = ""
        if k == H:
            label = "top_k = H keeps every head (plain softmax): " + label
        if scale > 1:
            label = "large logits (~30): " + label
            hint = "use a stable softmax (torch.softmax, or subtract the max before exp)"
        cases.append(Case(label, (logits.to(dtype), k), hint=hint))
    return cases


def _moh_reference(router_logits, top_k):
    B, T, H = router_logits.shape
    out = torch.zeros_like(router_logits)
    for b in range(B):
        for t in range(T):
            row = router_logits[b, t]
            p = torch.exp(row - row.max())
            p = p / p.sum()
            for h in sorted(range(H), key=lambda j: -float(p[j]))[:top_k]:
                out[b, t, h] = p[h]
    return out


Q6 = Question(
    id="02.q6",
    name="moh_weights",
    arg_names=("router_logits", "top_k"),
    title="Mixture-of-Head routing: top-k heads of a softmax over all heads",
    make_cases=_moh_cases,
    reference=_moh_reference,
    hint=MOH_HINT,
    forbidden=("minilib.attention",),
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5, Q6]
