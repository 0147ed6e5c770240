"""Chapter 10 questions: one GD step in context, one LSA layer with the GD weights, RASP's selector width and
sort, and the prefix-matching score of an induction head.

The references are independent float64 computations: the GD step through autograd of the in-context loss, the
LSA step from the residual form of the updated tokens, loops over positions for the RASP questions and the score.
The answers may not call ``minilib.icl`` (the library's own constructions and interpreter), and the sort may not
call a sort.
"""
from __future__ import annotations

import torch

from minilib.grade.checks.common import EXACT, dtype_name, f32, f64, randn
from minilib.grade.questions import Case, Question

LIBRARY = ("minilib.icl",)
#: every sort the sort question could borrow instead of counting (``argsort``, ``Tensor.sort`` end in aten.sort)
SORTS = ("torch.sort", "torch.argsort", "torch.msort", "torch.topk", "torch.kthvalue", "numpy.sort", "numpy.argsort")


def _prompt(B, n, d, dtype, seed, noise=0.0):
    xs = randn((B, n + 1, d), f64, seed)
    w = randn((B, d), f64, seed + 1)
    ys = (xs @ w[..., None])[..., 0] + noise * randn((B, n + 1), f64, seed + 2)
    return xs.to(dtype), ys.to(dtype)


def _gd_step(xs, ys, lr):
    """w after one step from 0: minus lr times the autograd gradient of (1/2n) sum_i (w x_i - y_i)^2 at 0."""
    w = torch.zeros(xs.shape[0], xs.shape[-1], dtype=xs.dtype, requires_grad=True)
    X, y = xs[:, :-1], ys[:, :-1]
    loss = (((X * w[:, None, :]).sum(-1) - y) ** 2).sum() / (2 * X.shape[1])
    (grad,) = torch.autograd.grad(loss, w)
    return -lr * grad


# --- 10.q1 one GD step in context -----------------------------------------------------------

def _gd_cases() -> list[Case]:
    shapes = [(3, 8, 4, 0.5, f64, 0.0), (2, 1, 3, 1.0, f64, 0.0), (4, 5, 1, 0.3, f64, 0.5), (2, 12, 6, 0.1, f32, 0.2),
              (1, 3, 5, 2.0, f32, 0.0)]
    cases = []
    for i, (B, n, d, lr, dtype, noise) in enumerate(shapes):
        xs, ys = _prompt(B, n, d, dtype, 10 + 3 * i, noise)
        cases.append(Case(f"B={B}, n={n}, d={d}, lr={lr}, {dtype_name(dtype)}", (xs, ys, lr),
                          hint="the query's y (ys[:, -1]) is the target: it must not enter the step" if i == 0 else ""))
    return cases


def _gd_reference(xs, ys, lr):
    return (_gd_step(xs, ys, lr) * xs[:, -1]).sum(-1)


Q1 = Question(
    id="10.q1",
    name="one_step_gd_prediction",
    arg_names=("xs", "ys", "lr"),
    title="the prediction of one gradient-descent step on the in-context loss",
    make_cases=_gd_cases,
    reference=_gd_reference,
    hint="dw = lr / n * sum_i y_i x_i over the n examples (not the query); the prediction is dw . x_q",
    forbidden=LIBRARY,
)


# --- 10.q2 one LSA layer with the GD weights ------------------------------------------------

def _lsa_cases() -> list[Case]:
    shapes = [(2, 6, 3, 0.5, f64), (3, 1, 2, 1.0, f64), (1, 9, 5, 0.2, f64), (2, 4, 4, 0.7, f32)]
    cases = []
    for i, (B, n, d, lr, dtype) in enumerate(shapes):
        xs, ys = _prompt(B, n, d, f64, 40 + 3 * i)
        z = torch.cat([xs, ys[..., None]], -1)
        z[:, -1, -1] = 0.0
        if i == 2:  # a second layer's input: the y slots already hold residuals and the query a prediction
            z[:, :, -1] += randn((B, n + 1), f64, 99)
        cases.append(Case(f"B={B}, n={n}, d={d}, lr={lr}, {dtype_name(dtype)}" + (", y slots not from a fresh prompt" if i == 2 else ""),
                          (z.to(dtype), lr)))
    return cases


def _lsa_reference(z, lr):
    # GD from w = 0 on the y slots the layer sees: x unchanged, every y slot minus dw . x
    xs, ys = z[..., :-1], z[..., -1]
    dw = _gd_step(xs, ys, lr)
    out = z.clone()
    out[..., -1] = ys - (xs * dw[:, None, :]).sum(-1)
    return out


Q2 = Question(
    id="10.q2",
    name="lsa_gd_layer",
    arg_names=("z", "lr"),
    title="one linear self-attention layer with the weights of a GD step",
    make_cases=_lsa_cases,
    reference=_lsa_reference,
    hint="W_KQ = [[I, 0], [0, 0]], W_PV = [[0, 0], [0, -lr]]; z_j + (1/n) sum over the n examples i (not the query) "
    "of (z_i^T W_KQ z_j) W_PV z_i, for every token j including the query",
    forbidden=LIBRARY,
)


# --- 10.q3 RASP selector width --------------------------------------------------------------

