r"""Selective (input-dependent) state-space scans: Mamba's diagonal form and the scalar-decay SSD form.

Mamba :cite:`gu2023mamba` makes the step $\Delta_t$ and the projections $B_t, C_t$ functions of the input,
so the model is no longer a convolution. Per channel $c$ and state index $n$ (ZOH for $A$, Euler for $B$):

$$ h_{t} = e^{\Delta_{t} A}\, h_{t-1} + \Delta_{t} B_t\, u_{t}, \qquad y_{t} = \langle C_t, h_{t}\rangle + D u_{t}. $$

The recurrence is an affine map $h \mapsto a_t h + b_t$, and affine maps compose associatively, so the
same outputs come from a loop (:func:`selective_scan_recurrent`), a log-depth scan over all positions
(:func:`selective_scan_parallel`) or chunk by chunk with the state handed on
(:func:`selective_scan_chunked`). Unrolled, $y = M u$ with a lower-triangular (semiseparable) $M$
(:func:`ssm_matrix`). With a scalar decay per head (Mamba-2, SSD :cite:`dao2024ssd`) $M$ is masked
linear attention with $q = C$, $k = B$ and a decay mask, and the chunked form is matrix products
(:func:`ssd_chunked`).

Shapes: ``u, delta (Bt, L, C)``, ``A (C, N)`` (negative real part), ``B, C (Bt, L, N)``, ``D (C,)``,
state ``(Bt, C, N)``. A complex ``A`` (one of each conjugate pair) gives a complex state and
$y_t = 2\,\mathrm{Re}\langle C_t, h_t\rangle$, as in :func:`~minilib.ssm.s4d_kernel`.
"""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int, require_tensor
from minilib.scan import ScanCounter, associative_scan

__all__ = ["selective_scan_recurrent", "selective_scan_parallel", "selective_scan_chunked", "ssm_matrix",
           "ssd_recurrent", "ssd_chunked", "ssd_matrix", "linear_recurrence_combine"]

# the inside of a chunk uses cumulative sums of exp(-log decay) while its decay range (in nats) stays below this
# bound, else a log-depth scan: with the midpoint offset exp() sees at most half the range, and overflows beyond
_CUMSUM_RANGE = {torch.float32: 150.0, torch.complex64: 150.0, torch.float64: 1200.0, torch.complex128: 1200.0}


def linear_recurrence_combine(first, second):
    r"""$(a, b) \oplus (a', b') = (a a', a' b + b')$: $h \mapsto a h + b$ followed by $h \mapsto a' h + b'$."""
    return first[0] * second[0], second[0] * first[1] + second[1]


