r"""Expert parallelism on a real process group: a mixture of experts whose experts live on different ranks.

Rank $w$ of $W$ holds its own batch of tokens, a copy of the router, and only the experts $e$ with
$e \bmod W = w$. A forward of :class:`~minilib.moe.MoE` then has four steps:

1. *route* locally: every token picks its experts and weights (:meth:`minilib.moe.MoE.route`);
2. *dispatch*: one ``all_to_all`` sends every token row to the rank of each expert it picked (the row
   counts go first, in a small ``all_to_all`` of their own, so every rank knows what it receives);
3. each rank runs its experts on the rows it received;
4. *combine*: the reverse ``all_to_all`` returns every expert output to the token's rank, which adds it
   with the router weight, $y_n = \sum_{e \in \text{top-}k(n)} g_{n,e}\, \operatorname{FFN}_e(x_n)$.

A rank sends $d$ values per (token, chosen expert on another rank) each way: the traffic follows the
routing, which is why load balance matters twice, for compute and for the network :cite:`fedus2022switch`.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn

from minilib._checks import check_last_dim, check_positive_int
from minilib.moe import MoE
from minilib.parallel.comm import RankLog
from minilib.parallel.ring import _check_rank

__all__ = ["local_experts", "expert_parallel_moe"]


def local_experts(moe: MoE, rank: int, world_size: int) -> dict[int, nn.Module]:
    """The experts rank ``rank`` of ``world_size`` holds, ``{e: expert}`` for ``e % world_size == rank``."""
    if not isinstance(moe, MoE):
        raise TypeError(f"moe must be a minilib.moe.MoE, got {type(moe).__name__}")
    _check_rank(rank, check_positive_int("world_size", world_size))
    return {e: expert for e, expert in enumerate(moe.experts) if e % world_size == rank}


def _all_to_all(rows: torch.Tensor, send_counts: list[int], recv_counts: list[int], log: RankLog, step: int):
    start = time.perf_counter()
    out = rows.new_empty((sum(recv_counts), *rows.shape[1:]))
    dist.all_to_all_single(out, rows.contiguous(), output_split_sizes=recv_counts, input_split_sizes=send_counts)
    own = sum(send_counts[:dist.get_rank()])  # this rank's rows to itself never touch the network
    log.record("all_to_all", step, start, tensors=[rows[:own], rows[own + send_counts[dist.get_rank()]:]])
    return out


def expert_parallel_moe(moe: MoE, x: torch.Tensor, experts: dict[int, nn.Module], *,
                        log: RankLog | None = None) -> torch.Tensor:
    r"""This rank's MoE output for its tokens ``x (..., d_model)``, with the experts spread over the group.

    ``moe`` supplies the router (the same weights on every rank) and its routing rule (top-k, optionally
    with capacity, computed over this rank's tokens); ``experts`` are this rank's, from
    :func:`local_experts`. Equals ``moe(x)`` on one process. ``log`` records the two ``all_to_all`` exchanges
    with the bytes each sent to other ranks. Forward only. :cite:`fedus2022switch`
    """
    if not isinstance(moe, MoE):
        raise TypeError(f"moe must be a minilib.moe.MoE, got {type(moe).__name__}")
    check_last_dim("x", x, moe.d_model)
    if moe.router_kind != "topk":
        raise ValueError(f"expert_parallel_moe routes each rank's tokens by itself: moe.router_kind must be 'topk', "
                         f"got {moe.router_kind!r} (expert choice ranks tokens across the whole batch)")
    if not dist.is_initialized():
        raise RuntimeError("expert_parallel_moe needs an initialised process group (run it under launch)")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    owned = [[e for e in range(moe.n_experts) if e % world_size == r] for r in range(world_size)]
    if sorted(experts) != owned[rank]:
        raise ValueError(f"experts must be this rank's {owned[rank]} (from local_experts), got {sorted(experts)}")
    log = RankLog() if log is None else log
    flat = x.reshape(-1, moe.d_model)
    with log.timed("compute", 0):
        routing = moe.route(flat)
    # rows leave grouped by destination rank, and within a rank by expert
    order = [e for experts_of_rank in owned for e in experts_of_rank]
    tokens = torch.cat([routing.tokens[e] for e in order])
    per_expert = torch.tensor([len(routing.tokens[e]) for e in order])
    per_rank = [len(o) for o in owned]
    # first every rank learns how many rows of each of its experts every other rank sends
    start = time.perf_counter()
    counts_in = per_expert.new_empty(per_rank[rank] * world_size)
    dist.all_to_all_single(counts_in, per_expert, output_split_sizes=[per_rank[rank]] * world_size,
                           input_split_sizes=per_rank)
    log.record("all_to_all", 1, start, tensors=[per_expert])
    send_counts = [int(c.sum()) for c in per_expert.split(per_rank)]
    recv_counts = [int(c.sum()) for c in counts_in.split(per_rank[rank])]
    received = _all_to_all(flat[tokens], send_counts, recv_counts, log, 2)  # dispatch
    with log.timed("compute", 3):
        outputs, offset = [], 0
        for counts in counts_in.view(world_size, per_rank[rank]):  # per source rank, per expert of mine
            for e, n in zip(owned[rank], counts.tolist()):
                outputs.append(experts[e](received[offset:offset + n]))
                offset += n
        outputs = torch.cat(outputs) if outputs else received
    returned = _all_to_all(outputs, recv_counts, send_counts, log, 4)  # combine
    with log.timed("compute", 5):
        out = torch.zeros_like(flat)
        out.index_add_(0, tokens, torch.cat([routing.weights[e] for e in order])[:, None] * returned)
    return out.reshape(x.shape)
