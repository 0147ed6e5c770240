"""Plausible wrong answers to the chapter 12 questions, each with the text its failure must show."""
from __future__ import annotations

import torch


def int8_round_toward_zero(x):
    """Truncates x / step (round toward zero) instead of rounding to the nearest level."""
    step = x.abs().max() / 127
    return x.clone() if step == 0 else torch.trunc(x / step) * step


def int8_scale_128(x):
    """Divides max|x| by 128, as if the grid had 128 positive levels; the largest value is then clipped."""
    step = x.abs().max() / 128
    return x.clone() if step == 0 else torch.clamp(torch.round(x / step), -127, 127) * step


def int8_min_max(x):
    """Asymmetric min-max grid (255 steps from min to max) where the question asks for the symmetric one."""
    low, high = x.min(), x.max()
    step = (high - low) / 255
    return x.clone() if step == 0 else torch.round((x - low) / step) * step + low


def int8_uses_the_library(x):
    from minilib.compress import fake_quantize

    return fake_quantize(x, bits=8)


def fp4_round_toward_zero(x):
    """Takes the largest grid value not above |x| (round toward zero on the grid)."""
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=x.dtype)
    mag = x.abs().clamp(max=6.0)
    idx = torch.searchsorted(grid, mag, right=True) - 1
    return torch.sign(x) * grid[idx]


def fp4_uniform_grid(x):
    """Rounds to a uniform grid of step 0.5 (what an integer format does), clipped at 6."""
    return torch.round(x.clamp(-6, 6) * 2) / 2


def fp4_no_clipping(x):
    """Forgets to clip: values beyond 6 round to the nearest of an extended grid (8, 12, ...)."""
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0],
                        dtype=x.dtype)
    return torch.sign(x) * grid[(x.abs()[..., None] - grid).abs().argmin(-1)]


def fp4_drops_the_sign(x):
    """Rounds |x| and forgets to put the sign back."""
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=x.dtype)
    return grid[(x.abs().clamp(max=6.0)[..., None] - grid).abs().argmin(-1)]


def mask_keeps_smallest(w):
    """Keeps the two SMALLEST magnitudes of each group."""
    groups = w.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.abs().topk(2, dim=1, largest=False).indices, True)
    return (groups * keep).reshape(w.shape)


def mask_signed_values(w):
    """Ranks by the signed value, so large negative weights are pruned."""
    groups = w.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(2, dim=1).indices, True)
    return (groups * keep).reshape(w.shape)


def mask_groups_down_columns(w):
    """Forms the groups of four along the first dimension (down the columns) instead of the last."""
    flat = w.reshape(-1, w.shape[-1]).T.contiguous()
    if flat.shape[1] % 4:
        return w.clone()
    groups = flat.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.abs().topk(2, dim=1).indices, True)
    return (groups * keep).reshape(flat.shape).T.reshape(w.shape)


def mask_uses_the_library(w):
    from minilib.compress import nm_mask

    return w * nm_mask(w)


def _tome(x, r, similarity, pick_lowest=False, replace=False):
    N = x.shape[0]
    if r == 0:
        return x.clone()
    a, b = torch.arange(0, N, 2), torch.arange(1, N, 2)
    best_sim, best_b = similarity(x[a], x[b]).max(dim=-1)
    chosen = best_sim.argsort(descending=not pick_lowest)[:r]
    out = x.clone()
    if replace:
        out[b[best_b[chosen]]] = x[a[chosen]]
    else:
        sums, counts = x.clone(), torch.ones(N, dtype=x.dtype)
        sums.index_add_(0, b[best_b[chosen]], x[a[chosen]])
        counts.index_add_(0, b[best_b[chosen]], torch.ones(r, dtype=x.dtype))
        out = sums / counts[:, None]
    keep = torch.ones(N, dtype=torch.bool)
    keep[a[chosen]] = False
    return out[keep]


def _cosine(u, v):
    return (u / u.norm(dim=-1, keepdim=True)) @ (v / v.norm(dim=-1, keepdim=True)).T


def tome_dot_product(x, r):
    """Matches by the raw dot product, so long tokens look similar to everything."""
    return _tome(x, r, lambda u, v: u @ v.T)


def tome_least_similar(x, r):
    """Merges the r pairs of LOWEST similarity."""
    return _tome(x, r, _cosine, pick_lowest=True)


def tome_replaces(x, r):
    """Overwrites the destination with the source instead of averaging them."""
    return _tome(x, r, _cosine, replace=True)


def tome_uses_the_library(x, r):
    from minilib.compress import tome

    return tome(x[None], r)[0][0]


def accept_ratio_inverted(p, q, token, u):
    """Accepts when u < q(x) / p(x): the draft over the target."""
    if u < q[token] / p[token]:
        out = torch.zeros_like(p)
        out[token] = 1
        return out
    residual = (p - q).clamp(min=0)
    return residual / residual.sum()


def accept_residual_unnormalised(p, q, token, u):
    """Returns max(p - q, 0) without dividing by its sum."""
    if u < p[token] / q[token]:
        out = torch.zeros_like(p)
        out[token] = 1
        return out
    return (p - q).clamp(min=0)


def accept_residual_reversed(p, q, token, u):
    """Resamples from max(q - p, 0): the draft's excess instead of the target's."""
    if u < p[token] / q[token]:
        out = torch.zeros_like(p)
        out[token] = 1
        return out
    residual = (q - p).clamp(min=0)
    return residual / residual.sum()


def accept_returns_target(p, q, token, u):
    """On rejection returns p itself instead of the residual."""
    if u < p[token] / q[token]:
        out = torch.zeros_like(p)
        out[token] = 1
        return out
    return p.clone()


WRONG = [
    ("12.q1", int8_round_toward_zero, "max abs error"),
    ("12.q1", int8_scale_128, "max abs error"),
    ("12.q1", int8_min_max, "max abs error"),
    ("12.q1", int8_uses_the_library, "forbidden"),
    ("12.q2", fp4_round_toward_zero, "case 1/5"),
    ("12.q2", fp4_uniform_grid, "case 1/5"),
    ("12.q2", fp4_no_clipping, "case 3/5"),
    ("12.q2", fp4_drops_the_sign, "max abs error"),
    ("12.q3", mask_keeps_smallest, "case 1/5"),
    ("12.q3", mask_signed_values, "case 1/5"),
    ("12.q3", mask_groups_down_columns, "max abs error"),
    ("12.q3", mask_uses_the_library, "forbidden"),
    ("12.q4", tome_dot_product, "max abs error"),
    ("12.q4", tome_least_similar, "max abs error"),
    ("12.q4", tome_replaces, "max abs error"),
    ("12.q4", tome_uses_the_library, "forbidden"),
    ("12.q5", accept_ratio_inverted, "case 1/6"),
    ("12.q5", accept_residual_unnormalised, "max abs error"),
    ("12.q5", accept_residual_reversed, "max abs error"),
    ("12.q5", accept_returns_target, "max abs error"),
]
