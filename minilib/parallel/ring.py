r"""Ring attention on a real process group: every rank holds a piece of the sequence, keys and values travel.

Rank $w$ of $W$ keeps the queries of its positions $P_w$ for the whole computation. Its keys and values
are passed round the ring: at step $r$ it sends the block it holds to rank $w+1$ and receives rank
$w-1$'s, so after $W$ steps it has seen every block $c$ and merged the partial results by their
log-sum-exps (:func:`minilib.flash.merge_partials`):

$$ O_w = \sum_c e^{\mathrm{lse}_{w,c} - \mathrm{lse}_w}\, O_{w,c}, \qquad
   \mathrm{lse}_w = \log \textstyle\sum_c e^{\mathrm{lse}_{w,c}} . $$

The next block's message is posted before the current block is computed, so communication overlaps
compute. Per layer each rank sends $(W-1)$ key blocks and $(W-1)$ value blocks: $2 (W-1) (L/W) D$
elements per (batch, key/value head). The backward recomputes each block's partial and passes the
key/value gradients along with the block; after $W$ steps they are back with their owner.

With a causal mask a contiguous layout is unbalanced: the rank holding the last positions computes $W$
blocks, the first rank one. The *zig-zag* layout gives rank $w$ chunks $w$ and $2W-1-w$ of $2W$, so
every rank computes about the same number of scores :cite:`li2021sequence`.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from minilib._checks import check_attention_inputs, check_nonnegative_int, check_positive_int, default_scale
from minilib.flash._units import even_split
from minilib.flash.decode import merge_partials
from minilib.flash.kernel import _attend
from minilib.parallel.comm import RankLog

__all__ = ["LAYOUTS", "sequence_positions", "shard", "unshard", "ring_attention_distributed"]

#: How positions are dealt to ranks: contiguous chunks, or chunks ``w`` and ``2W-1-w`` of ``2W`` (zig-zag).
LAYOUTS = ("contiguous", "zigzag")


def _layout_chunks(seq_len: int, world_size: int, layout: str) -> list[list[list[int]]]:
    """Per rank, the chunks of positions it holds: one for contiguous, chunks ``w`` and ``2W-1-w`` for zig-zag."""
    check_positive_int("seq_len", seq_len)
    check_positive_int("world_size", world_size)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    n_chunks = world_size if layout == "contiguous" else 2 * world_size
    if n_chunks > seq_len:
        raise ValueError(f"the {layout} layout cuts seq_len={seq_len} into {n_chunks} chunks for world_size="
                         f"{world_size}; it needs seq_len >= {n_chunks}")
    chunks = [list(range(a, b)) for a, b in even_split(seq_len, n_chunks)]
    if layout == "contiguous":
        return [[c] for c in chunks]
    return [[chunks[w], chunks[n_chunks - 1 - w]] for w in range(world_size)]


def sequence_positions(seq_len: int, world_size: int, *, layout: str = "contiguous") -> list[list[int]]:
    """The positions each rank holds, ``[P_0, ..., P_{W-1}]``, in increasing order; lengths differ by at most 2."""
    return [[p for chunk in chunks for p in chunk] for chunks in _layout_chunks(seq_len, world_size, layout)]


def _check_rank(rank: int, world_size: int) -> int:
    """Return ``rank`` if it is one of ``0 .. world_size - 1``; else raise naming both."""
    check_nonnegative_int("rank", rank)
    if rank >= world_size:
        raise ValueError(f"rank ({rank}) must be below world_size ({world_size})")
    return rank


def shard(x: torch.Tensor, rank: int, world_size: int, *, layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """Rank ``rank``'s piece of a full-sequence tensor: the entries of ``x`` along ``dim`` at its positions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    positions = sequence_positions(x.shape[dim], world_size, layout=layout)
    _check_rank(rank, world_size)
    return x.index_select(dim, torch.tensor(positions[rank], device=x.device))