def _check_selective(u, delta, A, B, C, D, state):
    require_tensor("u", u, ndim=3, floating=True)
    require_tensor("delta", delta, ndim=3, floating=True)
    require_tensor("A", A, ndim=2)
    Bt, L, Ch = u.shape
    N = A.shape[1]
    if delta.shape != u.shape:
        raise ValueError(f"delta must have the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.shape[0] != Ch:
        raise ValueError(f"A must be (C, N) with C = {Ch} channels of u {tuple(u.shape)}, got {tuple(A.shape)}")
    for name, x in (("B", B), ("C", C)):
        require_tensor(name, x, ndim=3)
        if x.shape != (Bt, L, N):
            raise ValueError(f"{name} must be (Bt, L, N) = {(Bt, L, N)} for u {tuple(u.shape)} and A "
                             f"{tuple(A.shape)}, got {tuple(x.shape)}")
    if D is not None:
        require_tensor("D", D, ndim=1)
        if D.shape[0] != Ch:
            raise ValueError(f"D must be (C,) = ({Ch},), got {tuple(D.shape)}")
    if state is not None:
        require_tensor("state", state, ndim=3)
        if state.shape != (Bt, Ch, N):
            raise ValueError(f"state must be (Bt, C, N) = {(Bt, Ch, N)}, got {tuple(state.shape)}")


def _state_dtype(u, A, B, C, state):
    dtype = u.dtype
    for x in (A, B, C, state):
        if x is not None:
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def _readout(h, C, u, D):
    """$y = \\langle C, h\\rangle (+ D u)$; ``h (Bt, T, Ch, N)``, ``C (Bt, T, N)``; 2 Re for a complex state."""
    y = torch.einsum("btcn,btn->btc", h, C.to(h.dtype))
    y = 2 * y.real if y.is_complex() else y
    return y.to(u.dtype) if D is None else (y + D * u).to(u.dtype)


def _affine_terms(u, delta, A, B, dtype):
    """$a_t = e^{\\Delta_t A}$ and $b_t = \\Delta_t u_t B_t$, both ``(Bt, L, C, N)``."""
    a = torch.exp(delta[..., None].to(dtype) * A.to(dtype))
    b = (delta * u)[..., None].to(dtype) * B[:, :, None, :].to(dtype)
    return a, b


def selective_scan_recurrent(u, delta, A, B, C, D=None, *, state=None, return_state: bool = False):
    r"""The selective scan as a loop over positions, one ``(Bt, C, N)`` state at a time.

    $h_t = e^{\Delta_t A} h_{t-1} + \Delta_t B_t u_t$, $y_t = \langle C_t, h_t\rangle + D u_t$, starting
    from ``state`` (default zeros). Returns ``y (Bt, L, C)`` (and the last state if ``return_state``).
    """
    _check_selective(u, delta, A, B, C, D, state)
    dtype = _state_dtype(u, A, B, C, state)
    Bt, L, Ch = u.shape
    h = torch.zeros(Bt, Ch, A.shape[1], dtype=dtype, device=u.device) if state is None else state.to(dtype)
    ys = []
    for t in range(L):
        a, b = _affine_terms(u[:, t:t + 1], delta[:, t:t + 1], A, B[:, t:t + 1], dtype)
        h = a[:, 0] * h + b[:, 0]
        ys.append(_readout(h[:, None], C[:, t:t + 1], u[:, t:t + 1], D))
    y = torch.cat(ys, dim=1) if ys else u.new_zeros(u.shape)
    return (y, h) if return_state else y


def selective_scan_parallel(u, delta, A, B, C, D=None, *, state=None, return_state: bool = False,
                            method: str = "blelloch", counter: ScanCounter | None = None):
    r"""The selective scan as one associative scan over all ``L`` positions (log depth, all states stored).

    Scans the pairs $(a_t, b_t) = (e^{\Delta_t A}, \Delta_t B_t u_t)$ with
    :func:`linear_recurrence_combine`; the initial state enters as $b_0 \leftarrow a_0 h_{-1} + b_0$.
    ``method``/``counter`` go to :func:`~minilib.scan.associative_scan`. Materialises ``(Bt, L, C, N)``.
    """
    _check_selective(u, delta, A, B, C, D, state)
    dtype = _state_dtype(u, A, B, C, state)
    a, b = _affine_terms(u, delta, A, B, dtype)
    if state is not None and u.shape[1] > 0:
        b = torch.cat([b[:, :1] + a[:, :1] * state[:, None].to(dtype), b[:, 1:]], dim=1)
    _, h = associative_scan(linear_recurrence_combine, (a, b), dim=1, method=method, counter=counter)
    y = _readout(h, C, u, D)
    if not return_state:
        return y
    last = h[:, -1] if u.shape[1] > 0 else torch.zeros_like(b[:, 0]) if state is None else state.to(dtype)
    return y, last


def _chunk_states(delta, A, b, h0):
    r"""All states of one chunk, $h_t = e^{c_t} h_0 + \sum_{s \le t} e^{c_t - c_s} b_s$, $c_t = A \sum_{r\le t} \Delta_r$
    (``h0`` None: a zero state, whose term is skipped), by a log-depth scan: the form for complex states and for a
    decay range too wide for :class:`_ChunkScan`. ``delta (Bt, T, C)``, ``A (C, N)``, ``b`` and the states
    ``(Bt, T, C, N)``.
    """
    log_a = delta[..., None] * A
    if h0 is not None:
        b = torch.cat([b[:, :1] + torch.exp(log_a[:, :1]) * h0[:, None], b[:, 1:]], dim=1)
    return associative_scan(linear_recurrence_combine, (torch.exp(log_a), b), dim=1)[1]


def _cumsum_over_time(x: torch.Tensor, *, reverse: bool = False) -> torch.Tensor:
    """``x.cumsum(dim=1)`` for ``x (Bt, T, ...)`` (from the end if ``reverse``), as the product with the ``(T, T)``
    lower (upper) triangle of ones, which a CPU runs faster than a cumulative sum along a strided dimension."""
    Bt, T = x.shape[:2]
    ones = torch.ones(T, T, dtype=x.dtype, device=x.device)
    return ((ones.triu() if reverse else ones.tril()) @ x.reshape(Bt, T, -1)).view(x.shape)


class _ChunkScan(torch.autograd.Function):
    r"""One chunk of the real selective scan by cumulative sums, its gradient written out.

    Forward: with $\Lambda_t = \sum_{r \le t} \Delta_r$, $c_t = A \Lambda_t$ and $b_t = \Delta_t u_t B_t$,
    $h_t = e^{c_t} h_0 + e^{c_t - m} \sum_{s \le t} e^{m - c_s} b_s$ ($m$ the middle of the chunk's range, so
    neither factor overflows) and $y_t = \langle C_t, h_t \rangle$; returns ``y (Bt, T, C)`` and the last state.

    Backward, from $\hat g_t = \partial y_t \otimes C_t$ (plus the last state's gradient at $t = T - 1$): the
    adjoint $\lambda_s = \sum_{t \ge s} e^{c_t - c_s} \hat g_t$ is the same two-factor sum run from the end, then
    $\partial b = \lambda$, $\partial c_t = \hat g_t h_t - \lambda_t b_t$ and $\partial h_0 = e^{c_0} \lambda_0$.
    Autograd through the forward takes about twice the passes over the ``(Bt, T, C, N)`` states.
    """

    @staticmethod
    def forward(ctx, delta, u, A, B, C, h0):
        lam = delta.cumsum(dim=1)
        centred = (lam - (lam[:, :1] + lam[:, -1:]) / 2)[..., None]
        grow, shrink = torch.exp(centred * A), torch.exp(centred * -A)  # e^{c - m}, e^{m - c}
        w = delta * u
        h = grow * _cumsum_over_time(shrink * (w[..., None] * B[:, :, None, :]))
        decay = None
        if h0 is not None:
            decay = torch.exp(lam[..., None] * A)
            h = h + decay * h0[:, None]
        ctx.save_for_backward(delta, u, A, B, C, lam, grow, shrink, h, decay)
        return (h @ C[..., None])[..., 0], h[:, -1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_last):
        delta, u, A, B, C, lam, grow, shrink, h, decay = ctx.saved_tensors
        g = grad_y[..., None] * C[:, :, None, :]
        if grad_last is not None:
            g[:, -1] += grad_last
        adjoint = shrink * _cumsum_over_time(grow * g, reverse=True)
        w = delta * u
        grad_c = g * h - adjoint * (w[..., None] * B[:, :, None, :])
        grad_w = (adjoint @ B[..., None])[..., 0]
        grad_lam = (grad_c * A).sum(dim=-1)
        grad_delta = grad_lam.flip(1).cumsum(dim=1).flip(1) + grad_w * u
        grad_B = (w[:, :, None, :] @ adjoint)[:, :, 0]
        grad_C = (grad_y[:, :, None, :] @ h)[:, :, 0]
        grad_A = (grad_c * lam[..., None]).sum(dim=(0, 1))
        grad_h0 = None if decay is None else decay[:, 0] * adjoint[:, 0]
        return grad_delta, grad_w * delta, grad_A, grad_B, grad_C, grad_h0


def _chunk_scan(delta, u, A, B, C, h0):
    """One chunk: ``y (Bt, T, C)`` without the ``D`` term, and the state after it. Real states whose decay range
    fits the dtype take :class:`_ChunkScan`; complex ones or too wide a range, :func:`_chunk_states`."""
    span = float((delta[:, 1:].real.sum(dim=1)[..., None] * -A.real).amax().detach()) if delta.shape[1] > 1 else 0.0
    if not A.is_complex() and span <= _CUMSUM_RANGE.get(A.dtype, 0.0):  # span: the range of c inside the chunk
        return _ChunkScan.apply(delta, u, A, B, C, h0)
    hs = _chunk_states(delta, A, (delta * u)[..., None] * B[:, :, None, :], h0)
    return _readout(hs, C, u.real if u.is_complex() else u, None), hs[:, -1]


def selective_scan_chunked(u, delta, A, B, C, D=None, *, chunk_size: int = 64, state=None,
                           return_state: bool = False):
    r"""The selective scan chunk by chunk: within a chunk all states at once, between chunks one state.

    For each chunk of ``chunk_size`` positions the states $h_t = e^{c_t} h_0 + \sum_{s\le t}
    e^{c_t - c_s} b_s$ (with $c_t$ the cumulative $\Delta A$ since the chunk's start and $h_0$ the
    state handed over from the previous chunk) are formed by cumulative sums (:class:`_ChunkScan`), read out, and
    only the last one is kept: memory ``(Bt, chunk_size, C, N)``, never ``(Bt, L, C, N)``. A chunk whose decay
    range is too wide for $e^{\pm c}$ in its dtype, or a complex state, is scanned in log depth instead.
    """
    _check_selective(u, delta, A, B, C, D, state)
    check_positive_int("chunk_size", chunk_size)
    work = _state_dtype(u, A, B, C, state)
    Bt, L, Ch = u.shape
    h = None if state is None else state.to(work)  # None: zeros, skipped in the first chunk
    ys = []
    for start in range(0, L, chunk_size):
        part = slice(start, min(start + chunk_size, L))
        y, h = _chunk_scan(*(x.to(work) for x in (delta[:, part], u[:, part], A, B[:, part], C[:, part])), h)
        ys.append(y.to(u.dtype) if D is None else (y + D * u[:, part]).to(u.dtype))
    y = torch.cat(ys, dim=1) if ys else u.new_zeros(u.shape)
    if not return_state:
        return y
    return y, torch.zeros(Bt, Ch, A.shape[1], dtype=work, device=u.device) if h is None else h


def ssm_matrix(delta, A, B, C, D=None) -> torch.Tensor:
    r"""The ``(Bt, C, L, L)`` mixing matrix of the selective scan, $y_{\cdot c} = M_c\, u_{\cdot c}$:

    $$ M_{c,ts} = \sum_n C_{tn}\, e^{A_{cn} \sum_{r=s+1}^{t} \Delta_{rc}}\, \Delta_{sc} B_{sn}\ (s \le t),
       \qquad M_{c,tt} \mathrel{+}= D_c, $$

    zero above the diagonal: a semiseparable matrix of rank $\le N$ below the diagonal
    :cite:`dao2024ssd`. Materialises ``(Bt, C, L, L, N)``: for pictures and tests at small ``L``.
    """
    u = torch.zeros_like(delta)
    _check_selective(u, delta, A, B, C, D, None)
    dtype = _state_dtype(delta, A, B, C, None)
    L = delta.shape[1]
    cum = delta.to(dtype).cumsum(dim=1)  # (Bt, L, C)
    gap = (cum[:, :, None] - cum[:, None, :]).permute(0, 3, 1, 2)  # (Bt, C, t, s): sum_{r=s+1..t} delta_r
    causal = torch.ones(L, L, dtype=torch.bool, device=delta.device).tril()
    decay = torch.exp(gap[..., None] * A.to(dtype)[None, :, None, None, :]) * causal[..., None]
    M = torch.einsum("btn,bctsn,bsn->bcts", C.to(dtype), decay, B.to(dtype)) * delta.to(dtype).transpose(1, 2)[:, :, None, :]
    M = 2 * M.real if M.is_complex() else M
    if D is not None:
        M = M + torch.diag_embed(D.to(M.dtype)[None, :, None].expand(M.shape[0], -1, L))
    return M


def _check_ssd(x, log_a, B, C, state):
    require_tensor("x", x, ndim=4, floating=True)
    require_tensor("log_a", log_a, ndim=3, floating=True)
    Bt, L, H, P = x.shape
    if log_a.shape != (Bt, L, H):
        raise ValueError(f"log_a must be (Bt, L, H) = {(Bt, L, H)} for x {tuple(x.shape)}, got {tuple(log_a.shape)}")
    require_tensor("B", B, ndim=4, floating=True)
    N = B.shape[-1]
    for name, t in (("B", B), ("C", C)):
        require_tensor(name, t, ndim=4, floating=True)
        if t.shape != (Bt, L, H, N):
            raise ValueError(f"{name} must be (Bt, L, H, N) = {(Bt, L, H, N)} for x {tuple(x.shape)}, got {tuple(t.shape)}")
    if state is not None:
        require_tensor("state", state, ndim=4, floating=True)
        if state.shape != (Bt, H, N, P):
            raise ValueError(f"state must be (Bt, H, N, P) = {(Bt, H, N, P)}, got {tuple(state.shape)}")


def ssd_recurrent(x, log_a, B, C, *, state=None, return_state: bool = False):
    r"""Scalar-decay selective SSM (SSD, Mamba-2 :cite:`dao2024ssd`) as a loop over positions:

    $$ H_t = a_t H_{t-1} + B_t x_t^\top \in \mathbb{R}^{N\times P},\qquad y_t = H_t^\top C_t,\qquad a_t = e^{\log a_t}. $$

    ``x (Bt, L, H, P)`` (heads of size ``P``), ``log_a (Bt, L, H)`` (e.g. $\Delta_t A_h$), ``B, C (Bt, L, H, N)``,
    ``state (Bt, H, N, P)``. Returns ``y (Bt, L, H, P)`` (and the last state if ``return_state``).
    """
    _check_ssd(x, log_a, B, C, state)
    Bt, L, H, P = x.shape
    S = x.new_zeros(Bt, H, B.shape[-1], P) if state is None else state
    ys = []
    for t in range(L):
        S = torch.exp(log_a[:, t])[..., None, None] * S + B[:, t, :, :, None] * x[:, t, :, None, :]
        ys.append(torch.einsum("bhnp,bhn->bhp", S, C[:, t]))
    y = torch.stack(ys, dim=1) if ys else torch.zeros_like(x)
    return (y, S) if return_state else y


def _segment_decay(cum):
    """``(..., T, T)`` with entry ``[t, s]`` $= e^{c_t - c_s}$ for $s \\le t$ and 0 above, from ``cum (..., T)``: no overflow."""
    T = cum.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=cum.device).tril()
    return torch.exp((cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, float("-inf")))


