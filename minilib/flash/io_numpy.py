r"""The NumPy walkthrough: attention with every slow-memory ("HBM") access counted.

In chapter 03's order: standard attention in three passes (:func:`standard_attention_numpy`),
softmax as a cascade of 3, 2 or 1 passes (:func:`attention_passes_numpy`), the online softmax
update (:func:`online_softmax_step`), and the tiled forward of :cite:`dao2022flashattention`
(:func:`flash_attention_numpy`) with the paper's block sizes and traffic bound
(:func:`sram_block_sizes`, :func:`predicted_hbm_accesses`).  Arrays are ``(T, D)`` for one head
or ``(B, H, T, D)``; ``k, v`` may have fewer heads (GQA).
"""
from __future__ import annotations

import numpy as np

from minilib._checks import check_positive_int, default_scale

__all__ = ["standard_attention_numpy", "attention_passes_numpy", "online_softmax_step", "flash_attention_numpy",
           "sram_block_sizes", "predicted_hbm_accesses"]


def _shift(m):
    """The row maxima to subtract before ``exp``: ``m``, or 0 where a row has no visible score yet (weight stays 0)."""
    return np.where(np.isfinite(m), m, 0.0)


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
    scale = default_scale(q.shape[3], scale)
    out = np.zeros(q.shape[:3] + (v.shape[3],), np.result_type(q.dtype, k.dtype, v.dtype, np.float32))
    return q, k, v, squeeze, scale, out


def _per_head(q, k, v):
    """``(b, h, Q, K, V)`` for every query head, with ``K, V`` from the key/value head it reads (GQA)."""
    group = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            yield b, h, q[b, h], k[b, h // group], v[b, h // group]


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
        m = _shift(m)
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
    check_positive_int("block_k", block_k)
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

    for b, h, Q, K, V in _per_head(q, k, v):
        Q, K, V = Q.astype(dtype), K.astype(dtype), V.astype(dtype)
        m, l, o = np.full(T, -np.inf, dtype), np.zeros(T, dtype), np.zeros((T, Dv), dtype)
        if passes == 3:
            for s, _ in sweep(Q, K, V, False):
                m = np.maximum(m, s.max(axis=1))
            for s, _ in sweep(Q, K, V, False):
                l += np.exp(s - _shift(m)[:, None]).sum(axis=1)
        elif passes == 2:
            for s, _ in sweep(Q, K, V, False):
                m_new = np.maximum(m, s.max(axis=1))
                l = np.exp(m - _shift(m_new)) * l + np.exp(s - _shift(m_new)[:, None]).sum(axis=1)
                m = m_new
        if passes > 1:
            for s, Vj in sweep(Q, K, V, True):
                o += np.exp(s - _shift(m)[:, None]) @ Vj
        else:
            for s, Vj in sweep(Q, K, V, True):
                m, l, o = online_softmax_step(m, l, o, s, Vj)
        out[b, h] = o / np.where(l > 0, l, 1.0)[:, None]
        io["hbm_writes"] += T * Dv
    return (out[0, 0] if squeeze else out), io


def online_softmax_step(m, l, acc, s, v):
    r"""One block of the online softmax: fold scores ``s`` and values ``v`` into the running state.

    For rows with running maximum ``m``, normaliser ``l`` and unnormalised output ``acc``,

    $$ m' = \max(m, \max_j s_j),\quad l' = e^{m - m'} l + \sum_j e^{s_j - m'},\quad
       \mathrm{acc}' = e^{m - m'} \mathrm{acc} + \sum_j e^{s_j - m'} v_j ; $$

    after the last block ``out = acc / l`` and ``lse = m + log l``.  Start from ``m = -inf``,
    ``l = 0``, ``acc = 0``.  ``m, l (R,)``, ``acc (R, Dv)``, ``s (R, Bk)`` (``-inf`` = masked),
    ``v (Bk, Dv)`` -> ``(m', l', acc')``; a row with no visible score yet keeps ``l = 0``.
    Every exponent is at most 0, so nothing overflows.  See :cite:`milakov2018online,dao2022flashattention`.
    """
    m, l, acc, s, v = (np.asarray(a) for a in (m, l, acc, s, v))
    R = m.shape[0] if m.ndim == 1 else -1
    if m.ndim != 1 or l.shape != (R,) or acc.ndim != 2 or acc.shape[0] != R or s.ndim != 2 or s.shape[0] != R \
            or v.shape != (s.shape[1], acc.shape[1]):
        raise ValueError(f"online_softmax_step needs m, l (R,), acc (R, Dv), s (R, Bk), v (Bk, Dv); got m {m.shape}, "
                         f"l {l.shape}, acc {acc.shape}, s {s.shape}, v {v.shape}")
    m_new = np.maximum(m, s.max(axis=1))
    m_use = _shift(m_new)
    p = np.exp(s - m_use[:, None])
    alpha = np.exp(m - m_use)
    return m_new, alpha * l + p.sum(axis=1), alpha[:, None] * acc + p @ v


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
    check_positive_int("block_q", block_q)
    check_positive_int("block_k", block_k)
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
                m, l, acc = online_softmax_step(m, l, acc, s, Vj)
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


def sram_block_sizes(M: int, d: int) -> tuple[int, int]:
    r"""The largest query block that fits an SRAM of ``M`` elements, following :cite:`dao2022flashattention`.

    With head dim ``d`` (and ``Dv = d``) :func:`flash_attention_numpy` holds
    $2 B_q d + 2 B_k d + B_q B_k + 2 B_q$ elements, so take

    $$ B_k = \max(1, \min(d, \lfloor M / 8d \rfloor)),\qquad
       B_q = \max\Big(1, \Big\lfloor \frac{M - 2 B_k d}{2d + B_k + 2} \Big\rfloor\Big) , $$

    i.e. $B_q = \Theta(M/d)$ as in the paper, and the ``sram_peak`` stays at most ``M`` whenever
    ``M >= 4 d (d + 1)``.  Returns ``(block_q, block_k)``.
    """
    check_positive_int("M", M)
    check_positive_int("d", d)
    block_k = max(1, min(d, M // (8 * d)))
    return max(1, (M - 2 * block_k * d) // (2 * d + block_k + 2)), block_k


def predicted_hbm_accesses(N: int, d: int, M: int) -> dict:
    r"""The paper's asymptotic HBM traffic for sequence length ``N``, head dim ``d``, SRAM ``M``.

    $$ \text{flash} = \frac{N^2 d^2}{M},\qquad \text{standard} = N d + N^2 $$

    (Theorem 2 of :cite:`dao2022flashattention`; constants dropped).  Counted traffic of
    :func:`flash_attention_numpy` with :func:`sram_block_sizes` is $2N^2 d / B_q + O(Nd)$,
    about ``7x`` the flash term plus the ``O(Nd)`` remainder.  Returns ``{"flash": float, "standard": float}``.
    """
    for name, value in (("N", N), ("d", d), ("M", M)):
        check_positive_int(name, value)
    return {"flash": N * N * d * d / M, "standard": float(N * d + N * N)}
