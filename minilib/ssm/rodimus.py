r"""Rodimus :cite:`he2025rodimus`: linear attention whose memory slots forget and write through data-dependent
tempered selection (DDTS), and Rodimus+'s sliding-window attention with one key shared by all heads.

Per position $t$ and memory slot $n$ (the $N$ rows of the state), from the input $x_t$:

$$ g_t = \mathrm{softplus}(W_g x_t + b_g),\qquad \tau_t = \sigma(W_\tau x_t + b_\tau),\qquad
   \log\alpha_t = -\tau_t \odot g_t,\qquad \beta_t = g_t^{\,\tau_t}, $$

$$ S_t = \mathrm{diag}(\alpha_t)\, S_{t-1} + (\beta_t \odot \hat k_t)\, u_t^\top \in \mathbb{R}^{N \times P},
   \qquad o_t = S_t^\top r_t / \sqrt{N},\qquad \hat k_t = k_t / \lVert k_t \rVert . $$

The selection gate $g$ decides how much a token overwrites (a large $g$ forgets and writes a lot), the
temperature $\tau \in (0, 1)$ softens both at once. A gate per memory slot is $N$ scalar-gated heads of state
size 1, so the recurrent SSD form (:func:`~minilib.ssm.ssd_recurrent`) computes the scan one step at a time; the
chunked form is chapter 04's chunked linear attention with a decay per slot instead of per head (gated linear
attention), its $N$ heads summed inside the chunk's score matrix rather than after $N$ products with $u$.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_flag, check_positive_int, require_tensor
from minilib.mixing import TokenMixer, register_mixer
from minilib.ssm.mixers import SSMCache, _causal_depthwise_conv, _check_ssm_call
from minilib.ssm.selective import ssd_recurrent

__all__ = ["ddts_gates", "rodimus_scan", "RodimusMixer", "shared_key_window_attention"]


def ddts_gates(select: torch.Tensor, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""DDTS from the gate logits: $g = \mathrm{softplus}(\text{select})$, $\tau = \sigma(\text{temperature})$,
    returns ``(log_alpha, beta)`` $= (-\tau g,\ g^{\tau})$, each shaped like the logits ``(..., N)``."""
    require_tensor("select", select, floating=True)
    require_tensor("temperature", temperature, floating=True)
    if select.shape != temperature.shape:
        raise ValueError(f"select and temperature must have the same shape, got {tuple(select.shape)} and "
                         f"{tuple(temperature.shape)}")
    g, tau = F.softplus(select), torch.sigmoid(temperature)
    return -tau * g, g ** tau


def rodimus_scan(r, k, u, log_alpha, beta, *, chunk_size: int = 64, recurrent: bool = False, state=None,
                 return_state: bool = False):
    r"""$o_t = S_t^\top r_t / \sqrt N$ with $S_t = \mathrm{diag}(\alpha_t) S_{t-1} + (\beta_t \odot \hat k_t) u_t^\top$.

    ``r, k, log_alpha, beta (B, L, N)``, ``u (B, L, P)``, ``state (B, N, P)`` -> ``o (B, L, P)`` (and the last
    state if ``return_state``). Chunked by default; ``recurrent=True`` runs one step at a time (decoding).
    """
    for name, x in (("r", r), ("k", k), ("log_alpha", log_alpha), ("beta", beta)):
        require_tensor(name, x, ndim=3, floating=True)
    require_tensor("u", u, ndim=3, floating=True)
    if not (r.shape == k.shape == log_alpha.shape == beta.shape) or u.shape[:2] != r.shape[:2]:
        raise ValueError(f"r, k, log_alpha, beta must be (B, L, N) alike and u (B, L, P), got r {tuple(r.shape)}, "
                         f"k {tuple(k.shape)}, log_alpha {tuple(log_alpha.shape)}, beta {tuple(beta.shape)}, u {tuple(u.shape)}")
    Bt, L, N = r.shape
    P = u.shape[-1]
    if state is not None:
        require_tensor("state", state, ndim=3, floating=True)
        if state.shape != (Bt, N, P):
            raise ValueError(f"state must be (B, N, P) = {(Bt, N, P)}, got {tuple(state.shape)}")
    write, read = beta * F.normalize(k, dim=-1), r / math.sqrt(N)
    if recurrent:  # slot n is an SSD head with a state of size 1: x = u for every head, B = write, C = read
        y, S = ssd_recurrent(u[:, :, None, :].expand(Bt, L, N, P), log_alpha, write[..., None], read[..., None],
                             state=None if state is None else state[:, :, None, :], return_state=True)
        o, S = y.sum(dim=2), S[:, :, 0]
    else:
        o, S = _slot_gated_chunked(read, write, u, log_alpha, chunk_size, u.new_zeros(Bt, N, P) if state is None else state)
    return (o, S) if return_state else o


