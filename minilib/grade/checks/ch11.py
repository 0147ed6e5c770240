"""Chapter 11 questions: patch embedding, window partition and its reverse, the shifted-window weights, sequence pooling.

The references are independent float64 computations written here (``torch.nn.functional.conv2d`` with stride equal to
the patch, Python loops over windows and over pairs of tokens), never ``minilib.vision``, whose functions the answers
may not call. The shifted-window question returns the attention weights the mask gives (the softmax over the kept
keys of each window), so that every answer is a finite floating-point tensor compared entry by entry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minilib.grade.checks.common import EXACT, dtype_name, f32, f64, randn
from minilib.grade.questions import Case, Question

#: The library's own answers: the whole vision package and its windows.
LIBRARY = ("minilib.vision",)
NEG = float("-inf")


# --- 11.q1 patch embedding ------------------------------------------------------------------

def _patch_cases() -> list[Case]:
    shapes = [(2, 1, 8, 8, 2, 5, f64), (1, 3, 6, 9, 3, 4, f64), (3, 2, 4, 8, 4, 3, f64), (2, 1, 5, 5, 1, 2, f32),
              (1, 2, 6, 4, 2, 6, f32)]
    cases = []
    for i, (B, C, H, W, p, d, dtype) in enumerate(shapes):
        args = (randn((B, C, H, W), dtype, 10 + i), randn((d, C * p * p), dtype, 20 + i), randn((d,), dtype, 30 + i), p)
        hint = ""
        if C > 1:
            hint = ("each patch is flattened channel first: all p*p pixels of channel 0, then channel 1, ... "
                    "(the order of x[:, :, i:i+p, j:j+p].reshape(B, -1))")
        if H != W:
            hint = "patches go row by row: patch n sits at row n // (W/p), column n % (W/p)"
        cases.append(Case(f"B={B}, C={C}, H={H}, W={W}, patch={p}, d={d}, {dtype_name(dtype)}", args, hint=hint))
    return cases


def _patch_reference(images, weight, bias, patch):
    d, C = weight.shape[0], images.shape[1]
    conv = F.conv2d(images, weight.reshape(d, C, patch, patch), bias, stride=patch)
    return conv.flatten(2).transpose(1, 2)


Q1 = Question(
    id="11.q1",
    name="patch_embed",
    arg_names=("images", "weight", "bias", "patch"),
    title="patch embedding: cut into patches, flatten, apply one linear map",
    make_cases=_patch_cases,
    reference=_patch_reference,
    hint="reshape images (B, C, H, W) to (B, C, H/p, p, W/p, p), permute to (B, H/p, W/p, C, p, p), reshape to "
    "(B, N, C*p*p), then @ weight.T + bias",
    forbidden=LIBRARY + ("torch.nn.functional.conv2d", "torch.conv2d"),
)


# --- 11.q2 window partition -----------------------------------------------------------------

def _grid_cases(seed0: int) -> list[Case]:
    shapes = [(1, 4, 4, 2, 2, f64), (2, 4, 6, 3, 2, f64), (1, 6, 4, 1, 2, f64), (2, 8, 8, 2, 4, f32), (1, 3, 3, 2, 3, f32),
              (1, 2, 2, 1, 1, f64)]
    return [Case(f"B={B}, H={H}, W={W}, C={C}, window={w}, {dtype_name(dtype)}",
                 (randn((B, H, W, C), dtype, seed0 + i), w),
                 hint="windows go row by row over the grid, and the w*w tokens inside a window row by row"
                 if H != W else "")
            for i, (B, H, W, C, w, dtype) in enumerate(shapes)]


def _partition_reference(x, window):
    B, H, W, C = x.shape
    w = window
    out = [x[:, i:i + w, j:j + w, :].reshape(B, w * w, C) for i in range(0, H, w) for j in range(0, W, w)]
    return torch.stack(out, dim=1)


Q2 = Question(
    id="11.q2",
    name="window_partition",
    arg_names=("x", "window"),
    title="Swin's window partition: a grid of tokens into w x w windows",
    make_cases=lambda: _grid_cases(100),
    reference=_partition_reference,
    hint="x.reshape(B, H/w, w, W/w, w, C), move the two window-index axes to the front (permute(0, 1, 3, 2, 4, 5)), "
    "reshape to (B, (H/w)(W/w), w*w, C)",
    tolerance=EXACT,
    forbidden=LIBRARY,
)


# --- 11.q3 window reverse -------------------------------------------------------------------

def _reverse_cases() -> list[Case]:
    cases = []
    for case in _grid_cases(200):
        x, w = case.args
        B, H, W, C = x.shape
        cases.append(Case(case.label, (_partition_reference(x, w), w, H, W), hint=case.hint))
    return cases


def _reverse_reference(windows, window, H, W):
    B, _, _, C = windows.shape
    w, per_row = window, W // window
    out = torch.empty(B, H, W, C, dtype=windows.dtype)
    for n in range(windows.shape[1]):
        i, j = divmod(n, per_row)
        out[:, i * w:(i + 1) * w, j * w:(j + 1) * w, :] = windows[:, n].reshape(B, w, w, C)
    return out


Q3 = Question(
    id="11.q3",
    name="window_reverse",
    arg_names=("windows", "window", "H", "W"),
    title="the inverse: windows back into the (B, H, W, C) grid",
    make_cases=_reverse_cases,
    reference=_reverse_reference,
    hint="undo the partition step by step: reshape to (B, H/w, W/w, w, w, C), permute(0, 1, 3, 2, 4, 5), "
    "reshape to (B, H, W, C)",
    tolerance=EXACT,
    forbidden=LIBRARY,
)


# --- 11.q4 shifted-window attention weights -------------------------------------------------

def _shift_cases() -> list[Case]:
    shapes = [(4, 4, 2, 1, f64), (8, 8, 4, 2, f64), (4, 6, 2, 1, f64), (6, 6, 3, 1, f32), (8, 4, 4, 3, f32),
              (4, 4, 2, 0, f64), (9, 6, 3, 2, f64)]
    cases = []
    for i, (H, W, w, s, dtype) in enumerate(shapes):
        scores = randn(((H // w) * (W // w), w * w, w * w), dtype, 300 + i)
        hint = ""
        if s == 0:
            hint = "shift 0: nothing wrapped around, every pair inside a window is kept"
        elif H != W:
            hint = "the roll wraps rows and columns separately: label the rows and the columns of the rolled grid"
        cases.append(Case(f"grid {H}x{W}, window={w}, shift={s}, {dtype_name(dtype)}", (scores, H, W, w, s), hint=hint))
    return cases


def _shift_reference(scores, H, W, window, shift):
    w, per_row = window, W // window
    keep = torch.zeros(scores.shape, dtype=torch.bool)
    for n in range(scores.shape[0]):
        wi, wj = divmod(n, per_row)
        cells = [(wi * w + a, wj * w + b) for a in range(w) for b in range(w)]  # rolled coordinates
        for t, (ry, rx) in enumerate(cells):
            for u, (ry2, rx2) in enumerate(cells):
                # original coordinates before the roll by -shift; kept when the roll did not wrap between them
                y, x, y2, x2 = (ry + shift) % H, (rx + shift) % W, (ry2 + shift) % H, (rx2 + shift) % W
                keep[n, t, u] = (y - y2 == ry - ry2) and (x - x2 == rx - rx2)
    return torch.softmax(scores.masked_fill(~keep, NEG), dim=-1)


Q4 = Question(
    id="11.q4",
    name="shifted_window_weights",
    arg_names=("scores", "H", "W", "window", "shift"),
    title="the shifted-window mask: attention weights inside each window of the rolled grid",
    make_cases=_shift_cases,
    reference=_shift_reference,
    hint="after x.roll((-shift, -shift)) the rolled grid's rows [0, H-w), [H-w, H-shift), [H-shift, H) (and the same "
    "for columns) came from different places: label each token by its (row region, column region), partition the "
    "labels like the tokens, keep the pairs with equal labels, -inf elsewhere, softmax over the last axis",
    forbidden=LIBRARY,
)


# --- 11.q5 sequence pooling -----------------------------------------------------------------

def _pool_cases() -> list[Case]:
    shapes = [(2, 5, 3, f64, 1.0), (1, 1, 4, f64, 1.0), (3, 7, 2, f64, 3.0), (2, 16, 8, f32, 1.0), (4, 3, 5, f32, 30.0)]
    cases = []
    for i, (B, N, d, dtype, scale) in enumerate(shapes):
        hint = "scores of size 30 overflow exp: subtract the largest score of each image first" if scale > 10 else ""
        cases.append(Case(f"B={B}, N={N}, d={d}, {dtype_name(dtype)}" + (f", scores x{scale:g}" if scale != 1 else ""),
                          (randn((B, N, d), dtype, 400 + i, scale), randn((d,), dtype, 500 + i)), hint=hint))
    return cases


def _pool_reference(z, w):
    out = torch.zeros(z.shape[0], z.shape[2], dtype=z.dtype)
    for b in range(z.shape[0]):
        s = z[b] @ w
        e = torch.exp(s - s.max())
        out[b] = (e[:, None] * z[b]).sum(0) / e.sum()
    return out


Q5 = Question(
    id="11.q5",
    name="seq_pool",
    arg_names=("z", "w"),
    title="CCT's sequence pooling: an attention-weighted average of the tokens",
    make_cases=_pool_cases,
    reference=_pool_reference,
    hint="s = z @ w has shape (B, N); a = softmax of s over the N tokens (dim 1); return (a[..., None] * z).sum(1)",
    forbidden=LIBRARY,
)

QUESTIONS = [Q1, Q2, Q3, Q4, Q5]
