r"""Other roads to sub-quadratic cost: low-rank keys (Linformer), flow conservation (Flowformer), kernelized
attention with relative positions by FFT."""
from __future__ import annotations

import torch

from minilib._checks import default_scale, require_tensor

__all__ = ["linear_attention_noncausal", "linformer_attention", "flow_attention", "kernelized_rpe_fft",
           "simplified_linear_attention"]


def _check_same_length(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x, ndim=4, floating=True)
    if k.shape[:3] != v.shape[:3] or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"need q (B, H, T, D), k (B, H, L, D), v (B, H, L, Dv); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")


def linear_attention_noncausal(q, k, v, *, normalize: bool = True):
    r"""Linear attention of an encoder, every query over every key: $O = \phi(Q)\,(\phi(K)^\top V)$.

    $$ o_i = \frac{q_i^\top \sum_j k_j v_j^\top}{q_i^\top \sum_j k_j} $$

    (``q``, ``k`` already feature-mapped; the denominator only with ``normalize``). Cost $O(L D D_v)$: the
    $D \times D_v$ summary is built once. ``q (B, H, T, D)``, ``k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, T, Dv)``.
    :cite:`katharopoulos2020transformers`
    """
    _check_same_length(q, k, v)
    out = q @ (k.transpose(-1, -2) @ v)
    return out / (q @ k.sum(2)[..., None]) if normalize else out


def linformer_attention(q, k, v, E, F, *, scale=None):
    r"""Linformer :cite:`wang2020linformer`: softmax attention over $k$ projected keys and values.

    $$ \operatorname{Attention}(Q, EK, FV) = \operatorname{softmax}\!\big(s\, Q (E K)^\top\big)\, F V,
       \qquad E, F \in \mathbb{R}^{k \times L}, $$

    so the scores are $T \times k$ instead of $T \times L$: time and memory linear in $L$ for a fixed $k$.
    Not causal (the projection mixes all positions). ``q (B, H, T, D)``, ``k (B, H, L, D)``, ``v (B, H, L, Dv)``,
    ``E, F (k, L)`` (shared by heads) -> ``(B, H, T, Dv)``.
    """
    _check_same_length(q, k, v)
    L = k.shape[2]
    for name, P in (("E", E), ("F", F)):
        require_tensor(name, P, ndim=2, floating=True)
        if P.shape[1] != L:
            raise ValueError(f"{name} must have shape (k, L) with L={L} keys, got {tuple(P.shape)}")
    if E.shape != F.shape:
        raise ValueError(f"E and F must have the same shape (k, L), got {tuple(E.shape)} and {tuple(F.shape)}")
    k_proj, v_proj = E @ k, F @ v
    scores = (q @ k_proj.transpose(-1, -2)) * default_scale(q.shape[-1], scale)
    return torch.softmax(scores, dim=-1) @ v_proj


def flow_attention(q, k, v, *, return_flows=False):
    r"""Flowformer's flow attention :cite:`wu2022flowformer` (non-causal), linear in the length.

    With $\phi = \sigma$ (sigmoid) and $\phi_i = \phi(q_i)$, $\psi_j = \phi(k_j)$, the incoming flow of sink $i$
    and the outgoing flow of source $j$ are $I_i = \phi_i\cdot\sum_j \psi_j$ and $O_j = \psi_j \cdot \sum_i \phi_i$.
    Normalising by them conserves the flows (every sink receives 1, every source sends 1); the conserved
    quantities $\hat I_i = \phi_i \cdot \sum_j \psi_j / O_j$ and $\hat O_j = \psi_j \cdot \sum_i \phi_i / I_i$ then
    drive *competition* among sources and *allocation* to sinks:

    $$ o_i = \sigma\!\big(\hat I_i \tfrac{T}{L}\big)\; \frac{\phi_i}{I_i} \cdot \sum_j \psi_j\,
       \big(L \operatorname{softmax}_j(\hat O)\, v_j\big)^\top . $$

    ``q (B, H, T, D)``, ``k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, T, Dv)``; with ``return_flows`` also a
    dict of ``incoming (B, H, T)``, ``outgoing (B, H, L)``, ``competition (B, H, L)``, ``allocation (B, H, T)``.
    """
    _check_same_length(q, k, v)
    T, L = q.shape[2], k.shape[2]
    phi, psi = torch.sigmoid(q), torch.sigmoid(k)
    incoming = phi @ psi.sum(2)[..., None]  # (B, H, T, 1)
    outgoing = psi @ phi.sum(2)[..., None]  # (B, H, L, 1)
    conserved_sink = phi @ (psi / outgoing).sum(2)[..., None]
    conserved_source = psi @ (phi / incoming).sum(2)[..., None]
    competition = torch.softmax(conserved_source, dim=2) * L
    allocation = torch.sigmoid(conserved_sink * (T / L))
    out = ((phi / incoming) @ (psi.transpose(-1, -2) @ (v * competition))) * allocation
    if not return_flows:
        return out
    flows = {"incoming": incoming[..., 0], "outgoing": outgoing[..., 0], "competition": competition[..., 0],
             "allocation": allocation[..., 0]}
    return out, flows