def unshard(pieces, *, layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """Inverse of :func:`shard`: the full tensor from every rank's piece, in rank order."""
    if not isinstance(pieces, (list, tuple)) or not pieces or not all(isinstance(p, torch.Tensor) for p in pieces):
        raise TypeError("pieces must be a non-empty list of tensors, one per rank")
    seq_len = sum(p.shape[dim] for p in pieces)
    positions = sequence_positions(seq_len, len(pieces), layout=layout)
    for w, (p, pos) in enumerate(zip(pieces, positions)):
        if p.shape[dim] != len(pos):
            raise ValueError(f"pieces[{w}] has {p.shape[dim]} positions along dim {dim}; the {layout} layout of "
                             f"{seq_len} over {len(pieces)} ranks gives rank {w} {len(pos)}")
    order = torch.tensor([q for pos in positions for q in pos])
    return torch.cat(list(pieces), dim=dim).index_select(dim, torch.argsort(order))


def _runs(chunks: list[list[int]]) -> list[slice]:
    """A rank's chunks as slices of its rows (one for contiguous, two for zig-zag)."""
    bounds = [0]
    for chunk in chunks:
        bounds.append(bounds[-1] + len(chunk))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def _pairs(q_chunks, k_chunks, causal: bool):
    """(query chunk, key chunk) row slices with at least one key a query may see: a chunk of keys that all
    follow every query of a chunk is skipped, which is where the zig-zag layout saves the contiguous one's work."""
    q_pos, k_pos = sum(q_chunks, []), sum(k_chunks, [])
    for qr in _runs(q_chunks):
        for kr in _runs(k_chunks):
            if not causal or k_pos[kr][0] <= q_pos[qr][-1]:
                yield qr, kr


def _attend_runs(q, k, v, scale, q_pos, k_pos, causal, qr, kr):
    """(out, lse) of the queries of run ``qr`` over the keys of run ``kr`` (one tile)."""
    qp, kp = q_pos[qr], k_pos[kr]
    return _attend(q[:, :, qr], k[:, :, kr], v[:, :, kr], scale, qp if causal else None, kp if causal else None,
                   len(qp), len(kp))


def _pass_on(tensors, shapes, log: RankLog, step: int):
    """Send ``tensors`` to the next rank and receive the previous rank's (of ``shapes``); returns a finisher."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    start = time.perf_counter()
    outgoing = [t.contiguous() for t in tensors]
    incoming = [torch.empty(shape, dtype=t.dtype) for t, shape in zip(outgoing, shapes)]
    requests = [dist.isend(t, (rank + 1) % world_size) for t in outgoing]
    requests += [dist.irecv(t, (rank - 1) % world_size) for t in incoming]

    def finish():
        for request in requests:
            request.wait()
        log.record("send", step, start, tensors=outgoing)
        log.record("recv", step, start, tensors=incoming)
        return incoming
    return finish


def _block_shape(x: torch.Tensor, rows: int) -> tuple[int, ...]:
    return (*x.shape[:2], rows, x.shape[3])


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, chunks, causal, scale, log):
        rank, world_size = dist.get_rank(), dist.get_world_size()
        positions = [sum(c, []) for c in chunks]
        q_pos = positions[rank]
        partials = {qr.start: [] for qr in _runs(chunks[rank])}  # every query run sees at least its own keys
        (kb, vb), src = (k, v), rank
        for step in range(world_size):
            prev = (src - 1) % world_size  # the block the previous rank holds now reaches us next
            finish = None
            if step < world_size - 1:
                rows = len(positions[prev])
                finish = _pass_on((kb, vb), (_block_shape(k, rows), _block_shape(v, rows)), log, step)
            pairs = list(_pairs(chunks[rank], chunks[src], causal))
            with log.timed("compute", step, block=src, scores=sum((qr.stop - qr.start) * (kr.stop - kr.start)
                                                                  for qr, kr in pairs)):
                for qr, kr in pairs:
                    partials[qr.start].append(_attend_runs(q, kb, vb, scale, q_pos, positions[src], causal, qr, kr))
            if finish is not None:
                (kb, vb), src = finish(), prev
        merged = [merge_partials(*zip(*partials[start])) for start in sorted(partials)]
        out, lse = torch.cat([o for o, _ in merged], dim=2), torch.cat([s for _, s in merged], dim=2)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (chunks, causal, scale, log)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        chunks, causal, scale, log = ctx.args
        rank, world_size = dist.get_rank(), dist.get_world_size()
        positions = [sum(c, []) for c in chunks]
        q_pos = positions[rank]
        dq = torch.zeros_like(q)
        kb, vb, dkb, dvb, src = k, v, torch.zeros_like(k), torch.zeros_like(v), rank
        for step in range(world_size):
            with log.timed("compute", world_size + step, block=src), torch.enable_grad():
                qq, kk, vv = (t.detach().requires_grad_() for t in (q, kb, vb))
                for qr, kr in _pairs(chunks[rank], chunks[src], causal):
                    o, s = _attend_runs(qq, kk, vv, scale, q_pos, positions[src], causal, qr, kr)
                    # out = sum_c w_c o_c, w_c = exp(lse_c - lse): d out/d o_c = w_c, d out/d lse_c = w_c (o_c - out)
                    o_full, dout_run, lse_run = out[:, :, qr], dout[:, :, qr], lse[:, :, qr]
                    weight = torch.exp(s - lse_run)
                    grads = torch.autograd.grad((o, s), (qq, kk, vv), (weight[..., None] * dout_run,
                                                                       weight * ((o - o_full) * dout_run).sum(-1)))
                    dq += grads[0]
                    dkb, dvb = dkb + grads[1], dvb + grads[2]
            if world_size == 1:
                break
            # the key/value gradients travel with their block; the W-th pass brings them home
            prev = (src - 1) % world_size
            rows = len(positions[prev])
            shapes = (_block_shape(k, rows), _block_shape(v, rows))
            if step < world_size - 1:
                kb, vb, dkb, dvb = _pass_on((kb, vb, dkb, dvb), shapes * 2, log, world_size + step)()
            else:
                dkb, dvb = _pass_on((dkb, dvb), shapes, log, world_size + step)()
            src = prev
        return dq, dkb, dvb, None, None, None, None


def ring_attention_distributed(q, k, v, seq_len: int, *, layout: str = "contiguous", causal: bool = False,
                               scale: float | None = None, log: RankLog | None = None) -> torch.Tensor:
    r"""This rank's rows of self-attention over a sequence spread across the process group (ring attention).

    Call it on every rank of an initialised group (e.g. inside :func:`minilib.parallel.launch`) with the
    rank's own piece: ``q (B, H, T_w, D)``, ``k (B, Hkv, T_w, D)``, ``v (B, Hkv, T_w, Dv)`` at the positions
    ``sequence_positions(seq_len, W, layout=layout)[rank]`` (cut them with :func:`shard`); returns this
    rank's output ``(B, H, T_w, Dv)``, equal to those rows of full attention. Differentiable: the backward
    passes key/value gradients round the ring. ``log`` (a :class:`~minilib.parallel.RankLog`) receives the
    timeline and the bytes of every message. :cite:`li2021sequence`
    """
    check_attention_inputs(q, k, v, causal=causal)
    if not dist.is_initialized():
        raise RuntimeError("ring_attention_distributed needs an initialised process group (run it under launch)")
    chunks = _layout_chunks(seq_len, dist.get_world_size(), layout)
    mine = sum(len(c) for c in chunks[dist.get_rank()])
    if q.shape[2] != mine or k.shape[2] != mine:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must hold this rank's {mine} positions of the "
                         f"{layout} layout of seq_len={seq_len} (dim 2); cut them with shard()")
    return _RingAttention.apply(q, k, v, chunks, causal, default_scale(q.shape[-1], scale),
                                RankLog() if log is None else log)
