r"""The three forms of causal linear attention: parallel, recurrent, chunked.

Causal linear attention with an optional decay replaces softmax's $\exp(q_t\cdot k_s)$ by the plain dot
product of (feature-mapped) queries and keys:

$$ o_t = \sum_{s\le t} \Big(\prod_{r=s+1}^{t} g_r\Big) (q_t\cdot k_s)\, v_s , $$

which is the output of the recurrence $S_t = g_t S_{t-1} + k_t v_t^\top$, $o_t = S_t^\top q_t$ on a
$(D, D_v)$ state. ``decay`` is ``None`` ($g=1$), an ``(H,)`` tensor of constants in $(0, 1]$ (RetNet's
$\gamma$ per head) or a ``(B, H, L)`` tensor of per-step gates in $(0, 1]$ (gated linear attention).
With ``normalize=True`` the output is divided by the same sum without $v_s$,
$o_t / \sum_{s\le t} (\prod g)\, q_t\cdot k_s$ (the kernel's softmax normaliser :cite:`katharopoulos2020transformers`);
the state then carries that denominator as one more value column, shape ``(B, H, D, Dv + 1)``.

Shapes: ``q, k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, L, Dv)``. :cite:`katharopoulos2020transformers`,
:cite:`sun2023retentive`, :cite:`qin2024lightning`.
"""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int, require_tensor

SEGMENT = 1024  # positions per segment of the chunked form: its tensors stay cache-sized on a CPU

__all__ = [
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_chunked",
]


def _check_qkv(q, k, v) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x, ndim=4, floating=True)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, H, L, D), got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must share (B, H, L) with q, got q {tuple(q.shape)} and v {tuple(v.shape)}")


def _log_gates(decay, q: torch.Tensor) -> torch.Tensor | None:
    """``decay`` as per-step log gates of shape ``(B or 1, H, L)`` (None when there is no decay)."""
    if decay is None:
        return None
    require_tensor("decay", decay, ndim=(1, 3), floating=True)
    B, H, L, _ = q.shape
    if decay.ndim == 1 and decay.shape != (H,):
        raise ValueError(f"decay of constants must have shape (H,) = ({H},), got {tuple(decay.shape)}")
    if decay.ndim == 3 and decay.shape != (B, H, L):
        raise ValueError(f"decay of per-step gates must have shape (B, H, L) = {(B, H, L)}, got {tuple(decay.shape)}")
    if not bool(((decay > 0) & (decay <= 1)).all()):
        raise ValueError(f"decay values must lie in (0, 1], got min {decay.min().item():.4g} and max {decay.max().item():.4g}")
    log_g = decay.to(q.dtype).log()
    return log_g[None, :, None].expand(1, H, L) if decay.ndim == 1 else log_g


