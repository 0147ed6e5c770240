"""Plausible wrong answers to the chapter 03 questions, each with the text its failure must show."""
from __future__ import annotations

import torch


def update_no_rescale(m, l, s):
    """Uses the new max for the new terms but adds the old sum as if it were relative to m_new."""
    m_new = torch.maximum(m, s.amax(-1))
    return torch.stack([m_new, l + torch.exp(s - m_new[:, None]).sum(-1)], -1)


def update_old_max(m, l, s):
    """Keeps the old max for the new terms: exp(s - m) overflows (or is NaN on the first block)."""
    m_new = torch.maximum(m, s.amax(-1))
    return torch.stack([m_new, l + torch.exp(s - m[:, None]).sum(-1)], -1)


def update_builtin(m, l, s):
    p = torch.softmax(torch.cat([m[:, None], s], -1), -1)  # forbidden however it is used
    return torch.stack([p[:, 0], p[:, 1]], -1)


def tile_missing_rescale(m, l, acc, s, v):
    """Forgets to multiply the old accumulator by exp(m - m_new)."""
    m_new = torch.maximum(m, s.amax(-1))
    return acc + torch.exp(s - m_new[:, None]) @ v


def tile_new_max_for_old_sum(m, l, acc, s, v):
    """Rescales by exp(m_new - m) (the wrong way round)."""
    m_new = torch.maximum(m, s.amax(-1))
    alpha = torch.exp(m_new - m).nan_to_num(0.0)
    return alpha[:, None] * acc + torch.exp(s - m_new[:, None]) @ v


def _tiled(q, k, v, block_q, block_k, causal, last_key, rescale=True, old_max_for_sum=False):
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    offset = S - T
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for r0 in range(0, T, block_q):
        r1 = min(T, r0 + block_q)
        qi = q[..., r0:r1, :] * D**-0.5
        m = torch.full(qi.shape[:-1], float("-inf"), dtype=q.dtype)
        l, acc = torch.zeros_like(m), torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        for c0 in range(0, last_key(r0, r1, S, offset) if causal else S, block_k):
            c1 = min(S, c0 + block_k)
            s = qi @ k[..., c0:c1, :].transpose(-1, -2)
            if causal:
                visible = torch.arange(c0, c1)[None, :] <= torch.arange(r0, r1)[:, None] + offset
                s = s.masked_fill(~visible, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            alpha = torch.exp(m - m_new)
            p = torch.exp(s - m_new[..., None])
            l = (l if old_max_for_sum else alpha * l) + p.sum(-1)
            acc = (alpha[..., None] * acc if rescale else acc) + p @ v[..., c0:c1, :]
            m = m_new
        out[..., r0:r1, :] = acc / l[..., None]
    return out


def forward_missing_rescale(q, k, v, block_q, block_k, causal=False):
    return _tiled(q, k, v, block_q, block_k, causal, lambda r0, r1, S, o: min(S, r1 + o), rescale=False)


def forward_new_max_for_old_sum(q, k, v, block_q, block_k, causal=False):
    return _tiled(q, k, v, block_q, block_k, causal, lambda r0, r1, S, o: min(S, r1 + o), old_max_for_sum=True)


def forward_causal_tile_off_by_one(q, k, v, block_q, block_k, causal=False):
    """Stops one key early: the last row of each query block misses its own diagonal key."""
    return _tiled(q, k, v, block_q, block_k, causal, lambda r0, r1, S, o: min(S, r1 + o - 1))


def forward_causal_first_row_only(q, k, v, block_q, block_k, causal=False):
    """Visits the key tiles the block's first row needs, not its last row's."""
    return _tiled(q, k, v, block_q, block_k, causal, lambda r0, r1, S, o: min(S, r0 + o + 1))


def forward_full_softmax(q, k, v, block_q, block_k, causal=False):
    T, S = q.shape[-2], k.shape[-2]
    s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if causal:
        s = s.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(S - T), float("-inf"))
    return s.softmax(-1) @ v


def forward_no_running_max(q, k, v, block_q, block_k, causal=False):
    """Tiles, but sums exp(s) without a running maximum: exact for small scores, inf/inf = NaN for large."""
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for r0 in range(0, T, block_q):
        r1 = min(T, r0 + block_q)
        qi = q[..., r0:r1, :] * D**-0.5
        l, acc = torch.zeros(qi.shape[:-1], dtype=q.dtype), torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        for c0 in range(0, S, block_k):
            c1 = min(S, c0 + block_k)
            p = torch.exp(qi @ k[..., c0:c1, :].transpose(-1, -2))
            if causal:
                p = p * (torch.arange(c0, c1)[None, :] <= torch.arange(r0, r1)[:, None] + S - T)
            l, acc = l + p.sum(-1), acc + p @ v[..., c0:c1, :]
        out[..., r0:r1, :] = acc / l[..., None]
    return out