def ssd_matrix(log_a, B, C) -> torch.Tensor:
    r"""The ``(Bt, H, L, L)`` mixing matrix of :func:`ssd_recurrent`: $M_{ts} = \langle C_t, B_s\rangle
    \prod_{r=s+1}^{t} a_r$ for $s \le t$ — causal linear attention with $q = C$, $k = B$ and a decay mask."""
    _check_ssd(B[..., :1], log_a, B, C, None)
    return torch.einsum("bthn,bshn->bhts", C, B) * _segment_decay(log_a.cumsum(dim=1).transpose(1, 2))


def ssd_chunked(x, log_a, B, C, *, chunk_size: int = 64, state=None, return_state: bool = False):
    r""":func:`ssd_recurrent` chunk by chunk with matrix products inside each chunk :cite:`dao2024ssd`, all chunks at once:

    $$ Y_{\text{chunk}} = \big((C B^\top) \odot \Gamma\big) X + e^{c} \odot (C H_0),\qquad
       H_{\text{next}} = e^{c_T} H_0 + \sum_s e^{c_T - c_s} B_s x_s^\top, $$

    with $\Gamma_{ts} = e^{c_t - c_s}$ ($s \le t$) and $c$ the cumulative $\log a$ inside the chunk. The
    intra-chunk products and each chunk's contribution to its final state are batched over all chunks;
    only the hand-over of the ``(Bt, H, N, P)`` state from chunk to chunk is a loop.
    """
    _check_ssd(x, log_a, B, C, state)
    check_positive_int("chunk_size", chunk_size)
    Bt, L, H, P = x.shape
    N = B.shape[-1]
    S = x.new_zeros(Bt, H, N, P) if state is None else state
    if L == 0:
        return (torch.zeros_like(x), S) if return_state else torch.zeros_like(x)
    T = min(chunk_size, L)
    nc, pad = -(-L // T), -L % T

    def chunks(t):  # (Bt, L, H, ...) -> (Bt, H, nc, T, ...), zero-padded at the end (a = 1, B = x = 0 there)
        t = torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, pad))
        return t.reshape(Bt, nc, T, *t.shape[2:]).movedim(3, 1)

    xc, Bc, Cc = chunks(x), chunks(B), chunks(C)
    cum = chunks(log_a[..., None])[..., 0].cumsum(dim=-1)  # (Bt, H, nc, T)
    # inside every chunk at once: masked "attention" with the decay mask
    y = ((Cc @ Bc.transpose(-1, -2)) * _segment_decay(cum)) @ xc
    # each chunk's own contribution to the state at its end, and its total decay
    local = (Bc * torch.exp(cum[..., -1:] - cum)[..., None]).transpose(-1, -2) @ xc  # (Bt, H, nc, N, P)
    decay = torch.exp(cum[..., -1])  # (Bt, H, nc)
    starts = []
    for c in range(nc):  # the only sequential part: nc small state updates
        starts.append(S)
        S = decay[:, :, c, None, None] * S + local[:, :, c]
    y = y + torch.exp(cum)[..., None] * (Cc @ torch.stack(starts, dim=2))
    y = y.movedim(1, 3).reshape(Bt, nc * T, H, P)[:, :L]
    return (y, S) if return_state else y
