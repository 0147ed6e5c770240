r"""Decoding: one query against many keys, split over the keys and merged by log-sum-exp.

:func:`merge_partials` combines attention over disjoint key sets; :func:`flash_decode` splits
the keys into a fixed number of chunks (FlashDecoding); :func:`decode_schedule_utilisation`
models how a decoding step's key blocks are spread over a GPU's SMs under three policies; and
:func:`lean_attention_decode` runs the stream-K schedule of :cite:`sanovar2024lean` for real.
"""
from __future__ import annotations

import heapq
import math

import torch

from minilib._checks import check_attention_inputs, check_positive_int, compute_dtype, default_scale, require_tensor
from minilib.flash._units import even_split
from minilib.flash.kernel import _attend, _bottom_right

__all__ = ["merge_partials", "flash_decode", "decode_schedule_utilisation", "lean_attention_decode"]


def merge_partials(outs, lses):
    r"""Combine attention results over disjoint key sets by their log-sum-exps.

    $$ \mathrm{lse} = \log \sum_i e^{\mathrm{lse}_i},\qquad
       \mathrm{out} = \sum_i e^{\mathrm{lse}_i - \mathrm{lse}}\, \mathrm{out}_i $$

    ``outs``: sequence of ``(…, T, Dv)``; ``lses``: sequence of ``(…, T)``.  Returns
    ``(out, lse)``; rows where every part is empty (``lse = -inf``) give zeros and ``-inf``.
    See :cite:`dao2022flashattention,sanovar2024lean`.
    """
    if len(outs) == 0 or len(outs) != len(lses):
        raise ValueError(f"outs and lses must be non-empty and equally long, got {len(outs)} and {len(lses)}")
    for i, (o, s) in enumerate(zip(outs, lses)):
        require_tensor(f"outs[{i}]", o, floating=True)
        require_tensor(f"lses[{i}]", s, floating=True)
        if o.shape != outs[0].shape or s.shape != o.shape[:-1]:
            raise ValueError(f"outs[{i}] {tuple(o.shape)} and lses[{i}] {tuple(s.shape)} must match "
                             f"outs[0] {tuple(outs[0].shape)} and have shape out.shape[:-1]")
    dtype = compute_dtype(outs[0], lses[0])
    L = torch.stack([s.to(dtype) for s in lses])
    m = L.amax(dim=0)
    m = m.masked_fill(m == -math.inf, 0.0)
    w = torch.exp(L - m)
    total = w.sum(dim=0)
    out = sum(wi[..., None] * o.to(dtype) for wi, o in zip(w, outs)) / total.masked_fill(total == 0, 1.0)[..., None]
    return out.to(outs[0].dtype), m + torch.log(total)


