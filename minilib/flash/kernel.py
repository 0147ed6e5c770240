r"""The PyTorch FlashAttention kernel: tiled online-softmax forward, backward recomputed from ``lse``.

Online softmax.  Scan the keys in blocks; for one query keep a running maximum ``m``, a
running normaliser ``l`` and an unnormalised output ``acc``.  A new block of scores ``s``
updates them as

$$ m' = \max(m, \max_j s_j),\quad l' = e^{m - m'} l + \sum_j e^{s_j - m'},\quad
   \mathrm{acc}' = e^{m - m'} \mathrm{acc} + \sum_j e^{s_j - m'} v_j , $$

and at the end ``out = acc / l`` and ``lse = m + log l``.  The tile loops run on a "row layout"
``(B*Hkv, T*G, D)`` that stacks the ``G`` query heads sharing one key/value head (GQA), and the
(batch x kv-head) units are shared among worker threads (:mod:`minilib.flash._units`).
See :cite:`dao2022flashattention,dao2023flashattention2`.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from functools import partial

import torch

from minilib._checks import check_attention_inputs, check_positive_int, compute_dtype, default_scale, promoted_dtype
from minilib.flash._units import map_units

__all__ = ["flash_attention", "flash_attention_lse", "default_tiles"]


def _to_rows(x: torch.Tensor, n_kv: int) -> torch.Tensor:
    """(B, H, T, D) -> (B*Hkv, T*G, D), row t*G + g holding query head kv*G + g at time t."""
    B, H, T, D = x.shape
    G = H // n_kv
    return x.reshape(B, n_kv, G, T, D).transpose(2, 3).reshape(B * n_kv, T * G, D)


def _from_rows(x: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """Inverse of :func:`_to_rows`; also accepts (B*Hkv, T*G) for the lse."""
    n_kv = x.shape[0] // B
    G = H // n_kv
    tail = x.shape[2:]
    return x.reshape(B, n_kv, T, G, *tail).transpose(2, 3).reshape(B, H, T, *tail)


def _tile_mask(s, q_pos_t, k_pos_t, r0, r1, c0, c1, G):
    """Set scores of keys later than the query to -inf in a (N, (r1-r0)*G, c1-c0) tile."""
    hidden = k_pos_t[None, c0:c1] > q_pos_t[r0:r1, None]
    s.view(s.shape[0], r1 - r0, G, c1 - c0).masked_fill_(hidden[:, None, :], -math.inf)


def _forward(q, k, v, scale, q_pos, k_pos, G, block_q, block_k, *, skip_masked=True, fused=True):
    r"""Tiled online-softmax forward on the row layout.

    ``q (N, T*G, D)``, ``k (N, S, D)``, ``v (N, S, Dv)``; ``q_pos (T,)``, ``k_pos (S,)`` are
    non-decreasing position lists (``None``: no causal mask), key ``j`` is visible to query ``t``
    iff ``k_pos[j] <= q_pos[t]``.  Returns ``out (N, T*G, Dv)`` and ``lse (N, T*G)``.
    ``fused=False`` and ``skip_masked=False`` give the plainer rungs of the optimisation
    ladder (normalise every step / visit every tile); the results are the same.
    """
    N, TG, _ = q.shape
    T, S, Dv = TG // G, k.shape[1], v.shape[2]
    causal = q_pos is not None
    if causal:
        q_pos_t = torch.tensor(q_pos, device=q.device)
        k_pos_t = torch.tensor(k_pos, device=q.device)
    out = q.new_zeros(N, TG, Dv)
    lse = q.new_full((N, TG), -math.inf)
    for r0 in range(0, T, block_q):
        r1 = min(T, r0 + block_q)
        rows = slice(r0 * G, r1 * G)
        # keys after the last visible one of this row block are masked for all its rows
        n_keys = bisect_right(k_pos, q_pos[r1 - 1]) if causal and skip_masked else S
        if n_keys == 0:
            continue
        qt = q[:, rows] * scale if fused else q[:, rows]
        m = q.new_full((N, qt.shape[1]), -math.inf)
        l = q.new_zeros(N, qt.shape[1])
        acc = q.new_zeros(N, qt.shape[1], Dv)
        for c0 in range(0, n_keys, block_k):
            c1 = min(n_keys, c0 + block_k)
            s = torch.bmm(qt, k[:, c0:c1].transpose(1, 2))
            if not fused:
                s = s * scale
            if causal and k_pos[c1 - 1] > q_pos[r0]:
                _tile_mask(s, q_pos_t, k_pos_t, r0, r1, c0, c1, G)
            m_new = torch.maximum(m, s.amax(dim=-1))
            # rows with every key masked so far keep m = -inf; shift them by 0 to avoid inf - inf
            m_use = m_new.masked_fill(m_new == -math.inf, 0.0) if causal else m_new
            if fused:
                p = s.sub_(m_use[..., None]).exp_()
                alpha = (m - m_use).exp_()
                l.mul_(alpha).add_(p.sum(dim=-1))
                acc.mul_(alpha[..., None]).baddbmm_(p, v[:, c0:c1])
            else:
                p = torch.exp(s - m_use[..., None])
                alpha = torch.exp(m - m_use)
                l_new = alpha * l + p.sum(dim=-1)
                acc = (acc * (alpha * l)[..., None] + p @ v[:, c0:c1]) / l_new.masked_fill(l_new == 0, 1.0)[..., None]
                l = l_new
            m = m_new
        out[:, rows] = acc / l.masked_fill(l == 0, 1.0)[..., None] if fused else acc
        lse[:, rows] = m + torch.log(l)
    return out, lse


def _backward(q, k, v, out, lse, dout, dlse, scale, q_pos, k_pos, G, block_q, block_k):
    r"""FlashAttention-2 backward on the row layout, recomputing $P = e^{sQK^\top - \mathrm{lse}}$ per tile.

    $$ dV = P^\top dO,\quad dP = dO\,V^\top,\quad dS = P \circ (dP - D),\quad
       D = \operatorname{rowsum}(dO \circ O) - d\,\mathrm{lse},\quad dQ = s\,dS\,K,\quad dK = s\,dS^\top Q . $$
    """
    N, TG, _ = q.shape
    T, S = TG // G, k.shape[1]
    causal = q_pos is not None
    if causal:
        q_pos_t = torch.tensor(q_pos, device=q.device)
        k_pos_t = torch.tensor(k_pos, device=q.device)
    delta = (dout * out).sum(dim=-1)
    if dlse is not None:
        delta = delta - dlse
    # a fully masked row has lse = -inf; +inf there makes every recomputed probability 0
    lse = lse.masked_fill(lse == -math.inf, math.inf)
    dq = torch.zeros_like(q)
    dk = torch.zeros_like(k)
    dv = torch.zeros_like(v)
    for c0 in range(0, S, block_k):
        c1 = min(S, c0 + block_k)
        kt, vt = k[:, c0:c1], v[:, c0:c1]
        dk_t, dv_t = dk[:, c0:c1], dv[:, c0:c1]
        # query rows before the first one that sees key c0 contribute nothing to this block
        first = bisect_left(q_pos, k_pos[c0]) if causal else 0
        for r0 in range(first, T, block_q):
            r1 = min(T, r0 + block_q)
            rows = slice(r0 * G, r1 * G)
            qt = q[:, rows] * scale
            s = torch.bmm(qt, kt.transpose(1, 2))
            if causal and k_pos[c1 - 1] > q_pos[r0]:
                _tile_mask(s, q_pos_t, k_pos_t, r0, r1, c0, c1, G)
            p = s.sub_(lse[:, rows, None]).exp_()
            do = dout[:, rows]
            dv_t.baddbmm_(p.transpose(1, 2), do)
            ds = torch.bmm(do, vt.transpose(1, 2)).sub_(delta[:, rows, None]).mul_(p)
            dq[:, rows].baddbmm_(ds, kt, alpha=scale)
            dk_t.baddbmm_(ds.transpose(1, 2), qt)
    return dq, dk, dv



class _FlashAttention(torch.autograd.Function):
    """Custom autograd function: forward keeps only (q, k, v, out, lse); backward recomputes tiles."""

    @staticmethod
    def forward(ctx, q, k, v, scale, q_pos, k_pos, block_q, block_k):
        B, H, T, _ = q.shape
        n_kv = k.shape[1]
        dtype = compute_dtype(q, k, v)
        qr = _to_rows(q.to(dtype), n_kv)
        kr = k.to(dtype).reshape(B * n_kv, *k.shape[2:])
        vr = v.to(dtype).reshape(B * n_kv, *v.shape[2:])
        fwd = partial(_forward, scale=scale, q_pos=q_pos, k_pos=k_pos, G=H // n_kv, block_q=block_q, block_k=block_k)
        out, lse = map_units(fwd, (qr, kr, vr), B * n_kv)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (scale, q_pos, k_pos, block_q, block_k)
        ctx.set_materialize_grads(False)
        return _from_rows(out, B, H, T).to(promoted_dtype(q, k, v)), _from_rows(lse, B, H, T)

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        scale, q_pos, k_pos, block_q, block_k = ctx.args
        B, H, T, _ = q.shape
        n_kv = k.shape[1]
        dtype = out.dtype
        dor = torch.zeros_like(out) if dout is None else _to_rows(dout.to(dtype), n_kv)
        dlr = None if dlse is None else _to_rows(dlse.to(dtype)[..., None], n_kv)[..., 0]
        qr = _to_rows(q.to(dtype), n_kv)
        kr = k.to(dtype).reshape(B * n_kv, *k.shape[2:])
        vr = v.to(dtype).reshape(B * n_kv, *v.shape[2:])
        bwd = partial(_backward, scale=scale, q_pos=q_pos, k_pos=k_pos, G=H // n_kv, block_q=block_q, block_k=block_k)
        dq, dk, dv = map_units(bwd, (qr, kr, vr, out, lse, dor, dlr), B * n_kv)
        return (_from_rows(dq, B, H, T).to(q.dtype), dk.reshape(k.shape).to(k.dtype),
                dv.reshape(v.shape).to(v.dtype), None, None, None, None, None)


def _attend(q, k, v, scale, q_pos, k_pos, block_q, block_k):
    """(out, lse) through the autograd function; positions are lists or None (no mask)."""
    return _FlashAttention.apply(q, k, v, scale, q_pos, k_pos, block_q, block_k)


def _bottom_right(T: int, S: int):
    """Query and key positions when the ``T`` queries are the last ``T`` of ``S`` (causal decoding alignment)."""
    return list(range(S - T, S)), list(range(S))


# Measured on a 2-core CPU by ``benchmarks/flash.py`` (experiment "tiles"): see :func:`default_tiles`.
MIN_BLOCK_Q, MAX_BLOCK_Q, FULL_BLOCK_Q, BLOCK_K = 64, 128, 256, 512


def default_tiles(T: int, *, causal: bool) -> tuple[int, int]:
    r"""The tiles ``(block_q, block_k)`` a kernel uses for ``T`` queries when none are given: the fast path.

    Each tile costs about ten Python-level tensor ops besides its $2 B_q B_k D$ multiply-adds,
    so tiles must be large to hide that overhead: ``block_k = 512`` and, without a mask,
    ``block_q = 256``.  With a causal mask the query block on the diagonal computes scores that
    are masked away, about $B_q / T$ of the work, so causal calls keep that share near 1/8:

    $$ B_q = \min\big(128, \max(64, \lfloor T / 8 \rfloor)\big) . $$

    Tiles longer than the sequence are clipped to it.  Timed against torch SDPA over ``T = S`` =
    256..4096, ``D`` = 32/64/128, causal and not (``benchmarks/flash.py``, experiment ``tiles``),
    these tiles were within 1.35x of the best of ten swept shapes (64x64 to 512x512) on one
    thread for every row, and on two threads at ``T = 4096``; the best shape otherwise moved from
    row to row by about the timing noise, so no finer rule of ``D`` or threads was supported.
    """
    check_positive_int("T", T)
    if not causal:
        return FULL_BLOCK_Q, BLOCK_K
    return min(MAX_BLOCK_Q, max(MIN_BLOCK_Q, T // 8)), BLOCK_K


def _tiles(block_q, block_k, T, causal):
    """The checked tiles of a call with ``T`` queries, ``None`` meaning the default of :func:`default_tiles`."""
    tuned_q, tuned_k = default_tiles(max(T, 1), causal=causal)
    block_q = tuned_q if block_q is None else check_positive_int("block_q", block_q)
    block_k = tuned_k if block_k is None else check_positive_int("block_k", block_k)
    return block_q, block_k


def flash_attention_lse(q, k, v, *, causal=False, scale=None, block_q=None, block_k=None):
    r"""Exact attention and its row log-sum-exp, computed tile by tile.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V,\qquad
       \mathrm{lse}_t = \log \sum_j e^{s\, q_t\cdot k_j + \mathrm{mask}_{tj}} $$

    ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` with ``H % Hkv == 0``;
    returns ``out (B, H, T, Dv)`` in the inputs' dtype and ``lse (B, H, T)`` in the compute dtype
    (float32 for float16/bfloat16 inputs).  ``causal`` aligns bottom-right (queries are the
    last ``T`` of ``S`` positions); a row with no visible key gets zeros and ``lse = -inf``.
    ``block_q``, ``block_k`` default to the tuned :func:`default_tiles`.
    Both outputs are differentiable.  See :cite:`dao2022flashattention,dao2023flashattention2`.
    """
    check_attention_inputs(q, k, v, causal=causal)
    T, S = q.shape[2], k.shape[2]
    block_q, block_k = _tiles(block_q, block_k, T, causal)
    scale = default_scale(q.shape[-1], scale)
    q_pos, k_pos = _bottom_right(T, S) if causal else (None, None)
    return _attend(q, k, v, scale, q_pos, k_pos, block_q, block_k)


def flash_attention(q, k, v, *, causal=False, scale=None, block_q=None, block_k=None):
    r"""FlashAttention: exact softmax attention that never materialises the ``(T, S)`` scores.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V $$

    computed in ``block_q x block_k`` tiles with online softmax; a custom
    ``torch.autograd.Function`` saves only ``out`` and the row log-sum-exp and recomputes each
    tile in the backward (FlashAttention-2 order).  Fully masked causal tiles are skipped; the
    (batch x kv-head) units are shared among ``torch.get_num_threads()`` single-threaded workers.
    The tiles default to :func:`default_tiles` (``block_k = 512``; ``block_q = 256``, or 64..128
    growing with ``T`` when causal), the fastest measured on a CPU; chapter 03 passes small tiles
    to show the algorithm.  ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` -> ``(B, H, T, Dv)``.
    float16/bfloat16 inputs are computed in float32.  Gradient accuracy: the backward uses
    $\delta_t = dO_t \cdot o_t$ (FlashAttention-2), whose float32 rounding is multiplied by
    $\text{scale}\,|k|$; with scores of $\pm 10^4$ (near one-hot rows) expect ``dq``, ``dk`` within about
    $10^{-3}$ of the largest exact gradient entry plus $5 \cdot 10^{-4}$ absolute (where the exact gradient
    vanishes, autograd through :func:`~minilib.attention.sdpa` gets exact zeros; this form gets ~1e-4), and
    ``dv`` within $5 \cdot 10^{-4}$ of its largest entry (tests/test_precision.py).  NaN inputs are not checked for and propagate.
    See :func:`flash_attention_lse`,
    :cite:`dao2022flashattention,dao2023flashattention2`.
    """
    return flash_attention_lse(q, k, v, causal=causal, scale=scale, block_q=block_q, block_k=block_k)[0]