def forward_full_by_hand(q, k, v, block_q, block_k, causal=False):
    """Correct values, no forbidden call, but never tiles: it holds the whole T x S score matrix."""
    T, S = q.shape[-2], k.shape[-2]
    s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if causal:
        s = s.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(S - T), float("-inf"))
    e = torch.exp(s - s.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True) @ v


def forward_row_blocks_only(q, k, v, block_q, block_k, causal=False):
    """Tiles the queries but takes each block's scores against all S keys at once."""
    T, S = q.shape[-2], k.shape[-2]
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for r0 in range(0, T, block_q):
        r1 = min(T, r0 + block_q)
        out[..., r0:r1, :] = forward_full_by_hand(q[..., r0:r1, :], k[..., :S - T + r1, :], v[..., :S - T + r1, :],
                                                  block_q, block_k, causal) if causal else \
            forward_full_by_hand(q[..., r0:r1, :], k, v, block_q, block_k)
    return out


def forward_in_thread(q, k, v, block_q, block_k, causal=False):
    import threading

    T, S = q.shape[-2], k.shape[-2]
    mask = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else None
    kernel = getattr(torch.nn.functional, "scaled_dot_product_" + "attention")  # hidden from the static check
    box = []
    worker = threading.Thread(target=lambda: box.append(kernel(q, k, v, attn_mask=mask)))
    worker.start()
    worker.join()
    return box[0]


def update_grader_reference(m, l, s):
    from minilib.grade.questions import get

    return get("03.q1").reference(m.double(), l.double(), s.double()).to(m.dtype)


def merge_average(o1, lse1, o2, lse2):
    return (o1 + o2) / 2


def merge_unstable(o1, lse1, o2, lse2):
    """exp(lse) overflows for lse of size 1e4: inf / inf = NaN."""
    w1, w2 = lse1.exp(), lse2.exp()
    return (w1[..., None] * o1 + w2[..., None] * o2) / (w1 + w2)[..., None]


def ds_without_delta(q_i, k, v, do_i, lse_i, delta_i, c0, c1):
    p = torch.exp(q_i @ k[c0:c1].T * q_i.shape[-1] ** -0.5 - lse_i[:, None])
    return p * (do_i @ v[c0:c1].T)


def ds_tile_softmax(q_i, k, v, do_i, lse_i, delta_i, c0, c1):
    """Normalises P over the tile's keys only instead of using the row's lse."""
    s = q_i @ k[c0:c1].T * q_i.shape[-1] ** -0.5
    p = torch.exp(s - torch.logsumexp(s, -1, keepdim=True))
    return p * (do_i @ v[c0:c1].T - delta_i[:, None])


def ds_recompute_row(q_i, k, v, do_i, lse_i, delta_i, c0, c1):
    """Ignores lse_i and delta_i and recomputes the whole row's softmax and output: right values,
    but it needs every key of the row, which is what lse and delta exist to avoid."""
    s = q_i @ k.T * q_i.shape[-1] ** -0.5
    p = torch.exp(s - s.amax(-1, keepdim=True))
    p = p / p.sum(-1, keepdim=True)
    dp = do_i @ v.T
    return (p * (dp - (p * dp).sum(-1, keepdim=True)))[:, c0:c1]


def ds_unscaled_scores(q_i, k, v, do_i, lse_i, delta_i, c0, c1):
    p = torch.exp(q_i @ k[c0:c1].T - lse_i[:, None])
    return p * (do_i @ v[c0:c1].T - delta_i[:, None])


WRONG = [
    ("03.q1", update_no_rescale, "case 2/7"),
    ("03.q1", update_old_max, "NaN/Inf"),
    ("03.q1", update_builtin, "forbidden"),
    ("03.q2", tile_missing_rescale, "case 2/6"),
    ("03.q2", tile_new_max_for_old_sum, "max abs error"),
    ("03.q3", forward_missing_rescale, "max abs error"),
    ("03.q3", forward_new_max_for_old_sum, "max abs error"),
    ("03.q3", forward_causal_tile_off_by_one, "causal=True"),
    ("03.q3", forward_causal_first_row_only, "causal=True"),
    ("03.q3", forward_full_softmax, "forbidden"),
    ("03.q3", forward_no_running_max, "NaN/Inf"),
    ("03.q3", forward_full_by_hand, "tiling (block_q x block_k scores at a time"),
    ("03.q3", forward_row_blocks_only, "tiling (block_q x block_k scores at a time"),
    ("03.q3", forward_in_thread, "starting a thread"),
    ("03.q1", update_grader_reference, "forbidden the grader's own answers"),
    ("03.q4", merge_average, "max abs error"),
    ("03.q4", merge_unstable, "NaN/Inf"),
    ("03.q5", ds_without_delta, "max abs error"),
    ("03.q5", ds_tile_softmax, "max abs error"),
    ("03.q5", ds_unscaled_scores, "max abs error"),
    ("03.q5", ds_recompute_row, "the tile's backward"),
]
