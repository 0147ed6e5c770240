r"""Relative convolutional multi-head attention (RCMHA): causal depthwise convolutions on Q, K, V and a relative bias."""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_last_dim, check_positive_int
from minilib.attention.heads import split_heads
from minilib.attention.multihead import MultiHeadAttention
from minilib.attention.scoring import attend

__all__ = ["RelConvAttention"]


class RelConvAttention(MultiHeadAttention):
    r"""Multi-head attention whose queries, keys and values pass a causal depthwise convolution, with a relative bias.

    $$ \tilde q_t = \sum_{j=0}^{K-1} w^Q_j \odot (x W_Q)_{t-j}, \quad (\text{same for } k, v), \qquad
       \text{head}_h = \operatorname{softmax}\!\Big(\frac{\tilde Q_h \tilde K_h^\top}{\sqrt D} + B_h\Big) \tilde V_h,
       \quad (B_h)_{ts} = b_{h,\min(|t - s|,\ d_{\max})} $$

    with $(xW)_{t} = 0$ for $t < 0$, so the convolution sees only the current token and its ``kernel - 1``
    predecessors (each channel has its own kernel $w_j$ and a bias), and one learned scalar per head and clipped
    distance (``max_distance`` $= d_{\max}$, starting at 0). Projections and output as
    :class:`~minilib.attention.MultiHeadAttention` (``d_model``, ``n_heads``); the convolution adds
    $3(K d + d)$ parameters and the bias $H (d_{\max} + 1)$. No incremental form: :meth:`new_cache` is ``None``,
    so a model decodes it by recomputing the prefix. ``x (B, T, d_model) -> (B, T, d_model)``.
    See :cite:`sugiharto2023rcmha`.
    """

    def __init__(self, d_model: int, n_heads: int, *, kernel: int = 3, max_distance: int = 16):
        super().__init__(d_model, n_heads)
        self.kernel = check_positive_int("kernel", kernel)
        check_positive_int("max_distance", max_distance)
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel, padding=kernel - 1, groups=d_model)
                                   for _ in range(3))
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, max_distance + 1))

    def new_cache(self):
        """``None``: the convolution and bias have no cached form here; decode by recomputing the prefix."""
        return None

    def distance_bias(self, T: int) -> torch.Tensor:
        r"""The bias $(B_h)_{ts} = b_{h, \min(|t-s|, d_{\max})}$ of a length-``T`` input, ``(n_heads, T, T)``."""
        t = torch.arange(T, device=self.rel_bias.device)
        distance = (t[:, None] - t[None, :]).abs().clamp(max=self.rel_bias.shape[1] - 1)
        return self.rel_bias[:, distance]

    def forward(self, x: torch.Tensor, *, causal: bool = True, cache=None) -> torch.Tensor:
        check_last_dim("x", x, self.wq.in_features, ndim=3)
        if cache is not None:
            raise ValueError("RelConvAttention keeps no cache (new_cache() is None); pass cache=None")
        T = x.shape[1]
        q, k, v = (split_heads(conv(proj(x).transpose(1, 2))[..., :T].transpose(1, 2), self.n_heads)
                   for conv, proj in zip(self.convs, (self.wq, self.wk, self.wv)))
        return self.combine(x, attend(q, k, v, causal=causal, bias=self.distance_bias(T)))