def kernelized_rpe_fft(q, k, v, rpe, *, normalize: bool = True):
    r"""Kernelized attention with a multiplicative relative-position weight, in $O(L \log L)$ by FFT :cite:`luo2021stable`.

    $$ o_i = \frac{\sum_j b_{i-j}\, (q_i \cdot k_j)\, v_j}{\sum_j b_{i-j}\, (q_i \cdot k_j)}
         = \frac{q_i^\top \sum_j b_{i-j}\, k_j v_j^\top}{q_i^\top \sum_j b_{i-j}\, k_j} , $$

    (non-causal; ``q``, ``k`` are already feature-mapped, e.g. by :func:`feature_map`). The inner sums are a
    Toeplitz matrix $b_{i-j}$ applied to the sequence $k_j v_j^\top$: one convolution per $(D, D_v)$ channel, done
    with real FFTs of length $\ge 3L - 2$, so the cost is $O(L \log L \cdot D D_v)$ and no $L \times L$ matrix is
    formed. ``q, k (B, H, L, D)``, ``v (B, H, L, Dv)``, ``rpe (2L - 1,)`` or ``(H, 2L - 1)`` holding
    $b_{-(L-1)}, \dots, b_{L-1}$ (as :func:`minilib.positional.toeplitz_matrix`) -> ``(B, H, L, Dv)``.
    """
    _check_same_length(q, k, v)
    B, H, L, D = k.shape
    if q.shape[2] != L:
        raise ValueError(f"q and k must have the same length, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    require_tensor("rpe", rpe, ndim=(1, 2), floating=True)
    if rpe.shape[-1] != 2 * L - 1 or (rpe.ndim == 2 and rpe.shape[0] != H):
        raise ValueError(f"rpe must have shape (2L - 1,) or (H, 2L - 1) = ({H}, {2 * L - 1}), got {tuple(rpe.shape)}")
    values = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1) if normalize else v
    n_fft = 1 << (3 * L - 2 - 1).bit_length()
    sequence = k[..., :, None] * values[..., None, :]  # (B, H, L, D, Dv'): what the Toeplitz matrix multiplies
    kernel = rpe.reshape(-1, 2 * L - 1) if rpe.ndim == 2 else rpe[None]
    spectrum = torch.fft.rfft(sequence, n=n_fft, dim=2) * torch.fft.rfft(kernel, n=n_fft, dim=-1)[None, :, :, None, None]
    mixed = torch.fft.irfft(spectrum, n=n_fft, dim=2)[:, :, L - 1:2 * L - 1]  # sum_j b_{i-j} k_j v_j^T at i = 0..L-1
    out = (q[..., None, :] @ mixed).squeeze(-2)
    return out[..., :-1] / out[..., -1:] if normalize else out


def simplified_linear_attention(q, k, v, conv_weight, *, eps: float = 1e-6):
    r"""SLAB's simplified linear attention :cite:`guo2024slab` (non-causal): a ReLU kernel plus a depthwise convolution.

    $$ o_i = \frac{\operatorname{relu}(q_i)^\top \sum_j \operatorname{relu}(k_j)\, v_j^\top}
                 {\operatorname{relu}(q_i)^\top \sum_j \operatorname{relu}(k_j) + \epsilon}
           + \sum_{u} w_u\, v_{i+u} , $$

    the second term a depthwise convolution of the values along the sequence (odd kernel, zero padding, one filter
    per head and channel) that restores the local detail the low-rank kernel term misses. ``q, k (B, H, L, D)``,
    ``v (B, H, L, Dv)``, ``conv_weight (H, Dv, kernel)`` -> ``(B, H, L, Dv)``.
    """
    _check_same_length(q, k, v)
    B, H, L, Dv = v.shape
    require_tensor("conv_weight", conv_weight, ndim=3, floating=True)
    if conv_weight.shape[:2] != (H, Dv) or conv_weight.shape[-1] % 2 == 0:
        raise ValueError(f"conv_weight must have shape (H, Dv, odd kernel) with H={H}, Dv={Dv}, got {tuple(conv_weight.shape)}")
    phi_q, phi_k = torch.relu(q), torch.relu(k)
    kernel_term = (phi_q @ (phi_k.transpose(-1, -2) @ v)) / (phi_q @ phi_k.sum(2)[..., None] + eps)
    channels = v.transpose(-1, -2).reshape(B, H * Dv, L)
    conv = torch.nn.functional.conv1d(channels, conv_weight.reshape(H * Dv, 1, -1), padding=conv_weight.shape[-1] // 2,
                                      groups=H * Dv)
    return kernel_term + conv.reshape(B, H, Dv, L).transpose(-1, -2)
