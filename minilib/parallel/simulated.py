r"""Ring attention simulated in one process: each worker's share of the work, exactly.

:func:`ring_attention` is sequence parallelism :cite:`li2021sequence`: the sequence is cut into
chunks over workers, and the key/value chunks travel round a ring while each worker merges its
partial results by log-sum-exp (:func:`minilib.flash.merge_partials`).
"""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_positive_int, default_scale
from minilib.flash._units import even_split
from minilib.flash.decode import merge_partials
from minilib.flash.kernel import _attend, _bottom_right

__all__ = ["ring_attention"]


def ring_attention(q, k, v, n_workers, *, causal=False, scale=None, return_log=False):
    r"""Ring self-attention (sequence parallelism) simulated in one process.

    The sequence is cut into ``W = n_workers`` contiguous chunks; worker ``w`` keeps its query
    chunk $Q_w$ for the whole computation.  At step ``r`` it holds the key/value chunk
    $K_{(w+r) \bmod W}, V_{(w+r) \bmod W}$ (passed around the ring), computes the partial
    $(O_{w,c}, \mathrm{lse}_{w,c})$ over that chunk, and after ``W`` steps merges them:

    $$ O_w = \sum_{c} e^{\mathrm{lse}_{w,c} - \mathrm{lse}_w}\, O_{w,c},\qquad
       \mathrm{lse}_w = \log \sum_c e^{\mathrm{lse}_{w,c}} $$

    ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` -> ``(B, H, T, Dv)``; chunk
    lengths differ by at most one, so ``T`` need not divide by ``W``.  ``causal`` aligns
    bottom-right.  With ``return_log`` also returns one dict per (step, worker) with the
    shapes that worker holds (``q_rows``, ``kv_rows``, ``scores``).  See :cite:`li2021sequence`.
    """
    check_attention_inputs(q, k, v, causal=causal)
    check_positive_int("n_workers", n_workers)
    T, S = q.shape[2], k.shape[2]
    if n_workers > min(T, S):
        raise ValueError(f"n_workers ({n_workers}) must not exceed the query length {T} or key length {S}")
    scale = default_scale(q.shape[-1], scale)
    q_pos, k_pos = _bottom_right(T, S)
    q_chunks, kv_chunks = even_split(T, n_workers), even_split(S, n_workers)
    partials = [([], []) for _ in range(n_workers)]
    log = []
    for step in range(n_workers):
        for w, (r0, r1) in enumerate(q_chunks):
            c0, c1 = kv_chunks[(w + step) % n_workers]  # the chunk that has reached worker w
            qw, kc, vc = q[:, :, r0:r1], k[:, :, c0:c1], v[:, :, c0:c1]
            if causal:
                o, s = _attend(qw, kc, vc, scale, q_pos[r0:r1], k_pos[c0:c1], r1 - r0, c1 - c0)
            else:
                o, s = _attend(qw, kc, vc, scale, None, None, r1 - r0, c1 - c0)
            partials[w][0].append(o)
            partials[w][1].append(s)
            log.append({"step": step, "worker": w, "q_rows": r1 - r0, "kv_rows": c1 - c0,
                        "scores": (r1 - r0, c1 - c0)})
    out = torch.cat([merge_partials(outs, lses)[0] for outs, lses in partials], dim=2)
    return (out, log) if return_log else out