def _slot_gated_chunked(read, write, u, log_alpha, chunk_size: int, S):
    r"""$o_t = \sum_{s \le t} \big(\sum_n \text{read}_{tn}\, e^{c_{tn} - c_{sn}}\, \text{write}_{sn}\big) u_s
    + (\text{read}_t \odot e^{c_t})^\top S_0$ chunk by chunk, $c$ the cumulative ``log_alpha`` inside the chunk.

    The ``(T, T, N)`` decays of a chunk are formed whole (every exponent $\le 0$: no overflow); the state ``S (B, N, P)``
    is handed from chunk to chunk as in :func:`~minilib.ssm.ssd_chunked`. Returns ``(o (B, L, P), last state)``.
    """
    Bt, L, N = read.shape
    if L == 0:
        return u.new_zeros(u.shape), S
    T = min(chunk_size, L)
    nc, pad = -(-L // T), -L % T

    def chunks(x):  # (B, L, X) -> (B, nc, T, X), zero-padded at the end (no decay, nothing written there)
        return F.pad(x, (0, 0, 0, pad)).reshape(Bt, nc, T, x.shape[-1])

    rc, wc, uc = chunks(read), chunks(write), chunks(u)
    cum = chunks(log_alpha).cumsum(dim=2)  # (B, nc, T, N)
    later = torch.ones(T, T, dtype=torch.bool, device=u.device).triu(1)[..., None]
    decay = torch.exp((cum[:, :, :, None] - cum[:, :, None, :]).masked_fill(later, float("-inf")))
    scores = (rc[:, :, :, None] * wc[:, :, None] * decay).sum(dim=-1)  # (B, nc, T, T)
    local = (wc * torch.exp(cum[:, :, -1:] - cum)).transpose(-1, -2) @ uc  # each chunk's own part of its last state
    total = torch.exp(cum[:, :, -1])  # (B, nc, N)
    starts = []
    for c in range(nc):  # the only sequential part: nc state updates
        starts.append(S)
        S = total[:, c, :, None] * S + local[:, c]
    o = scores @ uc + (rc * torch.exp(cum)) @ torch.stack(starts, dim=1)
    return o.reshape(Bt, nc * T, -1)[:, :L], S


class RodimusMixer(TokenMixer):
    r"""The Rodimus block :cite:`he2025rodimus` as a token mixer: $[x; z] = W_{\text{in}} h$, a short causal
    convolution with SiLU, $r, k$ and the DDTS gate logits from it, the scan of :func:`rodimus_scan` over
    $u = x$ with ``mem_size`` slots, a learned residual of the convolved input, the gate $\mathrm{SiLU}(z)$ and
    $W_{\text{out}}$. The decoding state is the convolution's tail and the ``(mem_size, d_inner)`` memory.

    The gate biases start as in the paper: $e^{-\mathrm{softplus}(b_g)}$ in $[0.9, 0.999]$ (long memory) and
    $\tau$ uniform in $[1/16, 0.9]$; they are parameters of their own, so a model's generic Linear init keeps them.
    ``gated=False`` fixes $\alpha = \beta = 1$: plain (ungated) linear attention with the same state, the baseline.
    """

    causal = True

    def __init__(self, d_model: int, *, mem_size: int = 16, expand: int = 2, d_conv: int = 4, chunk_size: int = 64,
                 gated: bool = True):
        super().__init__()
        for name, value in (("d_model", d_model), ("mem_size", mem_size), ("expand", expand), ("d_conv", d_conv),
                            ("chunk_size", chunk_size)):
            check_positive_int(name, value)
        self.d_model, self.mem_size, self.d_inner, self.chunk_size = d_model, mem_size, expand * d_model, chunk_size
        self.gated = check_flag("gated", gated)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner)
        self.rk_proj = nn.Linear(self.d_inner, 2 * mem_size, bias=False)
        self.gate_proj = nn.Linear(self.d_inner, 2 * mem_size, bias=False)
        keep = 1 - torch.exp(torch.empty(mem_size).uniform_(math.log(1e-3), math.log(1e-1)))  # alpha in [0.9, 0.999]
        g = -torch.log(keep)
        tau = torch.empty(mem_size).uniform_(1 / 16, 0.9)
        self.gate_bias = nn.Parameter(torch.cat([g + torch.log(-torch.expm1(-g)), torch.logit(tau)]))
        self.residual_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def new_cache(self) -> SSMCache:
        return SSMCache()

    def forward(self, x: torch.Tensor, *, cache: SSMCache | None = None) -> torch.Tensor:
        _check_ssm_call(x, self.d_model, cache)
        u, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(_causal_depthwise_conv(self.conv, u, cache))
        r, k = self.rk_proj(xs).chunk(2, dim=-1)
        log_alpha, beta = ddts_gates(*(self.gate_proj(xs) + self.gate_bias).chunk(2, dim=-1))
        if not self.gated:
            log_alpha, beta = torch.zeros_like(log_alpha), torch.ones_like(beta)
        state = None if cache is None else cache.state
        o, state = rodimus_scan(r, k, u, log_alpha, beta, chunk_size=self.chunk_size, recurrent=x.shape[1] == 1,
                                state=state, return_state=True)
        if cache is not None:
            cache.state, cache.length = state, cache.length + x.shape[1]
        return self.out_proj((o + self.residual_weight * xs) * F.silu(z))


def shared_key_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int) -> torch.Tensor:
    r"""Rodimus+'s sliding-window shared-key attention (SW-SKA): every head reads the same keys,

    $$ o^h_t = \sum_{t - w < s \le t} \mathrm{softmax}_s\!\big(q^h_t \cdot k_s / \sqrt{D}\big)\, v^h_s , $$

    ``q, v (B, H, L, D)``, ``k (B, 1, L, D)`` (one key per token), ``window`` $w$ -> ``(B, H, L, D)``. A decoding
    cache holds $w$ keys of size $D$ for all heads together instead of $H$ of them. See :cite:`he2025rodimus`.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t, ndim=4, floating=True)
    check_positive_int("window", window)
    B, H, L, D = q.shape
    if k.shape != (B, 1, L, D) or v.shape[:3] != (B, H, L):
        raise ValueError(f"k must be (B, 1, L, D) = {(B, 1, L, D)} and v (B, H, L, D_v) = {(B, H, L)} + (D_v,), got "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    t = torch.arange(L, device=q.device)
    lag = t[:, None] - t[None, :]
    scores = scores.masked_fill((lag < 0) | (lag >= window), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


register_mixer("rodimus", lambda config, layer: RodimusMixer(config.d_model, **config.mixer_kwargs))