def flash_decode(q, k, v, *, n_splits=4, scale=None, causal=False):
    r"""Split-K decoding: attention over ``n_splits`` key chunks computed independently, then merged.

    $$ \mathrm{out} = \sum_c e^{\mathrm{lse}_c - \mathrm{lse}}\, \mathrm{out}_c,\qquad
       \mathrm{lse} = \log \sum_c e^{\mathrm{lse}_c} $$

    where chunk ``c`` holds keys ``[c\lceil S/n\rceil, (c+1)\lceil S/n\rceil)``.  On a GPU each
    (batch, head, chunk) is its own work unit, which keeps the device busy when ``B*H`` is small.
    ``q (B, H, T, D)`` (small ``T``), ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` ->
    ``(B, H, T, Dv)``; ``causal`` (bottom-right) matters only for ``T > 1``.
    See :cite:`sanovar2024lean,dao2022flashattention`.
    """
    check_attention_inputs(q, k, v, causal=causal)
    check_positive_int("n_splits", n_splits)
    T, S = q.shape[2], k.shape[2]
    scale = default_scale(q.shape[-1], scale)
    q_pos, k_pos = _bottom_right(T, S)
    chunk = max(1, -(-S // n_splits))
    outs, lses = [], []
    for c0 in range(0, S, chunk):
        c1 = min(S, c0 + chunk)
        kc, vc = k[:, :, c0:c1], v[:, :, c0:c1]
        if causal:
            o, s = _attend(q, kc, vc, scale, q_pos, k_pos[c0:c1], max(T, 1), c1 - c0)
        else:
            o, s = _attend(q, kc, vc, scale, None, None, max(T, 1), c1 - c0)
        outs.append(o)
        lses.append(s)
    if not outs:
        return _attend(q, k, v, scale, None, None, 1, 1)[0]
    return merge_partials(outs, lses)[0]



_POLICIES = ("per_head", "split_k", "stream_k")


def decode_schedule_utilisation(batch, heads, context_len, *, n_sms=108, block_k=256, policy="per_head",
                                head_dim=128, bytes_per_element=2, hbm_bandwidth=1.555e12):
    r"""Model the SM utilisation and time of one decoding step under three work distributions.

    Every (batch, head) pair must stream $n_b = \lceil L / B_k \rceil$ key/value blocks; one block
    costs one time unit on one SM.  With $W = B H n_b$ blocks on $P$ SMs:

    * ``"per_head"``: one work unit per (batch, head), $\text{makespan} = \lceil BH/P \rceil\, n_b$;
    * ``"split_k"`` (FlashDecoding): each head is cut into $c = \min(n_b, \max(1, \lfloor P/BH \rfloor))$
      near-equal chunks, the $BHc$ units handed in order to the SM that frees up first;
    * ``"stream_k"`` (Lean Attention): the $W$ blocks, ordered head by head, are cut into $P$
      contiguous ranges of $\lfloor W/P \rfloor$ or $\lceil W/P \rceil$ blocks, so a range may
      end inside one head and start another: $\text{makespan} = \lceil W/P \rceil$.

    $$ \text{utilisation} = \frac{W}{P \cdot \text{makespan}},\qquad
       t = \text{makespan}\cdot \frac{2 B_k d\, b\, P}{\text{bandwidth}} $$

    (decoding is memory bound: a block moves $2 B_k d$ elements of $b$ bytes and each SM is
    credited $1/P$ of the HBM bandwidth).  The merge of partial results (:func:`merge_partials`)
    is not charged; ``"partials"`` counts the (unit, head) pieces that would need it.  The
    defaults describe an A100 (108 SMs, 1.555 TB/s).  Returns a dict with ``units``,
    ``blocks`` ($W$), ``makespan`` (in block times), ``utilisation``, ``time_s`` and ``partials``.
    See :cite:`sanovar2024lean`.
    """
    for name, value in (("batch", batch), ("heads", heads), ("context_len", context_len), ("n_sms", n_sms),
                        ("block_k", block_k), ("head_dim", head_dim), ("bytes_per_element", bytes_per_element)):
        check_positive_int(name, value)
    if policy not in _POLICIES:
        raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
    if not hbm_bandwidth > 0:
        raise ValueError(f"hbm_bandwidth must be positive, got {hbm_bandwidth!r}")
    pairs, n_blocks = batch * heads, -(-context_len // block_k)
    work = pairs * n_blocks
    if policy == "per_head":
        units, partials = pairs, pairs
        makespan = -(-pairs // n_sms) * n_blocks
    elif policy == "split_k":
        chunks = min(n_blocks, max(1, n_sms // pairs))
        base, extra = divmod(n_blocks, chunks)
        sizes = [base + (c < extra) for c in range(chunks)] * pairs
        units = partials = len(sizes)
        free = [0] * min(n_sms, units)  # finish time of each busy SM; idle SMs are never used
        for size in sizes:
            heapq.heappush(free, heapq.heappop(free) + size)
        makespan = max(free)
    else:
        base, extra = divmod(work, n_sms)
        units = min(n_sms, work)
        makespan = base + (extra > 0)
        partials, start = 0, 0
        for sm in range(units):
            stop = start + base + (sm < extra)
            partials += (stop - 1) // n_blocks - start // n_blocks + 1  # heads this range touches
            start = stop
    block_time = 2 * block_k * head_dim * bytes_per_element * n_sms / hbm_bandwidth
    return {"units": units, "blocks": work, "makespan": makespan, "utilisation": work / (n_sms * makespan),
            "time_s": makespan * block_time, "partials": partials}



def lean_attention_decode(q, k, v, *, n_workers, block_k=64, scale=None, return_units=False):
    r"""Stream-K decoding (Lean Attention): equal contiguous ranges of key blocks per worker.

    The work of one decoding step is the ordered list of all (batch, head, key-block) triples,
    $W = B \cdot H \cdot \lceil S / b_k \rceil$ blocks.  Worker $p$ of $P$ takes blocks
    $[\lfloor pW/P \rfloor, \lfloor (p+1)W/P \rfloor)$ (up to rounding, lengths differ by at
    most one), which may end inside one head and run into the next.  Each maximal piece of one
    head gives a partial $(O_i, \mathrm{lse}_i)$; the pieces of a head are merged by
    log-sum-exp (the reduction is associative, so any cut is exact):

    $$ O = \sum_i e^{\mathrm{lse}_i - \mathrm{lse}}\, O_i,\qquad \mathrm{lse} = \log \sum_i e^{\mathrm{lse}_i} $$

    ``q (B, H, T, D)`` (decoding: small ``T``, every query sees every key), ``k (B, Hkv, S, D)``,
    ``v (B, Hkv, S, Dv)`` -> ``(B, H, T, Dv)``.  With ``return_units`` also returns, per
    worker, its list of pieces ``(b, h, first_block, stop_block)``.  See :cite:`sanovar2024lean`.
    """
    check_attention_inputs(q, k, v)
    check_positive_int("n_workers", n_workers)
    check_positive_int("block_k", block_k)
    B, H, T, _ = q.shape
    S, group = k.shape[2], H // k.shape[1]
    if S == 0:
        raise ValueError(f"k must have at least one key, got k {tuple(k.shape)}")
    scale = default_scale(q.shape[-1], scale)
    n_blocks = -(-S // block_k)
    units = []
    for start, stop in even_split(B * H * n_blocks, n_workers):
        pieces, g = [], start
        while g < stop:
            pair, first = divmod(g, n_blocks)
            last = min(stop, (pair + 1) * n_blocks) - pair * n_blocks  # the piece ends at the head boundary
            pieces.append((pair // H, pair % H, first, last))
            g = pair * n_blocks + last
        units.append(pieces)
    partials = {}
    for pieces in units:
        for b, h, first, last in pieces:
            c0, c1 = first * block_k, min(S, last * block_k)
            o, s = _attend(q[b:b + 1, h:h + 1], k[b:b + 1, h // group:h // group + 1, c0:c1],
                           v[b:b + 1, h // group:h // group + 1, c0:c1], scale, None, None, max(T, 1), c1 - c0)
            partials.setdefault((b, h), ([], []))
            partials[(b, h)][0].append(o)
            partials[(b, h)][1].append(s)
    out = torch.empty(B, H, T, v.shape[3], dtype=q.dtype, device=q.device)
    for (b, h), (outs, lses) in partials.items():
        out[b:b + 1, h:h + 1] = merge_partials(outs, lses)[0]
    return (out, units) if return_units else out

