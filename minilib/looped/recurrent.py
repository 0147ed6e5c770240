r"""The Recurrent Transformer: each layer attends to keys and values made from its own *outputs* at earlier positions."""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_last_dim, check_positive_int
from minilib.attention import MultiHeadAttention, attend
from minilib.feedforward import FeedForward
from minilib.norms import RMSNorm

__all__ = ["RecurrentLayer", "RecurrentTransformer"]


class RecurrentLayer(nn.Module):
    r"""One layer-wise recurrent layer (Pre-RMSNorm), run position by position.

    $$ u_t = \operatorname{Norm}_1(x_t),\quad m_s = \operatorname{Norm}_1(y_s)\ (s < t),\quad
       z_t = x_t + \operatorname{MHA}\big(u_t;\ [m_1, \dots, m_{t-1}, u_t]\big),\quad
       y_t = z_t + \operatorname{FFN}(\operatorname{Norm}_2(z_t)) $$

    A standard layer's keys and values at $s < t$ come from its *inputs* $x_s$; here they come from its *outputs*
    $y_s$, so position $t$ of layer $\ell$ sees what layer $\ell$ computed at earlier positions: information can cross
    positions once per layer *and* flow down the time axis like an RNN, and the effective depth grows with $t$. The
    cost is that positions are computed in order. :meth:`step` advances one position (``x_t (B, 1, d_model)``),
    appending one key and one value to its cache, like a standard layer's decoding step. See :cite:`recurrenttransformer2026`.
    """

    def __init__(self, d_model: int, n_heads: int, *, d_ff: int | None = None):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(d_model), RMSNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff)

    def step(self, x_t: torch.Tensor, cache) -> torch.Tensor:
        """One position ``x_t (B, 1, d_model) -> y_t``; ``cache`` (a :class:`~minilib.attention.KVCache`) holds the
        keys/values of this layer's earlier outputs and gains those of ``y_t``."""
        check_last_dim("x_t", x_t, self.norm1.weight.shape[0], ndim=3)
        if x_t.shape[1] != 1:
            raise ValueError(f"x_t must hold one position (B, 1, d_model), got {tuple(x_t.shape)}")
        positions = torch.arange(cache.length, cache.length + 1, device=x_t.device)
        q, k_t, v_t = self.attn.project_qkv(self.norm1(x_t), positions)
        k = k_t if cache.k is None else torch.cat([cache.k, k_t], dim=2)
        v = v_t if cache.v is None else torch.cat([cache.v, v_t], dim=2)
        z = x_t + self.attn.combine(x_t, attend(q, k, v))
        y = z + self.ffn(self.norm2(z))
        _, k_y, v_y = self.attn.project_qkv(self.norm1(y), positions)
        cache.append(k_y, v_y)
        return y


class RecurrentTransformer(nn.Module):
    r"""A stack of :class:`RecurrentLayer`; ``x (B, T, d_model) -> (B, T, d_model)`` computed in the naive sequential form.

    At each position every layer runs :meth:`RecurrentLayer.step` in turn. Per generated token a layer does the work
    of a standard layer's cached step plus one more key/value projection; the cache holds one key and one value per
    position and layer, as a standard KV cache. See :cite:`recurrenttransformer2026`.
    """

    def __init__(self, d_model: int, n_layers: int, n_heads: int, *, d_ff: int | None = None):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_layers", n_layers)
        self.layers = nn.ModuleList(RecurrentLayer(d_model, n_heads, d_ff=d_ff) for _ in range(n_layers))

    def new_caches(self) -> list:
        """One empty cache per layer, for :meth:`forward` fed in pieces (decoding)."""
        return [layer.attn.new_cache() for layer in self.layers]

    def forward(self, x: torch.Tensor, *, caches: list | None = None) -> torch.Tensor:
        check_last_dim("x", x, self.layers[0].norm1.weight.shape[0], ndim=3)
        caches = self.new_caches() if caches is None else caches
        if not isinstance(caches, list) or len(caches) != len(self.layers):
            raise ValueError(f"caches must be a list of {len(self.layers)} caches from new_caches(), got {caches!r}")
        outputs = []
        for t in range(x.shape[1]):
            h = x[:, t:t + 1]
            for layer, cache in zip(self.layers, caches):
                h = layer.step(h, cache)
            outputs.append(h)
        return torch.cat(outputs, dim=1)
