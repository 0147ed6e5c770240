"""Chapter 03 questions: online softmax, one FlashAttention tile, the tiled forward, the lse merge, dS.

The references are independent float64 computations (torch built-ins such as ``logsumexp``,
``sigmoid`` and autograd through ``torch.softmax``), never ``minilib.flash``. The answers may not
call the softmax family, ``scaled_dot_product_attention`` or the library's own kernels: the point
of every question is to do the softmax piecewise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib.grade.checks.common import LIBRARY_ATTENTION, SDPA, SOFTMAX, causal_keep, dtype_name, f32, f64, randn
from minilib.grade.questions import Case, Question

#: SDPA and the library's attention modules (every kernel in minilib.attention, .flash, .parallel).
KERNELS = SDPA + LIBRARY_ATTENTION


def _randn(shape, seed, scale=1.0):
    return randn(shape, f64, seed, scale)


def _running_state(s_prev, v_prev):
    """(m, l, acc) after a prefix of scores (R, P) and values (P, Dv), computed from scratch."""
    if s_prev.shape[-1] == 0:
        R = s_prev.shape[0]
        return torch.full((R,), float("-inf"), dtype=f64), torch.zeros(R, dtype=f64), torch.zeros(R, v_prev.shape[-1], dtype=f64)
    m = s_prev.amax(-1)
    e = torch.exp(s_prev - m[:, None])
    return m, e.sum(-1), e @ v_prev


# --- 03.q1 online softmax update ------------------------------------------------------------

def _update_cases() -> list[Case]:
    def case(label, R, P, Bk, dtype, seed, shift=0.0, scale=1.0, hint=""):
        s_all = _randn((R, P + Bk), seed, scale)
        s_all[:, P:] += shift  # shift > 0: the new block holds the new maximum
        m, l, _ = _running_state(s_all[:, :P], torch.zeros(P, 1, dtype=f64))
        return Case(label, (m.to(dtype), l.to(dtype), s_all[:, P:].to(dtype)), hint=hint)

    cases = [
        case("first block: m = -inf, l = 0 (R=3, Bk=4), float64", 3, 0, 4, f64, 1,
             hint="before the first block m = -inf and l = 0: exp(m - m_new) = 0 must give l_new = sum exp(s - m_new)"),
        case("the new block raises the max (R=4, Bk=5), float64", 4, 6, 5, f64, 2, shift=3.0,
             hint="the old sum was taken relative to the old max m: rescale it by exp(m - m_new) before adding"),
        case("the old max stays (R=2, Bk=3), float64", 2, 7, 3, f64, 3, shift=-3.0),
        case("Bk=1 (R=5), float32", 5, 4, 1, f32, 4, shift=1.0),
        case("logits of size 1e4 (R=3, Bk=6), float32", 3, 5, 6, f32, 5, shift=20.0, scale=1e4,
             hint="exp(s) overflows for s of 1e4: every exponent must be relative to m_new, and "
             "exp(m - m_new) <= 1 rescales the old sum"),
        case("mixed (R=6, Bk=8), float64", 6, 9, 8, f64, 6, shift=1.0, scale=2.0),
    ]
    s = _randn((3, 4), 7)
    s[0, 1:] = float("-inf")  # a causal tile: masked scores enter as -inf
    s[2, 0] = float("-inf")
    m, l, _ = _running_state(_randn((3, 5), 8), torch.zeros(5, 1, dtype=f64))
    cases.append(Case("masked scores (-inf) inside the block (R=3, Bk=4), float64", (m, l, s),
                      hint="a masked score is -inf and contributes exp(-inf) = 0 to the sum"))
    return cases


def _update_reference(m, l, s):
    m_new = torch.maximum(m, s.amax(-1))
    # log of the total sum over old and new keys, then re-expressed relative to m_new
    log_total = torch.logaddexp(m + torch.log(l), torch.logsumexp(s, -1))
    return torch.stack([m_new, torch.exp(log_total - m_new)], -1)


Q1 = Question(
    id="03.q1",
    name="online_softmax_update",
    arg_names=("m", "l", "s"),
    title="online softmax: update the running max and sum with a new block",
    make_cases=_update_cases,
    reference=_update_reference,
    hint="m_new = max(m, max_j s_j); l_new = exp(m - m_new) * l + sum_j exp(s_j - m_new); "
    "return torch.stack([m_new, l_new], -1)",
    forbidden=SOFTMAX,
)


# --- 03.q2 one forward tile step ------------------------------------------------------------

def _tile_cases() -> list[Case]:
    def case(label, R, P, Bk, Dv, dtype, seed, shift=0.0, scale=1.0, hint=""):
        s_all = _randn((R, P + Bk), seed, scale)
        s_all[:, P:] += shift
        v_all = _randn((P + Bk, Dv), seed + 50)
        m, l, acc = _running_state(s_all[:, :P], v_all[:P])
        args = (m, l, acc, s_all[:, P:], v_all[P:])
        return Case(label, tuple(a.to(dtype) for a in args), hint=hint)

    return [
        case("first tile: m = -inf, l = 0, acc = 0 (R=3, Bk=4, Dv=2), float64", 3, 0, 4, 2, f64, 10),
        case("the new tile raises the max (R=4, Bk=5, Dv=3), float64", 4, 6, 5, 3, f64, 11, shift=3.0,
             hint="acc holds sum_j exp(s_j - m) v_j for the old keys: multiply it by exp(m - m_new) "
             "before adding the new tile's exp(s - m_new) @ v"),
        case("the old max stays (R=2, Bk=3, Dv=4), float64", 2, 8, 3, 4, f64, 12, shift=-3.0),
        case("Bk=1 (R=5, Dv=2), float32", 5, 4, 1, 2, f32, 13, shift=1.0),
        case("large logits (R=3, Bk=6, Dv=5), float32", 3, 5, 6, 5, f32, 14, shift=30.0, scale=50.0,
             hint="every exponent must be relative to m_new: exp(s - m_new) <= 1 and exp(m - m_new) <= 1"),
        case("mixed (R=6, Bk=8, Dv=3), float64", 6, 9, 8, 3, f64, 15, shift=1.0, scale=2.0),
    ]


def _tile_reference(m, l, acc, s, v):
    # a loop over keys, in log space: log of the weight of key j relative to the new max
    m_new = torch.maximum(m, s.amax(-1))
    out = torch.exp(m - m_new)[:, None] * acc
    for j in range(s.shape[-1]):
        out = out + torch.exp(s[:, j] - m_new)[:, None] * v[j][None, :]
    return out


Q2 = Question(
    id="03.q2",
    name="flash_tile_step",
    arg_names=("m", "l", "acc", "s", "v"),
    title="one FlashAttention tile: rescale the accumulator and add the new block",
    make_cases=_tile_cases,
    reference=_tile_reference,
    hint="m_new = max(m, rowmax(s)); acc_new = exp(m - m_new)[:, None] * acc + exp(s - m_new[:, None]) @ v",
    forbidden=SOFTMAX,
)


# --- 03.q3 the full tiled forward -----------------------------------------------------------

def _forward_cases() -> list[Case]:
    shapes = [  # (B, H, T, S, D, block_q, block_k, causal, dtype, q scale)
        (1, 1, 8, 8, 4, 4, 4, False, f64, 1.5),
        (2, 2, 5, 11, 3, 3, 4, False, f64, 1.5),
        (1, 2, 8, 8, 4, 4, 4, True, f64, 1.5),
        (1, 1, 6, 6, 2, 2, 3, True, f64, 1.5),
        (2, 1, 4, 10, 5, 2, 3, True, f64, 1.5),
        (1, 1, 1, 9, 4, 1, 4, True, f32, 1.5),
        (1, 3, 7, 7, 8, 16, 16, True, f32, 1.5),
        (1, 1, 9, 13, 4, 4, 5, False, f32, 1.5),
        (1, 1, 8, 24, 2, 4, 4, False, f64, 1.5),  # a block of rows against all S keys is too large here
        (2, 1, 8, 24, 2, 4, 4, True, f32, 1.5),
        (1, 2, 12, 12, 4, 4, 4, True, f64, 500.0),
        (1, 1, 8, 10, 4, 3, 4, False, f32, 40.0),
    ]
    cases = []
    for i, (B, H, T, S, D, bq, bk, causal, dtype, q_scale) in enumerate(shapes):
        q = _randn((B, H, T, D), 30 + 3 * i, q_scale).to(dtype)
        k, v = (_randn((B, H, S, D), 31 + 3 * i + j, 1.5).to(dtype) for j in range(2))
        label = f"B={B}, H={H}, T={T}, S={S}, D={D}, block_q={bq}, block_k={bk}, causal={causal}, {dtype_name(dtype)}"
        hint = ""
        if causal:
            hint = (f"query row t sits at key position t + (S - T) = t + {S - T} and sees keys "
                    f"j <= t + {S - T}; the block of rows r0..r1-1 needs key tiles that start before "
                    f"r1 + {S - T} (its last row's diagonal included)")
        if q_scale > 10:
            label = f"scores of size ~{q_scale * 2.25 * D ** 0.5:.0f}: " + label
            hint = ("exp(s) overflows for scores this large: keep the running maximum m of each row and "
                    "rescale l and acc by exp(m - m_new) whenever it grows, so every exponent is <= 0")
        cases.append(Case(label, (q, k, v, bq, bk), {"causal": causal}, hint=hint))
    return cases


def _forward_tile_limit(case: Case) -> int:
    """The most values one tensor of a tiled forward holds: an input, the output, or one tile."""
    q, k, v, bq, bk = case.args
    B, H, T, D = q.shape
    S, Dv = k.shape[-2], v.shape[-1]
    return B * H * max(T * D, S * D, T * Dv, S * Dv, min(bq, T) * min(bk, S))


def _forward_reference(q, k, v, block_q, block_k, causal=False):
    keep = causal_keep(q.shape[-2], k.shape[-2]) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


Q3 = Question(
    id="03.q3",
    name="tiled_attention",
    arg_names=("q", "k", "v", "block_q", "block_k"),
    title="the tiled forward pass with online softmax",
    make_cases=_forward_cases,
    reference=_forward_reference,
    hint="for each block of block_q query rows keep m, l, acc; loop over key blocks of block_k, "
    "scores = q_i k_j^T / sqrt(D) (masked to -inf when causal), update m, l, acc as in 03.q1/03.q2, "
    "and write acc / l at the end",
    points=2,
    forbidden=SOFTMAX + KERNELS,
    max_intermediate=_forward_tile_limit,
    work_rule="tiling (block_q x block_k scores at a time, never the T x S matrix)",
)


# --- 03.q4 merge two partial results --------------------------------------------------------

def _merge_cases() -> list[Case]:
    def partials(B, T, S1, S2, D, seed, scale=1.0):
        q, k, v = _randn((B, T, D), seed, scale), _randn((B, S1 + S2, D), seed + 1), _randn((B, S1 + S2, D), seed + 2)
        scores = q @ k.transpose(-1, -2) * D ** -0.5
        parts = []
        for a, b in ((0, S1), (S1, S1 + S2)):
            s = scores[..., a:b]
            lse = torch.logsumexp(s, -1)
            parts += [torch.exp(s - lse[..., None]) @ v[:, a:b], lse]
        return parts

    cases = []
    for i, (B, T, S1, S2, D, dtype, scale) in enumerate([
            (1, 3, 4, 5, 2, f64, 1.0), (2, 4, 1, 7, 3, f64, 1.0), (1, 1, 6, 6, 4, f32, 1.0),
            (2, 3, 5, 2, 3, f32, 3.0)]):
        o1, l1, o2, l2 = partials(B, T, S1, S2, D, 60 + 3 * i, scale)
        cases.append(Case(f"B={B}, T={T}, keys split {S1}+{S2}, D={D}, {dtype_name(dtype)}",
                          tuple(x.to(dtype) for x in (o1, l1, o2, l2))))
    o1, l1, o2, l2 = partials(1, 4, 3, 3, 2, 80)
    # float32 resolves 1e4 only to about 1e-3, so its large case uses lse ~ 100 (e^100 overflows float32)
    for dtype, big in ((f64, 1e4), (f32, 100.0)):
        cases.append(Case(f"lse of size {big:g} (exp overflows), {dtype_name(dtype)}",
                          tuple(x.to(dtype) for x in (o1, l1 + big, o2, l2 + big - 3.0)),
                          hint="exp(lse) overflows to inf: weight part i by exp(lse_i - lse) with lse = log(e^lse1 + e^lse2), "
                          "computed stably (e.g. torch.logaddexp or subtract the max first)"))
    empty_l = torch.full_like(l1, float("-inf"))
    cases.append(Case("first part empty (lse1 = -inf, o1 = 0), float64", (torch.zeros_like(o1), empty_l, o2, l2),
                      hint="an empty part has lse = -inf and weight exp(-inf) = 0: the result is the other part"))
    return cases


def _merge_reference(o1, lse1, o2, lse2):
    # weight of part 1 = e^lse1 / (e^lse1 + e^lse2) = sigmoid(lse1 - lse2)
    w1 = torch.sigmoid(lse1 - lse2)[..., None]
    return w1 * o1 + (1 - w1) * o2


Q4 = Question(
    id="03.q4",
    name="merge_two",
    arg_names=("o1", "lse1", "o2", "lse2"),
    title="merge two partial attention results by their log-sum-exps",
    make_cases=_merge_cases,
    reference=_merge_reference,
    hint="lse = logaddexp(lse1, lse2); out = exp(lse1 - lse)[..., None] * o1 + exp(lse2 - lse)[..., None] * o2",
    forbidden=SOFTMAX + KERNELS,
)


# --- 03.q5 the backward dS of one tile ------------------------------------------------------

def _ds_cases() -> list[Case]:
    cases = []
    for i, (R, S, D, Dv, c0, c1, dtype) in enumerate([
            (3, 8, 4, 4, 0, 4, f64), (4, 10, 3, 5, 4, 8, f64), (2, 7, 4, 2, 5, 7, f64),
            (5, 12, 8, 8, 0, 12, f32), (1, 6, 2, 3, 3, 4, f32), (6, 16, 2, 2, 4, 8, f64)]):
        q, k, v, do = (_randn(shape, 90 + 4 * i + j, 1.5) for j, shape in
                       enumerate([(R, D), (S, D), (S, Dv), (R, Dv)]))
        scores = q @ k.T * D ** -0.5
        lse = torch.logsumexp(scores, -1)
        out = torch.exp(scores - lse[:, None]) @ v
        delta = (do * out).sum(-1)
        cases.append(Case(f"R={R}, S={S}, D={D}, Dv={Dv}, tile columns {c0}:{c1}, {dtype_name(dtype)}",
                          tuple(x.to(dtype) for x in (q, k, v, do, lse, delta)) + (c0, c1)))
    return cases


def _ds_tile_limit(case: Case) -> int:
    """The most values one tensor may hold: an input or one (R, c1 - c0) tile, never a whole (R, S) row."""
    q_i, k, v, do_i, _, _, c0, c1 = case.args
    return max(q_i.numel(), k.numel(), v.numel(), do_i.numel(), q_i.shape[0] * (c1 - c0))


def _ds_reference(q_i, k, v, do_i, lse_i, delta_i, c0, c1):
    # autograd through the full softmax; lse_i and delta_i are not used
    scores = (q_i @ k.T * q_i.shape[-1] ** -0.5).requires_grad_(True)
    out = torch.softmax(scores, -1) @ v
    (grad,) = torch.autograd.grad(out, scores, do_i)
    return grad[:, c0:c1].detach()


Q5 = Question(
    id="03.q5",
    name="tile_dS",
    arg_names=("q_i", "k", "v", "do_i", "lse_i", "delta_i", "c0", "c1"),
    title="the backward: dS for one tile from lse and D = rowsum(dO * O)",
    make_cases=_ds_cases,
    reference=_ds_reference,
    hint="with S_ij = q_i k_j / sqrt(D) for the tile's keys j in c0:c1: P = exp(S - lse_i[:, None]), "
    "dP = do_i @ v[c0:c1].T, dS = P * (dP - delta_i[:, None])",
    forbidden=SOFTMAX + KERNELS,
    max_intermediate=_ds_tile_limit,
    work_rule="the tile's backward (lse_i and delta_i stand for the row; its other keys are not needed)",
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
