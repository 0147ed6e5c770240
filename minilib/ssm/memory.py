r"""Memories beside the sequence: a linear memory updated by gradient steps while it reads (ATLAS's Omega rule),
and a gated memory bank read and written segment by segment (LM2).

Titans :cite:`behrouz2025titans` and ATLAS :cite:`behrouz2025atlas` treat a layer's state as the weights of a
memory $M$ trained *during inference* on an associative loss. ATLAS's Omega rule optimises the loss over a
sliding window of the last $c$ tokens instead of only the current one,

$$ M_t = M_{t-1} - \eta \nabla_M \sum_{i=t-c+1}^{t} \tfrac12\lVert M k_i - v_i\rVert^2
       = M_{t-1} - \eta \sum_{i=t-c+1}^{t} (M_{t-1} k_i - v_i)\, k_i^\top,\qquad y_t = M_t q_t . $$

With $c = 1$ this is the delta rule $M_t = M_{t-1}(I - \eta k_t k_t^\top) + \eta\, v_t k_t^\top$.
Because the loss is quadratic in a *linear* memory, each step is affine in $M$,
$M_t = M_{t-1} A_t + B_t$ with $A_t = I - \eta\sum_i k_i k_i^\top$ and $B_t = \eta \sum_i v_i k_i^\top$, and
neither $A_t$ nor $B_t$ depends on $M$: :func:`omega_memory_chunked` forms them for a whole chunk at once and
composes them with the log-depth :func:`~minilib.scan.associative_scan`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_last_dim, check_number, check_positive_int, require_tensor
from minilib.scan import associative_scan

__all__ = ["omega_memory", "omega_memory_chunked", "GatedMemory"]


def _check_omega(k, v, q, window, state):
    for name, x in (("k", k), ("v", v), ("q", q)):
        require_tensor(name, x, ndim=3, floating=True)
    check_positive_int("window", window)
    if q.shape != k.shape or v.shape[:2] != k.shape[:2]:
        raise ValueError(f"k and q must be (B, L, d_k) and v (B, L, d_v) alike, got k {tuple(k.shape)}, "
                         f"q {tuple(q.shape)}, v {tuple(v.shape)}")
    B, _, dk = k.shape
    if state is None:
        return k.new_zeros(B, v.shape[-1], dk)
    require_tensor("state", state, ndim=3, floating=True)
    if state.shape != (B, v.shape[-1], dk):
        raise ValueError(f"state must be (B, d_v, d_k) = {(B, v.shape[-1], dk)}, got {tuple(state.shape)}")
    return state


def omega_memory(k: torch.Tensor, v: torch.Tensor, q: torch.Tensor, *, window: int = 1, lr: float = 0.5,
                 state: torch.Tensor | None = None, return_state: bool = False):
    r"""Read ``q`` from a linear memory trained online with the Omega rule over the last ``window`` pairs.

    ``k, q (B, L, d_k)``, ``v (B, L, d_v)``, ``state`` ``(B, d_v, d_k)`` (default zeros) -> ``y (B, L, d_v)``
    (and the final memory if ``return_state``). The memory has the same size for every ``window``. The
    token-by-token teaching form; :func:`omega_memory_chunked` computes the same thing chunk-parallel.
    """
    M = _check_omega(k, v, q, window, state)
    check_number("lr", lr)
    B, L, dk = k.shape
    ys = []
    for t in range(L):
        lo = max(0, t - window + 1)
        kw, vw = k[:, lo:t + 1], v[:, lo:t + 1]  # (B, c, d)
        residual = torch.einsum("bvk,bck->bcv", M, kw) - vw
        M = M - lr * torch.einsum("bcv,bck->bvk", residual, kw)
        ys.append(torch.einsum("bvk,bk->bv", M, q[:, t]))
    y = torch.stack(ys, dim=1) if ys else v.new_zeros(B, 0, v.shape[-1])
    return (y, M) if return_state else y


def _compose_affine(first, second):
    r"""$(A_1, B_1)$ then $(A_2, B_2)$ on $M \mapsto M A + B$: $(A_1 A_2,\ B_1 A_2 + B_2)$."""
    (A1, B1), (A2, B2) = first, second
    return A1 @ A2, B1 @ A2 + B2


def omega_memory_chunked(k: torch.Tensor, v: torch.Tensor, q: torch.Tensor, *, window: int = 1, lr: float = 0.5,
                         chunk_size: int = 64, state: torch.Tensor | None = None, return_state: bool = False):
    r""":func:`omega_memory` chunk-parallel, exactly: every step of a chunk at once, one memory handed between chunks.

    Each step is the affine map $M \mapsto M A_t + B_t$ with
    $A_t = I - \eta \sum_{i=t-c+1}^{t} k_i k_i^	op$ ``(d_k, d_k)`` and $B_t = \eta \sum_{i=t-c+1}^{t} v_i k_i^	op$
    ``(d_v, d_k)``, built from the inputs alone. Inside a chunk the prefix compositions
    $(P_j, S_j) = (A_{s+1}\cdots A_{s+j},\ \dots)$ come from :func:`~minilib.scan.associative_scan`
    (log depth), so $M_{s+j} = M_s P_j + S_j$ and $y_t = M_t q_t$ for all $j$ at once. Memory
    ``(B, chunk_size, d_k, d_k + d_v)``, never ``(B, L, ...)``.

    This is *not* ATLAS's training trick :cite:`behrouz2025atlas` (Titans' too), which takes every gradient of a
    chunk at the memory of the chunk's start and so changes the model unless ``chunk_size = 1``; the linear
    memory's affine steps make the exact form parallel as well, at $O(d_k^3)$ work per step instead of
    $O(c\, d_k d_v)$. Shapes and arguments as :func:`omega_memory`.
    """
    M = _check_omega(k, v, q, window, state)
    check_number("lr", lr)
    check_positive_int("chunk_size", chunk_size)
    B, L, dk = k.shape
    eye = torch.eye(dk, dtype=k.dtype, device=k.device)
    ys = []
    for start in range(0, L, chunk_size):
        stop = min(start + chunk_size, L)
        lo = max(0, start - window + 1)
        pad = window - 1 - (start - lo)  # zero keys/values before position 0 add nothing to the window sums
        kw = F.pad(k[:, lo:stop], (0, 0, pad, 0)).unfold(1, window, 1)  # (B, T, d_k, c)
        vw = F.pad(v[:, lo:stop], (0, 0, pad, 0)).unfold(1, window, 1)  # (B, T, d_v, c)
        A = eye - lr * torch.einsum("btic,btjc->btij", kw, kw)
        Bt = lr * torch.einsum("btvc,btkc->btvk", vw, kw)
        P, S = associative_scan(_compose_affine, (A, Bt), dim=1)
        Ms = torch.einsum("bvi,btij->btvj", M, P) + S  # (B, T, d_v, d_k): the memory after each step
        ys.append(torch.einsum("btvk,btk->btv", Ms, q[:, start:stop]))
        M = Ms[:, -1]
    y = torch.cat(ys, dim=1) if ys else v.new_zeros(B, 0, v.shape[-1])
    return (y, M) if return_state else y


class GatedMemory(nn.Module):
    r"""A memory bank of ``n_slots`` vectors beside a block, read and written segment by segment, in the spirit of
    LM2 :cite:`kang2025lm2`. For a segment $X \in \mathbb{R}^{T\times d}$ and the memory $M \in \mathbb{R}^{N\times d}$:

    $$ E = \mathrm{softmax}\!\big(XW_Q (MW_K)^\top/\sqrt d\big)\, MW_V,\qquad
       Y = X + \sigma(E W_{\text{out}}) \odot E \quad\text{(read: tokens attend to the slots, output gate)}, $$

    $$ U = \mathrm{softmax}\!\big(MW_Q' (XW_K')^\top/\sqrt d\big)\, XW_V',\qquad
       M' = \sigma(U W_{\text{in}}) \odot \tanh(U) + \sigma(U W_{\text{forget}}) \odot M
       \quad\text{(write: slots attend to the tokens, input and forget gates)}. $$

    ``forward(x (B, T, d), memory (B, N, d) or None)`` returns ``(Y, M')``; ``None`` starts from the learned initial
    memory. The memory path is added to the token stream, so the block's own flow is left as it was.
    """

    def __init__(self, d_model: int, n_slots: int):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_slots", n_slots)
        self.d_model, self.n_slots = d_model, n_slots
        self.initial = nn.Parameter(torch.randn(n_slots, d_model) / d_model ** 0.5)
        self.read_q, self.read_k, self.read_v, self.out_gate = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.write_q, self.write_k, self.write_v = (nn.Linear(d_model, d_model, bias=False) for _ in range(3))
        self.in_gate, self.forget_gate = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_last_dim("x", x, self.d_model, ndim=3)
        if memory is None:
            memory = self.initial.to(x.dtype).expand(x.shape[0], self.n_slots, self.d_model)
        require_tensor("memory", memory, ndim=3, floating=True)
        if memory.shape != (x.shape[0], self.n_slots, self.d_model):
            raise ValueError(f"memory must be (B, n_slots, d_model) = {(x.shape[0], self.n_slots, self.d_model)}, "
                             f"got {tuple(memory.shape)}")
        scale = self.d_model ** -0.5
        read = torch.softmax(self.read_q(x) @ self.read_k(memory).transpose(1, 2) * scale, dim=-1) @ self.read_v(memory)
        y = x + torch.sigmoid(self.out_gate(read)) * read
        update = torch.softmax(self.write_q(memory) @ self.write_k(x).transpose(1, 2) * scale, dim=-1) @ self.write_v(x)
        new_memory = torch.sigmoid(self.in_gate(update)) * torch.tanh(update) + torch.sigmoid(self.forget_gate(update)) * memory
        return y, new_memory