def _width_cases() -> list[Case]:
    def ints(n, seed, high=5):
        return torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(seed)).to(f64)

    return [
        Case("keys 6, queries 4, float64", (ints(6, 1), ints(4, 2))),
        Case("ties between keys and queries, float64", (torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=f64),
                                                       torch.tensor([2.0, 3.0, 0.0], dtype=f64)),
             hint="the predicate is strict: a key equal to the query is not selected"),
        Case("one key, five queries, float32", (ints(1, 3).to(f32), ints(5, 4).to(f32))),
        Case("keys 9, queries 9 (a self-selector), float64", (ints(9, 5, 9), ints(9, 5, 9))),
        Case("real values, keys 7, queries 3, float32", (randn((7,), f32, 6), randn((3,), f32, 7))),
    ]


def _width_reference(keys, queries):
    return torch.tensor([sum(1.0 for k in keys.tolist() if k < q) for q in queries.tolist()], dtype=f64)


Q3 = Question(
    id="10.q3",
    name="selector_width_lt",
    arg_names=("keys", "queries"),
    title="RASP: selector_width(select(keys, queries, <))",
    make_cases=_width_cases,
    reference=_width_reference,
    hint="the selector is a (queries, keys) matrix S[q, k] = keys[k] < queries[q]; the width of query q is the "
    "number of keys it selects, one number per query",
    forbidden=LIBRARY,
    tolerance=dict(EXACT),
)


# --- 10.q4 RASP sort ------------------------------------------------------------------------

def _sort_cases() -> list[Case]:
    def ints(n, seed, high):
        return torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(seed)).to(f64)

    return [
        Case("8 distinct values, float64", (torch.randperm(8, generator=torch.Generator().manual_seed(1)).to(f64) * 1.5,)),
        Case("already sorted, float64", (torch.arange(5, dtype=f64),)),
        Case("repeated values (10 values in 0..3), float64", (ints(10, 2, 4),),
             hint="with repeated values two tokens get the same target position: break ties by position "
             "(count the smaller keys plus the equal keys at earlier positions)"),
        Case("one value, float32", (torch.tensor([3.0], dtype=f32),)),
        Case("negative and repeated values, float32", (torch.tensor([2.0, -1.0, 2.0, 0.5, -1.0, 7.0], dtype=f32),)),
    ]


def _sort_reference(x):
    values = x.tolist()
    out, remaining = [], list(values)
    while remaining:  # selection sort: no library sort
        smallest = min(remaining)
        out.append(smallest)
        remaining.remove(smallest)
    return torch.tensor(out, dtype=f64)


Q4 = Question(
    id="10.q4",
    name="rasp_sort",
    arg_names=("x",),
    title="RASP: sort by counting smaller keys, then aggregate",
    make_cases=_sort_cases,
    reference=_sort_reference,
    hint="target[q] = #{k: x_k < x_q} + #{k < q: x_k == x_q}; output position p takes the x_q with target[q] == p "
    "(select(target, indices, ==) then aggregate)",
    forbidden=LIBRARY + SORTS,
    tolerance=dict(EXACT),
)


# --- 10.q5 prefix-matching score ------------------------------------------------------------

def _score_cases() -> list[Case]:
    cases = []
    for i, (H, L, V, dtype) in enumerate([(2, 6, 20, f64), (3, 4, 10, f64), (1, 8, 30, f32), (2, 5, 6, f64)]):
        g = torch.Generator().manual_seed(70 + i)
        segment = torch.randperm(V, generator=g)[:L]
        tokens = torch.cat([segment, segment])
        logits = randn((H, 2 * L, 2 * L), f64, 80 + i, 2.0)
        logits = logits.masked_fill(torch.ones(2 * L, 2 * L, dtype=torch.bool).triu(1), float("-inf"))
        attn = torch.softmax(logits, -1)
        if i == 0:  # head 0 is a perfect induction head on the repeated half
            attn[0, L:] = 0.0
            attn[0, torch.arange(L, 2 * L), torch.arange(1, L + 1)] = 1.0
        cases.append(Case(f"H={H}, segment L={L} repeated once, {dtype_name(dtype)}" + (" (head 0 a perfect induction head)" if i == 0 else ""),
                          (attn.to(dtype), tokens)))
    return cases


def _score_reference(attn, tokens):
    T = tokens.shape[0]
    L = T // 2
    t_list = tokens.tolist()
    scores = []
    for h in range(attn.shape[0]):
        total = 0.0
        for t in range(L, T):
            total += sum(attn[h, t, s].item() for s in range(1, t + 1) if t_list[s - 1] == t_list[t])
        scores.append(total / L)
    return torch.tensor(scores, dtype=f64)


Q5 = Question(
    id="10.q5",
    name="prefix_matching_score",
    arg_names=("attn", "tokens"),
    title="the prefix-matching score of each head on a repeated random segment",
    make_cases=_score_cases,
    reference=_score_reference,
    hint="for each query t in the second half (t >= L), add the attention to every key s >= 1 whose previous token "
    "tokens[s - 1] equals tokens[t]; average over the L queries, one score per head",
    forbidden=LIBRARY,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