def _augment(v: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Append a column of ones to ``v`` when normalising: the same sums then also give the denominator."""
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1) if normalize else v


def _finish(out: torch.Tensor, normalize: bool) -> torch.Tensor:
    return out[..., :-1] / out[..., -1:] if normalize else out


def _check_state(state, q, v, normalize: bool) -> None:
    if state is None:
        return
    require_tensor("state", state, ndim=4, floating=True)
    B, H, _, D = q.shape
    want = (B, H, D, v.shape[-1] + int(normalize))
    if tuple(state.shape) != want:
        raise ValueError(f"state must have shape (B, H, D, Dv{' + 1' if normalize else ''}) = {want}, got {tuple(state.shape)}")


def linear_attention_parallel(q, k, v, *, decay=None, normalize=False):
    r"""Linear attention as one masked $(L, L)$ product: $O = \big((Q K^\top) \odot \mathcal{D}\big) V$.

    $\mathcal{D}_{ts} = \prod_{r=s+1}^{t} g_r = \exp(c_t - c_s)$ for $s \le t$ (else 0), with $c_t = \sum_{r\le t}\log g_r$;
    for a constant decay $\gamma$ it is RetNet's $\gamma^{t-s}$ :cite:`sun2023retentive`. Costs $O(L^2 D)$ time
    and an $L\times L$ matrix per head. ``q, k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, L, Dv)``.
    """
    _check_qkv(q, k, v)
    log_g = _log_gates(decay, q)
    L = q.shape[2]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    if log_g is None:
        weights = causal.to(q.dtype)
    else:
        c = log_g.cumsum(-1)
        weights = (c[..., :, None] - c[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    out = ((q @ k.transpose(-1, -2)) * weights) @ _augment(v, normalize)
    return _finish(out, normalize)


def linear_attention_recurrent(q, k, v, *, decay=None, normalize=False, state=None, return_state=False):
    r"""Linear attention one step at a time on a $(D, D_v)$ state per head.

    $$ S_t = g_t\, S_{t-1} + k_t v_t^\top, \qquad o_t = S_t^\top q_t, $$

    starting from ``state`` (zeros if None). ``q, k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, L, Dv)``,
    and the final state ``(B, H, D, Dv)`` (``Dv + 1`` with ``normalize``) if ``return_state``.
    :cite:`katharopoulos2020transformers`
    """
    _check_qkv(q, k, v)
    _check_state(state, q, v, normalize)
    log_g = _log_gates(decay, q)
    v = _augment(v, normalize)
    B, H, L, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1]) if state is None else state
    outs = []
    for t in range(L):
        if log_g is not None:
            S = log_g[..., t, None, None].exp() * S
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ S).squeeze(-2))
    out = _finish(torch.stack(outs, dim=2), normalize)
    return (out, S) if return_state else out


def linear_attention_chunked(q, k, v, *, decay=None, normalize=False, chunk_size=64, state=None, return_state=False,
                             custom_backward=False):
    r"""Linear attention in chunks of $C$ positions: quadratic inside a chunk, recurrent between chunks.

    For chunk $n$ with local log-gate sums $b_i$ (from the chunk's start) and incoming state $S_{n-1}$:

    $$ O_n = \big((Q_n K_n^\top) \odot \mathcal{D}_n\big) V_n + (e^{b} \odot Q_n)\, S_{n-1}, \qquad
       S_n = e^{b_C} S_{n-1} + (e^{b_C - b} \odot K_n)^\top V_n , $$

    with $\mathcal{D}_{n,ij} = e^{b_i - b_j}$ for $j \le i$. All chunks' intra terms are one batched product;
    only the $L/C$ state updates are sequential. Cost $O(L C D + L D D_v)$: linear in $L$
    (Lightning Attention's intra/inter split :cite:`qin2024lightning`). A length that is not a multiple of
    ``chunk_size`` is padded with zero keys and unit gates, which change nothing. Long sequences are processed in
    segments of about ``SEGMENT`` positions, the state carried from one to the next, so that the working set
    (scores and per-chunk states) stays in cache and the time per token does not grow with $L$.
    ``q, k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, L, Dv)`` (and the final state if ``return_state``).

    ``custom_backward=True`` computes gradients the Lightning Attention-2 way :cite:`qin2024lightning2`: the
    backward is three more chunked passes, ``dq`` forward in time and ``dk``, ``dv`` backward in time with the state
    carried from the end, so no $L \times L$ tensor is ever stored (``_lightning_backward``). It takes no
    ``state``, ``return_state`` or trainable ``decay``.
    """
    _check_qkv(q, k, v)
    _check_state(state, q, v, normalize)
    C = check_positive_int("chunk_size", chunk_size)
    log_g = _log_gates(decay, q)
    v = _augment(v, normalize)
    if custom_backward:
        if state is not None or return_state or (decay is not None and decay.requires_grad):
            raise ValueError("custom_backward=True takes no state, no return_state and no decay that requires grad")
        return _finish(_LightningChunked.apply(q, k, v, log_g, C), normalize)
    out, S = _segments(q, k, v, log_g, C, q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1]) if state is None else state)
    out = _finish(out, normalize)
    return (out, S) if return_state else out


def _segments(q, k, v, log_g, C: int, S):
    """The chunked form over segments of about ``SEGMENT`` positions, the state carried: ``(out, final state)``.
    A sequence shorter than a chunk is one chunk of its own length, not padded to ``C``."""
    C = min(C, max(q.shape[2], 1))
    segment = C * max(1, SEGMENT // C)
    outs = []
    for start in range(0, q.shape[2], segment):
        part = slice(start, start + segment)
        out, S = _chunks(q[:, :, part], k[:, :, part], v[:, :, part], None if log_g is None else log_g[..., part], C, S)
        outs.append(out)
    return (torch.cat(outs, dim=2) if len(outs) != 1 else outs[0]), S


def _reverse_gates(log_g):
    r"""Log gates for the same sum run backwards in time: $\prod_{r=s+1}^{t} g_r$ over $s \le t$ becomes, with
    $t' = L-1-t$, $\prod_{r'=t'+1}^{s'} g'_{r'}$ if $g'_{r'} = g_{L - r'}$ (and $g'_0 = 1$)."""
    if log_g is None:
        return None
    flipped = log_g.flip(-1)
    return torch.cat([torch.zeros_like(flipped[..., :1]), flipped[..., :-1]], dim=-1)


def _lightning_backward(q, k, v, log_g, C, grad_out):
    r"""Gradients of $o_t = \sum_{s\le t} w_{ts} (q_t\cdot k_s) v_s$ by three chunked passes (no $L\times L$ tensor):

    $$ dq_t = \sum_{s \le t} w_{ts} (do_t \cdot v_s)\, k_s, \qquad dk_s = \sum_{t \ge s} w_{ts} (v_s \cdot do_t)\, q_t,
       \qquad dv_s = \sum_{t \ge s} w_{ts} (k_s \cdot q_t)\, do_t ; $$

    the first is linear attention with (query, key, value) = $(do, v, k)$, the other two are linear attention
    backwards in time (flip, run with the reversed gates, flip back).
    """
    def run(a, b, c, gates):
        return _segments(a, b, c, gates, C, a.new_zeros(*a.shape[:2], a.shape[-1], c.shape[-1]))[0]

    back = _reverse_gates(log_g)
    dq = run(grad_out, v, k, log_g)
    dk = run(v.flip(2), grad_out.flip(2), q.flip(2), back).flip(2)
    dv = run(k.flip(2), q.flip(2), grad_out.flip(2), back).flip(2)
    return dq, dk, dv


class _LightningChunked(torch.autograd.Function):
    """The chunked form with the Lightning Attention-2 backward; saves only q, k, v (and the gates)."""

    @staticmethod
    def forward(ctx, q, k, v, log_g, C):
        ctx.save_for_backward(q, k, v)
        ctx.log_g, ctx.C = log_g, C
        return _segments(q, k, v, log_g, C, q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1]))[0]

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        return (*_lightning_backward(q, k, v, ctx.log_g, ctx.C, grad_out.contiguous()), None, None)


def _chunks(q, k, v, log_g, C: int, S):
    """The chunked form on one segment, from state ``S``: outputs ``(B, H, L, Dv)`` and the state after it."""
    B, H, L, D = q.shape
    Dv = v.shape[-1]
    N = -(-L // C)
    pad = N * C - L

    def chunks(x):
        x = torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x
        return x.reshape(*x.shape[:2], N, C, x.shape[-1])

    qc, kc, vc = chunks(q), chunks(k), chunks(v)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = qc @ kc.transpose(-1, -2)
    if log_g is None:
        scores = scores * causal.to(q.dtype)
        kv = kc.transpose(-1, -2) @ vc
        carry = None
    else:
        b = torch.nn.functional.pad(log_g, (0, pad)).reshape(*log_g.shape[:2], N, C).cumsum(-1)
        scores = scores * (b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        kv = (kc * (b[..., -1:] - b).exp()[..., None]).transpose(-1, -2) @ vc
        carry = b[..., -1].exp()
        qc = qc * b.exp()[..., None]
    prevs = []
    for n in range(N):
        prevs.append(S)
        S = (S if carry is None else carry[:, :, n, None, None] * S) + kv[:, :, n]
    out = qc @ torch.stack(prevs, dim=2) + scores @ vc
    return out.reshape(B, H, N * C, Dv)[:, :, :L], S
