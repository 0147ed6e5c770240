r"""LASP-2 on a real process group: sequence-parallel linear attention that exchanges states, not keys.

Rank $w$ holds a contiguous part $P_w$ of the sequence. It summarises its part by the memory state it
builds from zero, $M_w = \sum_{s \in P_w} \big(\prod_{r > s,\, r \in P_w} g_r\big) k_s v_s^\top$ (``D x Dv``,
whatever the part's length), and the decay across it, $a_w = \prod_{r \in P_w} g_r$. One ``all_gather`` of
the $W$ summaries gives every rank the state entering its part,
$S_{w-1} = \sum_{u<w} \big(\prod_{u<r<w} a_r\big) M_u$, and its outputs are then local chunked linear
attention started from $S_{w-1}$ :cite:`sun2025lasp2`. Each rank receives $W D D_v$ elements per
(batch, head) however long the sequence is; ring attention moves keys and values, traffic that grows with $L$.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from minilib._checks import check_positive_int
from minilib.linear_attention.forms import _check_qkv, linear_attention_chunked
from minilib.linear_attention.sequence_parallel import _incoming_state, _part_state
from minilib.parallel.comm import RankLog
from minilib.parallel.ring import sequence_positions

__all__ = ["lasp2_distributed"]


def _all_gather(x: torch.Tensor, log: RankLog, step: int) -> list[torch.Tensor]:
    start = time.perf_counter()
    pieces = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, x.contiguous())
    log.record("all_gather", step, start, tensors=pieces)
    return pieces


def lasp2_distributed(q, k, v, seq_len: int, *, decay=None, chunk_size: int = 64,
                      log: RankLog | None = None) -> torch.Tensor:
    r"""This rank's outputs of causal linear attention over a sequence cut into contiguous parts, one per rank.

    Call on every rank of an initialised group with the rank's part (``shard(x, rank, W)``, contiguous
    layout): ``q, k (B, H, T_w, D)``, ``v (B, H, T_w, Dv)``, ``decay`` ``None``, ``(H,)`` constants or this
    part's ``(B, H, T_w)`` gates, as for :func:`~minilib.linear_attention.linear_attention_chunked`. Returns
    ``(B, H, T_w, Dv)``, equal to those rows of the one-process result. Forward only. ``log`` receives the
    timeline and the bytes gathered: $W \cdot D \cdot D_v$ elements per (batch, head) (plus $W$ decays).
    :cite:`sun2025lasp2`
    """
    _check_qkv(q, k, v)
    check_positive_int("chunk_size", chunk_size)
    if not dist.is_initialized():
        raise RuntimeError("lasp2_distributed needs an initialised process group (run it under launch)")
    log = RankLog() if log is None else log
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mine = len(sequence_positions(seq_len, world_size)[rank])
    if q.shape[2] != mine:
        raise ValueError(f"q {tuple(q.shape)} must hold this rank's {mine} positions of seq_len={seq_len} cut into "
                         f"{world_size} contiguous parts (dim 2); cut it with shard()")
    with log.timed("compute", 0):
        M, a = _part_state(q, k, v, decay, chunk_size)
    states = _all_gather(M, log, 1)
    decays = None if a is None else _all_gather(a.expand(M.shape[0], -1, -1, -1), log, 1)
    with log.timed("compute", 2):
        incoming = _incoming_state(states, [None] * world_size if decays is None else decays, rank)
        return linear_attention_chunked(q, k, v, decay=decay, chunk_size=chunk_size, state=incoming)
