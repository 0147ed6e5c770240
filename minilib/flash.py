r"""IO-aware exact attention: tiling, online softmax, and the kernels built on them.

Three layers live here.

* A NumPy walkthrough (:func:`flash_attention_numpy`, :func:`standard_attention_numpy`) that
  counts every element moved between slow memory ("HBM") and fast memory ("SRAM"), so the
  IO argument of :cite:`dao2022flashattention` can be checked by counting.
* A PyTorch kernel (:func:`flash_attention`) with a custom backward that recomputes the
  attention tiles from the saved log-sum-exp, and the variants built on the same core:
  split-K decoding, padding-free packed batches and block-sparse attention.
* A model of how one decoding step's work is spread over a GPU's SMs
  (:func:`decode_schedule_utilisation`), for the scheduling argument of :cite:`sanovar2024lean`.

Online softmax.  Scan the keys in blocks; for one query keep a running maximum ``m``, a
running normaliser ``l`` and an unnormalised output ``acc``.  A new block of scores ``s``
updates them as

$$ m' = \max(m, \max_j s_j),\quad l' = e^{m - m'} l + \sum_j e^{s_j - m'},\quad
   \mathrm{acc}' = e^{m - m'} \mathrm{acc} + \sum_j e^{s_j - m'} v_j , $$

and at the end ``out = acc / l`` and ``lse = m + log l``.
"""
from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch

from minilib._checks import check_attention_inputs, require_tensor

__all__ = [
    "flash_attention_numpy",
    "standard_attention_numpy",
    "predicted_hbm_accesses",
    "sram_block_sizes",
    "flash_attention",
    "flash_attention_lse",
    "merge_partials",
    "flash_decode",
    "varlen_attention",
    "block_sparse_attention",
    "decode_schedule_utilisation",
]


