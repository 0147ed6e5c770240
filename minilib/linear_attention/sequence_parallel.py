r"""Sequence parallelism for linear attention, simulated in one process: LASP-2 :cite:`sun2025lasp2`.

Split the sequence over $W$ workers. Worker $w$ holds positions $P_w$ and computes its *memory state*
$M_w = \sum_{s \in P_w} \big(\prod_{r > s,\ r \in P_w} g_r\big) k_s v_s^\top$ and its decay $a_w = \prod_{r\in P_w} g_r$.
One all-gather of the $W$ states (each $D \times D_v$, whatever the length) gives every worker what it needs:
the state entering its part, $S_{w-1} = \sum_{u < w} \big(\prod_{u < r < w} a_r\big) M_u$, after which its outputs
are local chunked linear attention from that state. Ring attention instead passes every worker's keys and
values round the ring: traffic that grows with $L$.
"""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int
from minilib.linear_attention.forms import _check_qkv, _log_gates, linear_attention_chunked

__all__ = ["lasp2_simulated"]


def _part_state(q, k, v, decay, chunk_size: int):
    r"""One worker's summary of its part: the memory state $M_w$ ``(B, H, D, Dv)`` it builds from a zero state,
    and the decay across the part $a_w = \prod_{r \in P_w} g_r$ ``(B or 1, H, 1, 1)`` (``None`` without decay)."""
    _, M = linear_attention_chunked(q, k, v, decay=decay, chunk_size=chunk_size, return_state=True)
    log_g = _log_gates(decay, q)
    return M, None if log_g is None else log_g.sum(-1).exp()[..., None, None]


def _incoming_state(states, decays, w: int):
    r"""The state entering part ``w``: $S_{w-1} = \sum_{u < w} \big(\prod_{u < r < w} a_r\big) M_u$ (zeros for ``w = 0``)."""
    incoming = torch.zeros_like(states[0])
    for M, a in zip(states[:w], decays[:w]):
        incoming = (incoming if a is None else a * incoming) + M
    return incoming


def lasp2_simulated(q, k, v, n_workers: int, *, decay=None, chunk_size: int = 64, return_comm: bool = False):
    r"""Causal linear attention computed by ``n_workers`` simulated workers that exchange only their states.

    Equals :func:`~minilib.linear_attention.linear_attention_recurrent` (same ``decay`` kinds). With
    ``return_comm`` also returns the elements all workers receive together, per (batch, head): ``allgather``
    $= W (W-1) D D_v$ (each worker gets the other $W-1$ states) and, for comparison, ``ring_kv``
    $= (W-1)\,L\,(D + D_v)$ (each worker gets the other workers' keys and values round a ring). ``q, k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, L, Dv)``.
    :cite:`sun2025lasp2`
    """
    _check_qkv(q, k, v)
    W = check_positive_int("n_workers", n_workers)
    B, H, L, D = q.shape
    if W > L:
        raise ValueError(f"n_workers ({W}) must be at most the sequence length L={L}")
    bounds = [L * w // W for w in range(W + 1)]
    parts = [slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def local(x, part):
        return None if x is None else x if x.ndim == 1 else x[..., part]

    # 1. every worker: its memory state from a zero state, and the decay across its part
    summaries = [_part_state(q[:, :, p], k[:, :, p], v[:, :, p], local(decay, p), chunk_size) for p in parts]
    # 2. one all-gather: every worker now holds every summary; 3. each combines the prefix it needs
    states = [M for M, _ in summaries]
    decays = [a for _, a in summaries]
    outs = [linear_attention_chunked(q[:, :, p], k[:, :, p], v[:, :, p], decay=local(decay, p), chunk_size=chunk_size,
                                     state=_incoming_state(states, decays, w)) for w, p in enumerate(parts)]
    out = torch.cat(outs, dim=2)
    if not return_comm:
        return out
    Dv = v.shape[-1]
    return out, {"allgather": W * (W - 1) * D * Dv, "ring_kv": (W - 1) * L * (D + Dv)}