def _check_block(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------
# NumPy walkthrough with an IO counter
# ----------------------------------------------------------------------------------------

def _numpy_heads(q, k, v):
    """Bring (T, D) or (B, H, T, D) arrays to (B, H, T, D) and check them; returns the arrays and whether to squeeze."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.ndim not in (2, 4):
            raise ValueError(f"{name} must be (T, D) or (B, H, T, D), got shape {x.shape}")
    if not q.ndim == k.ndim == v.ndim:
        raise ValueError(f"q, k, v must have the same rank, got {q.shape}, {k.shape}, {v.shape}")
    squeeze = q.ndim == 2
    if squeeze:
        q, k, v = q[None, None], k[None, None], v[None, None]
    B, H, _, D = q.shape
    if k.shape[0] != B or v.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k must be (B, Hkv, S, D) matching q, got q {q.shape}, k {k.shape}")
    if v.shape[1:3] != k.shape[1:3]:
        raise ValueError(f"v must be (B, Hkv, S, Dv) matching k, got k {k.shape}, v {v.shape}")
    if k.shape[1] == 0 or H % k.shape[1]:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[1]})")
    return q, k, v, squeeze


def _numpy_problem(q, k, v, scale):
    """Checked ``(B, H, T, D)`` arrays, whether to squeeze back to ``(T, D)``, the score scale, and a
    zero output ``(B, H, T, Dv)`` in the compute dtype (at least float32)."""
    q, k, v, squeeze = _numpy_heads(q, k, v)
    scale = q.shape[3] ** -0.5 if scale is None else scale
    out = np.zeros(q.shape[:3] + (v.shape[3],), np.result_type(q.dtype, k.dtype, v.dtype, np.float32))
    return q, k, v, squeeze, scale, out


def _per_head(q, k, v):
    """``(b, h, Q, K, V)`` for every query head, with ``K, V`` from the key/value head it reads (GQA)."""
    group = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            yield b, h, q[b, h], k[b, h // group], v[b, h // group]


def flash_attention_numpy(q, k, v, *, causal=False, block_q=64, block_k=64, scale=None):
    r"""Tiled attention with online softmax in NumPy, counting slow-memory traffic.

    For each block of ``block_q`` queries ``Q_i`` (read once) the key/value blocks
    ``K_j, V_j`` are streamed through fast memory; the running max ``m``, sum ``l`` and output
    ``acc`` never leave it.  At the end ``O_i = acc / l`` and ``lse_i = m + \log l`` are written.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V,\qquad
       \mathrm{HBM} = TD + \lceil T/B_q\rceil\, S\,(D + D_v) + T D_v + T $$

    (the second term counts only visited tiles when ``causal``).  ``q (T, D)`` or
    ``(B, H, T, D)``, ``k (…, S, D)``, ``v (…, S, Dv)`` (``k, v`` may have fewer heads, GQA).
    Returns ``out (…, T, Dv)``, ``lse (…, T)`` and ``io`` with ``hbm_reads``, ``hbm_writes``
    (elements) and ``sram_peak`` (largest number of elements held at once: ``Q_i, K_j, V_j``,
    the score tile, ``acc``, ``m`` and ``l``).  Causal with ``T != S`` aligns bottom-right;
    a row with no visible key gets zeros and ``lse = -inf``.  See :cite:`dao2022flashattention`.
    """
    q, k, v, squeeze, scale, out = _numpy_problem(q, k, v, scale)
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    T, S, Dv, dtype = q.shape[2], k.shape[2], v.shape[3], out.dtype
    lse = np.full(out.shape[:3], -np.inf, dtype)
    io = {"hbm_reads": 0, "hbm_writes": 0, "sram_peak": 0}
    offset = S - T  # query t sits at key position t + offset
    for b, h, Q, K, V in _per_head(q, k, v):
        for r0 in range(0, T, block_q):
            r1 = min(T, r0 + block_q)
            n_keys = min(S, r1 + offset) if causal else S  # later keys are masked for every row
            if n_keys > 0:
                Qi = Q[r0:r1].astype(dtype)
                io["hbm_reads"] += Qi.size
                m = np.full(r1 - r0, -np.inf, dtype)
                l = np.zeros(r1 - r0, dtype)
                acc = np.zeros((r1 - r0, Dv), dtype)
            for c0 in range(0, max(n_keys, 0), block_k):
                c1 = min(n_keys, c0 + block_k)
                Kj, Vj = K[c0:c1], V[c0:c1]
                io["hbm_reads"] += Kj.size + Vj.size
                s = scale * (Qi @ Kj.T)
                if causal:
                    rows = np.arange(r0, r1)[:, None] + offset
                    s = np.where(np.arange(c0, c1)[None, :] <= rows, s, -np.inf)
                m_new = np.maximum(m, s.max(axis=1))
                m_use = np.where(np.isfinite(m_new), m_new, 0.0)  # a row masked so far stays at zero weight
                p = np.exp(s - m_use[:, None])
                alpha = np.exp(m - m_use)
                l = alpha * l + p.sum(axis=1)
                acc = alpha[:, None] * acc + p @ Vj
                m = m_new
                held = Qi.size + Kj.size + Vj.size + s.size + acc.size + m.size + l.size
                io["sram_peak"] = max(io["sram_peak"], held)
            if n_keys > 0:
                with np.errstate(divide="ignore"):
                    out[b, h, r0:r1] = acc / np.where(l > 0, l, 1.0)[:, None]
                    lse[b, h, r0:r1] = m + np.log(l)
            io["hbm_writes"] += (r1 - r0) * (Dv + 1)
    if squeeze:
        out, lse = out[0, 0], lse[0, 0]
    return out, lse, io


def standard_attention_numpy(q, k, v, *, causal=False, scale=None):
    r"""Standard attention in three passes through slow memory, counting its traffic.

    Pass 1 writes the scores $S = s\,QK^\top$ (masked), pass 2 reads them and writes
    $P = \operatorname{softmax}(S)$ row by row, pass 3 reads $P$ and $V$ and writes $O = PV$:

    $$ \mathrm{reads} = TD + SD + 2TS + SD_v,\qquad \mathrm{writes} = 2TS + TD_v , $$

    i.e. $\Theta(Nd + N^2)$ (Algorithm 0 of :cite:`dao2022flashattention`; each matrix product
    is counted as reading its operands once).  Shapes as :func:`flash_attention_numpy`; returns
    ``out`` and ``io``; ``sram_peak`` is the largest single buffer a pass needs (one row of
    ``S`` for the softmax pass, ``max(D, Dv)``-wide rows for the products).
    """
    q, k, v, squeeze, scale, out = _numpy_problem(q, k, v, scale)
    T, D, S, Dv = q.shape[2], q.shape[3], k.shape[2], v.shape[3]
    io = {"hbm_reads": 0, "hbm_writes": 0, "sram_peak": 0}
    keep = np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T) if causal else np.ones((T, S), bool)
    for b, h, Q, K, V in _per_head(q, k, v):
        scores = np.where(keep, scale * (Q @ K.T), -np.inf)  # pass 1
        io["hbm_reads"] += Q.size + K.size
        io["hbm_writes"] += scores.size
        m = scores.max(axis=1, keepdims=True) if S else np.zeros((T, 1))
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(scores - m)
        den = e.sum(axis=1, keepdims=True)
        P = e / np.where(den > 0, den, 1.0)  # pass 2
        io["hbm_reads"] += scores.size
        io["hbm_writes"] += P.size
        out[b, h] = P @ V  # pass 3
        io["hbm_reads"] += P.size + V.size
        io["hbm_writes"] += T * Dv
        io["sram_peak"] = max(io["sram_peak"], S + max(D, Dv) * 2)
    return (out[0, 0] if squeeze else out), io


def sram_block_sizes(M: int, d: int) -> tuple[int, int]:
    r"""The largest query block that fits an SRAM of ``M`` elements, following :cite:`dao2022flashattention`.

    With head dim ``d`` (and ``Dv = d``) :func:`flash_attention_numpy` holds
    $2 B_q d + 2 B_k d + B_q B_k + 2 B_q$ elements, so take

    $$ B_k = \max(1, \min(d, \lfloor M / 8d \rfloor)),\qquad
       B_q = \max\Big(1, \Big\lfloor \frac{M - 2 B_k d}{2d + B_k + 2} \Big\rfloor\Big) , $$

    i.e. $B_q = \Theta(M/d)$ as in the paper, and the ``sram_peak`` stays at most ``M`` whenever
    ``M >= 4 d (d + 1)``.  Returns ``(block_q, block_k)``.
    """
    _check_block("M", M)
    _check_block("d", d)
    block_k = max(1, min(d, M // (8 * d)))
    return max(1, (M - 2 * block_k * d) // (2 * d + block_k + 2)), block_k


def predicted_hbm_accesses(N: int, d: int, M: int) -> dict:
    r"""The paper's asymptotic HBM traffic for sequence length ``N``, head dim ``d``, SRAM ``M``.

    $$ \text{flash} = \frac{N^2 d^2}{M},\qquad \text{standard} = N d + N^2 $$

    (Theorem 2 of :cite:`dao2022flashattention`; constants dropped).  Counted traffic of
    :func:`flash_attention_numpy` with :func:`sram_block_sizes` is $2N^2 d / B_q + O(Nd)$,
    about ``7x`` the flash term plus the ``O(Nd)`` remainder.  Returns ``{"flash": float, "standard": float}``.
    """
    return {"flash": N * N * d * d / M, "standard": float(N * d + N * N)}


# ----------------------------------------------------------------------------------------
# PyTorch kernel
# ----------------------------------------------------------------------------------------

def _compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    dtype = torch.promote_types(torch.promote_types(xs[0].dtype, xs[1].dtype), xs[2].dtype)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


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


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _run_units(fn, items):
    """``[fn(x) for x in items]``, the items shared among ``torch.get_num_threads()`` worker threads.

    Like the thread blocks of a GPU kernel, each worker takes whole work units (heads, sequences,
    query blocks) and runs them with single-threaded ops: torch's own intra-op threading would
    synchronise its threads on every small tile op.  Inside a worker this runs serially, so units
    may nest; the caller's grad mode is carried into the workers.
    """
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    grad = torch.is_grad_enabled()

    def run(x):
        with torch.set_grad_enabled(grad):
            return fn(x)

    return list(_POOLS[workers].map(run, items))


def _map_units(fn, tensors, n_units):
    """Run ``fn`` on slices of dim 0 of ``tensors`` (the batch x kv-head axis) as parallel work units.

    ``fn`` returns a tuple of tensors, concatenated back along dim 0.
    """
    workers = min(torch.get_num_threads(), n_units)
    if workers <= 1:
        return fn(*tensors)
    step = -(-n_units // workers)
    parts = _run_units(lambda a: fn(*(None if t is None else t[a:a + step] for t in tensors)),
                       list(range(0, n_units, step)))
    return tuple(torch.cat(p) for p in zip(*parts))


class _FlashAttention(torch.autograd.Function):
    """Custom autograd function: forward keeps only (q, k, v, out, lse); backward recomputes tiles."""

    @staticmethod
    def forward(ctx, q, k, v, scale, q_pos, k_pos, block_q, block_k):
        B, H, T, _ = q.shape
        n_kv = k.shape[1]
        dtype = _compute_dtype(q, k, v)
        qr = _to_rows(q.to(dtype), n_kv)
        kr = k.to(dtype).reshape(B * n_kv, *k.shape[2:])
        vr = v.to(dtype).reshape(B * n_kv, *v.shape[2:])
        fwd = partial(_forward, scale=scale, q_pos=q_pos, k_pos=k_pos, G=H // n_kv, block_q=block_q, block_k=block_k)
        out, lse = _map_units(fwd, (qr, kr, vr), B * n_kv)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (scale, q_pos, k_pos, block_q, block_k)
        ctx.set_materialize_grads(False)
        out_dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
        return _from_rows(out, B, H, T).to(out_dtype), _from_rows(lse, B, H, T)

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
        dq, dk, dv = _map_units(bwd, (qr, kr, vr, out, lse, dor, dlr), B * n_kv)
        return (_from_rows(dq, B, H, T).to(q.dtype), dk.reshape(k.shape).to(k.dtype),
                dv.reshape(v.shape).to(v.dtype), None, None, None, None, None)


def _attend(q, k, v, scale, q_pos, k_pos, block_q, block_k):
    """(out, lse) through the autograd function; positions are lists or None (no mask)."""
    return _FlashAttention.apply(q, k, v, scale, q_pos, k_pos, block_q, block_k)


def _bottom_right(T: int, S: int):
    return list(range(S - T, S)), list(range(S))


def flash_attention_lse(q, k, v, *, causal=False, scale=None, block_q=64, block_k=64):
    r"""Exact attention and its row log-sum-exp, computed tile by tile.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V,\qquad
       \mathrm{lse}_t = \log \sum_j e^{s\, q_t\cdot k_j + \mathrm{mask}_{tj}} $$

    ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` with ``H % Hkv == 0``;
    returns ``out (B, H, T, Dv)`` in the inputs' dtype and ``lse (B, H, T)`` in the compute dtype
    (float32 for float16/bfloat16 inputs).  ``causal`` aligns bottom-right (queries are the
    last ``T`` of ``S`` positions); a row with no visible key gets zeros and ``lse = -inf``.
    Both outputs are differentiable.  See :cite:`dao2022flashattention,dao2023flashattention2`.
    """
    check_attention_inputs(q, k, v)
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    T, S = q.shape[2], k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q_pos, k_pos = _bottom_right(T, S) if causal else (None, None)
    return _attend(q, k, v, scale, q_pos, k_pos, block_q, block_k)


def flash_attention(q, k, v, *, causal=False, scale=None, block_q=64, block_k=64):
    r"""FlashAttention: exact softmax attention that never materialises the ``(T, S)`` scores.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V $$

    computed in ``block_q x block_k`` tiles with online softmax; a custom
    ``torch.autograd.Function`` saves only ``out`` and the row log-sum-exp and recomputes each
    tile in the backward (FlashAttention-2 order).  Fully masked causal tiles are skipped; the
    (batch x kv-head) units are shared among ``torch.get_num_threads()`` single-threaded workers.
    ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)`` -> ``(B, H, T, Dv)``.
    float16/bfloat16 inputs are computed in float32.  See :func:`flash_attention_lse`,
    :cite:`dao2022flashattention,dao2023flashattention2`.
    """
    return flash_attention_lse(q, k, v, causal=causal, scale=scale, block_q=block_q, block_k=block_k)[0]


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
    dtype = _compute_dtype(outs[0], lses[0], lses[0])
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
    check_attention_inputs(q, k, v)
    n_splits = _check_block("n_splits", n_splits)
    T, S = q.shape[2], k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
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


def varlen_attention(q, k, v, cu_seqlens, *, causal=False, scale=None, block_q=256, block_k=256):
    r"""Attention over a padding-free packed batch: no token attends across sequences.

    Sequence $i$ occupies rows $[c_i, c_{i+1})$ of the packed tensors and
    $\mathrm{out}_{c_i:c_{i+1}} = \operatorname{attn}(Q_{c_i:c_{i+1}}, K_{c_i:c_{i+1}}, V_{c_i:c_{i+1}})$,
    so the work is $\sum_i L_i^2$ instead of $n\,\max_i L_i^2$ for a padded batch.
    ``q (total, H, D)``, ``k (total, Hkv, D)``, ``v (total, Hkv, Dv)``, ``cu_seqlens (n+1,)``
    integer offsets from 0 to ``total`` -> ``(total, H, Dv)``.  See :cite:`zhai2023bytetransformer`.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x, ndim=3, floating=True)
    require_tensor("cu_seqlens", cu_seqlens, ndim=1)
    if cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool:
        raise TypeError(f"cu_seqlens must be an integer tensor, got dtype {cu_seqlens.dtype}")
    total = q.shape[0]
    if k.shape[0] != total or v.shape[0] != total:
        raise ValueError(f"q, k, v must share the packed length, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total or any(a > b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to total={total}, got {bounds}")
    check_attention_inputs(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None])
    block_q, block_k = _check_block("block_q", block_q), _check_block("block_k", block_k)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)

    def one_sequence(span):
        a, b = span
        qi, ki, vi = (x[a:b].transpose(0, 1)[None] for x in (q, k, v))
        q_pos, k_pos = _bottom_right(b - a, b - a) if causal else (None, None)
        return _attend(qi, ki, vi, scale, q_pos, k_pos, block_q, block_k)[0][0].transpose(0, 1)

    # each sequence is one work unit, the longest first so the workers finish together
    spans = sorted(((a, b) for a, b in zip(bounds, bounds[1:]) if b > a), key=lambda ab: ab[0] - ab[1])
    pieces = dict(zip(spans, _run_units(one_sequence, spans)))
    if not pieces:
        return q.new_zeros(0, q.shape[1], v.shape[-1], dtype=v.dtype)
    return torch.cat([pieces[span] for span in sorted(pieces)])


def block_sparse_attention(q, k, v, block_mask, *, block_size=64, causal=False, scale=None):
    r"""Attention restricted to the ``(block_size x block_size)`` tiles a block mask keeps.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V,\qquad
       \mathrm{mask}_{tj} = 0 \text{ if } M_{\lfloor t/b\rfloor \lfloor j/b\rfloor} \text{ (and } j \text{ visible when causal)}, -\infty \text{ otherwise} $$

    Each query block is a work unit: its kept key blocks are gathered (heads with the same
    kept keys, or the same number of them when not causal, in one batched call) and only
    they are visited; masked blocks are never read.  ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``,
    ``block_mask`` bool ``(H or 1, ceil(T/b), ceil(S/b))`` -> ``(B, H, T, Dv)``; rows with no
    kept key give zeros.  Equals ``sdpa`` with the expanded mask.
    See :cite:`dao2022flashattention,child2019sparse`.
    """
    check_attention_inputs(q, k, v)
    block_size = _check_block("block_size", block_size)
    require_tensor("block_mask", block_mask, ndim=3)
    if block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be a bool tensor, got dtype {block_mask.dtype}")
    B, H, T, _ = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    nq, nk = -(-T // block_size), -(-S // block_size)
    if block_mask.shape[0] not in (1, H) or tuple(block_mask.shape[1:]) != (nq, nk):
        raise ValueError(f"block_mask must have shape (1 or {H}, {nq}, {nk}) for T={T}, S={S}, "
                         f"block_size={block_size}; got {tuple(block_mask.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q_pos, k_pos = _bottom_right(T, S)
    group = H // Hkv
    keep = block_mask.expand(H, nq, nk).cpu().tolist()
    inner_k = max(block_size, 512)  # gathered keys are scanned in wider tiles: fewer Python steps
    out_dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    whole_blocks = None if S % block_size else tuple(x.reshape(B, Hkv * nk, -1) for x in (k, v))
    key_ids = torch.arange(nk * block_size).split(block_size)
    key_ids = key_ids[:-1] + (key_ids[-1][:S - (nk - 1) * block_size],)

    def query_block(i):
        r0, r1 = i * block_size, min(T, (i + 1) * block_size)
        out = q.new_zeros(B, H, r1 - r0, v.shape[-1], dtype=out_dtype)
        # heads whose kept keys can share one batched call: the same keys when causal (the mask
        # needs common key positions), else just the same number of keys
        batches = {}
        for h in range(H):
            cols = tuple(j for j in range(nk) if keep[h][i][j])
            if cols:
                n_keys = len(cols) * block_size - (block_size * nk - S if cols[-1] == nk - 1 else 0)
                batches.setdefault(cols if causal else n_keys, []).append((h, cols))
        for members in batches.values():
            heads = [h for h, _ in members]
            # key indices built by torch, not Python loops: workers share the GIL
            idx_t = torch.stack([torch.cat([key_ids[j] for j in cols]) for _, cols in members])
            if whole_blocks is not None:  # copy whole (block_size, D) blocks: a fast contiguous gather
                rows = torch.tensor([(h // group) * nk + j for h, cols in members for j in cols])
                kg, vg = (x.index_select(1, rows).reshape(B, len(heads), idx_t.shape[1], -1) for x in whole_blocks)
            else:
                kv_heads = torch.tensor([h // group for h in heads])[:, None]
                kg, vg = k[:, kv_heads, idx_t], v[:, kv_heads, idx_t]  # (B, len(heads), kept keys, D)
            qt = q[:, heads, r0:r1]
            if causal:
                o = _attend(qt, kg, vg, scale, q_pos[r0:r1], idx_t[0].tolist(), block_size, inner_k)[0]
            else:
                o = _attend(qt, kg, vg, scale, None, None, block_size, inner_k)[0]
            out[:, heads] = o
        return out

    return torch.cat(_run_units(query_block, list(range(nq))), dim=2)


# ----------------------------------------------------------------------------------------
# A model of how decoding work is spread over a GPU's streaming multiprocessors
# ----------------------------------------------------------------------------------------

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
        _check_block(name, value)
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


def _even_split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)`` whose lengths differ by at most one."""
    base, extra = divmod(n, parts)
    bounds = [0]
    for p in range(parts):
        bounds.append(bounds[-1] + base + (p < extra))
    return list(zip(bounds[:-1], bounds[1:]))


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
    check_attention_inputs(q, k, v)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
    T, S = q.shape[2], k.shape[2]
    if n_workers > min(T, S):
        raise ValueError(f"n_workers ({n_workers}) must not exceed the query length {T} or key length {S}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    q_pos, k_pos = _bottom_right(T, S)
    q_chunks, kv_chunks = _even_split(T, n_workers), _even_split(S, n_workers)
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


def attention_passes_numpy(q, k, v, *, passes=3, causal=False, scale=None, block_k=64):
    r"""Softmax attention as a cascade of 3, 2 or 1 passes over the keys, counting traffic.

    With scores $s_j = \mathrm{scale}\; q \cdot k_j$ (masked to $-\infty$):

    * ``passes=3``: $m = \max_j s_j$; then $\ell = \sum_j e^{s_j - m}$; then
      $o = \sum_j e^{s_j - m} v_j / \ell$.
    * ``passes=2``: $m, \ell$ together online, $\ell \leftarrow e^{m - m'}\ell + \sum_j e^{s_j - m'}$;
      then the output pass.
    * ``passes=1``: $m, \ell$ and $o$ all online, $o \leftarrow e^{m - m'} o + \sum_j e^{s_j - m'} v_j$.

    Each pass streams $K$ in blocks of ``block_k`` and recomputes the scores rather than storing
    them, so per (batch, head) the slow-memory traffic is
    $\mathrm{reads} = p\,(TD + SD) + S D_v$, $\mathrm{writes} = T D_v$ for $p$ passes, and the
    fast-memory buffer ($Q$, one $K, V$ block, the score block, $m, \ell, o$) does not grow with
    $S$.  ``q (T, D)`` or ``(B, H, T, D)``, ``k (…, S, D)``, ``v (…, S, Dv)`` (GQA allowed).
    Returns ``out`` and ``io`` with ``hbm_reads``, ``hbm_writes``, ``k_reads`` (times each key
    is read) and ``sram_peak``.  Rows with no visible key give zeros.
    See :cite:`nayak2024fusemax`.
    """
    if passes not in (1, 2, 3):
        raise ValueError(f"passes must be 1, 2 or 3, got {passes!r}")
    q, k, v, squeeze, scale, out = _numpy_problem(q, k, v, scale)
    block_k = _check_block("block_k", block_k)
    T, S, Dv, dtype = q.shape[2], k.shape[2], v.shape[3], out.dtype
    io = {"hbm_reads": 0, "hbm_writes": 0, "k_reads": passes, "sram_peak": 0}
    rows = np.arange(T)[:, None] + (S - T)

    def sweep(Q, K, V, with_v):
        """One pass: yields the masked score block and the matching V block (V read only if needed)."""
        io["hbm_reads"] += Q.size
        for c0 in range(0, S, block_k):
            c1 = min(S, c0 + block_k)
            io["hbm_reads"] += K[c0:c1].size + (V[c0:c1].size if with_v else 0)
            s = scale * (Q @ K[c0:c1].T)
            if causal:
                s = np.where(np.arange(c0, c1)[None, :] <= rows, s, -np.inf)
            held = Q.size + K[c0:c1].size + (V[c0:c1].size if with_v else 0) + s.size + T * (Dv + 2)
            io["sram_peak"] = max(io["sram_peak"], held)
            yield s, V[c0:c1]

    def finite(m):
        return np.where(np.isfinite(m), m, 0.0)  # a row with no visible key so far keeps weight zero

    for b, h, Q, K, V in _per_head(q, k, v):
        Q, K, V = Q.astype(dtype), K.astype(dtype), V.astype(dtype)
        m, l, o = np.full(T, -np.inf, dtype), np.zeros(T, dtype), np.zeros((T, Dv), dtype)
        if passes == 3:
            for s, _ in sweep(Q, K, V, False):
                m = np.maximum(m, s.max(axis=1))
            for s, _ in sweep(Q, K, V, False):
                l += np.exp(s - finite(m)[:, None]).sum(axis=1)
        elif passes == 2:
            for s, _ in sweep(Q, K, V, False):
                m_new = np.maximum(m, s.max(axis=1))
                l = np.exp(m - finite(m_new)) * l + np.exp(s - finite(m_new)[:, None]).sum(axis=1)
                m = m_new
        if passes > 1:
            for s, Vj in sweep(Q, K, V, True):
                o += np.exp(s - finite(m)[:, None]) @ Vj
        else:
            for s, Vj in sweep(Q, K, V, True):
                m_new = np.maximum(m, s.max(axis=1))
                alpha = np.exp(m - finite(m_new))
                p = np.exp(s - finite(m_new)[:, None])
                l, o, m = alpha * l + p.sum(axis=1), alpha[:, None] * o + p @ Vj, m_new
        out[b, h] = o / np.where(l > 0, l, 1.0)[:, None]
        io["hbm_writes"] += T * Dv
    return (out[0, 0] if squeeze else out), io


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
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
    block_k = _check_block("block_k", block_k)
    B, H, T, _ = q.shape
    S, group = k.shape[2], H // k.shape[1]
    if S == 0:
        raise ValueError(f"k must have at least one key, got k {tuple(k.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    n_blocks = -(-S // block_k)
    units = []
    for start, stop in _even_split(B * H * n_blocks, n_workers):
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


def _dft_matrix(n: int, dtype, inverse=False) -> torch.Tensor:
    j = torch.arange(n, dtype=torch.float64)
    sign = 1.0 if inverse else -1.0
    return torch.polar(torch.ones(n, n, dtype=torch.float64), sign * 2 * math.pi * torch.outer(j, j) / n).to(dtype)


def _monarch_dft(x, F1, F2, tw):
    """Length N1*N2 DFT of the last axis as two matmuls: the result sits at [k1, k2] for frequency k1 + N1*k2.

    ``F1`` may hold only some rows k1 (frequency-sparse); the output then holds those rows.
    """
    X = x.reshape(*x.shape[:-1], F1.shape[1], F2.shape[0])  # X[n1, n2] = x[N2*n1 + n2]
    return ((F1 @ X) * tw) @ F2


def _monarch_idft(Y, F1i, F2i, twi, N):
    """Inverse of :func:`_monarch_dft`: [k1, k2] layout in (rows as kept by ``F1i``'s columns), signal of length N out."""
    return (F1i @ ((Y @ F2i) * twi)).reshape(*Y.shape[:-2], N) / N


def monarch_fft_conv(u, kernel, *, n1, n2, freq_mask=None):
    r"""Causal long convolution by FFT, the DFT done as dense matrix products (Monarch form).

    $$ y_t = \sum_{s=0}^{t} h_s\, u_{t-s},\qquad y = \mathcal{F}_N^{-1}\big(\mathcal{F}_N \tilde u
       \odot \mathcal{F}_N \tilde h\big)_{[0, L)} $$

    with $\tilde u, \tilde h$ zero-padded to $N = n_1 n_2 \ge L + L_h - 1$ (no wrap-around).  The
    length-$N$ DFT is Cooley-Tukey in two matmul stages: reshape $x$ to the $(n_1, n_2)$ matrix
    $X_{ab} = x_{n_2 a + b}$, then

    $$ Y = \big((F_{n_1} X) \odot \Omega\big) F_{n_2},\qquad \Omega_{k_1 b} = \omega_N^{k_1 b},\qquad
       \hat x_{k_1 + n_1 k_2} = Y_{k_1 k_2}, $$

    and the inverse runs the same stages backwards with conjugate matrices, so no permutation
    is ever applied.  ``u (B, L, C)``, ``kernel (L_h, C)`` with ``L_h <= L`` -> ``(B, L, C)``;
    a short filter (a *partial* convolution) allows a smaller ``N``.

    ``freq_mask`` (bool ``(n1, n2)``, entry ``[k1, k2]`` for frequency ``k1 + n1 k2``) makes the
    convolution *frequency-sparse*: the product spectrum is zeroed where it is False, and rows
    ``k1`` that are False throughout are never computed (the rows of $F_{n_1}$ in the forward and
    the columns of $\bar F_{n_1}$ in the inverse are skipped); the real part is returned.
    See :cite:`fu2024flashfftconv`.
    """
    require_tensor("u", u, ndim=3, floating=True)
    require_tensor("kernel", kernel, ndim=2, floating=True)
    for name, n in (("n1", n1), ("n2", n2)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    B, L, C = u.shape
    Lh = kernel.shape[0]
    if kernel.shape[1] != C or Lh > L:
        raise ValueError(f"kernel must be (L_h, C) with L_h <= L, got u {tuple(u.shape)} and kernel {tuple(kernel.shape)}")
    N = n1 * n2
    if N < L + Lh - 1:
        raise ValueError(f"n1*n2 = {N} must be at least L + L_h - 1 = {L + Lh - 1} to avoid wrap-around")
    if freq_mask is not None:
        require_tensor("freq_mask", freq_mask, ndim=2)
        if freq_mask.dtype != torch.bool or tuple(freq_mask.shape) != (n1, n2):
            raise ValueError(f"freq_mask must be a bool tensor of shape ({n1}, {n2}), got {freq_mask.dtype} "
                             f"{tuple(freq_mask.shape)}")
    cdtype = torch.complex128 if torch.promote_types(u.dtype, kernel.dtype) == torch.float64 else torch.complex64
    F1, F2 = _dft_matrix(n1, cdtype).to(u.device), _dft_matrix(n2, cdtype).to(u.device)
    idx = torch.arange(n1, dtype=torch.float64)[:, None] * torch.arange(n2, dtype=torch.float64)[None, :]
    tw = torch.polar(torch.ones_like(idx), -2 * math.pi * idx / N).to(cdtype).to(u.device)
    u_pad = torch.zeros(B, C, N, dtype=cdtype, device=u.device)
    u_pad[..., :L] = u.transpose(1, 2)
    h_pad = torch.zeros(C, N, dtype=cdtype, device=u.device)
    h_pad[:, :Lh] = kernel.T
    F1i, twi = F1.conj(), tw.conj()
    if freq_mask is not None:
        rows = freq_mask.any(dim=1).nonzero().flatten().to(u.device)  # frequency rows k1 that survive
        F1, tw, F1i, twi = F1[rows], tw[rows], F1i[:, rows], twi[rows]
    spectrum = _monarch_dft(u_pad, F1, F2, tw) * _monarch_dft(h_pad, F1, F2, tw)
    if freq_mask is not None:
        spectrum = spectrum * freq_mask[rows].to(u.device)
    y = _monarch_idft(spectrum, F1i, F2.conj(), twi, N)
    return y[..., :L].real.transpose(1, 2).to(u.dtype)


def packed_encoder_layer(x, cu_seqlens, layer):
    r"""One BERT-style encoder layer on a padding-free packed batch (ByteTransformer).

    With the tokens of all sequences concatenated, every position-wise part (projections,
    feed-forward, layer norms) runs on the ``total`` real tokens only, and attention runs per
    sequence through :func:`varlen_attention`.  For ``layer.norm_first = False`` (post-LN, BERT):

    $$ h = \mathrm{LN}_1\big(x + W_O\, \mathrm{attn}_{\text{per seq}}(xW_Q, xW_K, xW_V)\big),\qquad
       y = \mathrm{LN}_2\big(h + W_2\, \phi(W_1 h)\big) $$

    and the pre-LN order when ``norm_first``.  ``x (total, d_model)``, ``cu_seqlens (n+1,)``
    offsets as in :func:`varlen_attention`; ``layer`` is a ``torch.nn.TransformerEncoderLayer``
    whose weights are used (dropout must be inactive: eval mode or ``p = 0``) -> ``(total, d_model)``.
    The work is $\sum_i L_i$ tokens for the position-wise parts and $\sum_i L_i^2$ for attention,
    instead of $n \max_i L_i$ and $n \max_i L_i^2$ padded.  See :cite:`zhai2023bytetransformer`.
    """
    if not isinstance(layer, torch.nn.TransformerEncoderLayer):
        raise TypeError(f"layer must be a torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
    require_tensor("x", x, ndim=2, floating=True)
    attn = layer.self_attn
    d, H = attn.embed_dim, attn.num_heads
    if x.shape[1] != d:
        raise ValueError(f"x must be (total, d_model={d}), got {tuple(x.shape)}")
    if layer.training and any(m.p > 0 for m in layer.modules() if isinstance(m, torch.nn.Dropout)):
        raise ValueError("layer has active dropout: call layer.eval() or set dropout to 0")
    if not attn._qkv_same_embed_dim or attn.in_proj_bias is None:
        raise ValueError("layer.self_attn must use one packed in-projection with bias (the default)")
    total = x.shape[0]

    def attention_block(z):
        qkv = torch.nn.functional.linear(z, attn.in_proj_weight, attn.in_proj_bias).view(total, 3, H, d // H)
        o = varlen_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens)
        return attn.out_proj(o.reshape(total, d))

    def feed_forward(z):
        return layer.linear2(layer.activation(layer.linear1(z)))

    if layer.norm_first:
        x = x + attention_block(layer.norm1(x))
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + attention_block(x))
    return layer.norm2(x + feed_forward(x))
