r"""Token mixers of the efficient Vision Transformers; each maps ``x (B, N, d_model) -> (B, N, d_model)``.

- :func:`channel_attention` / :class:`ChannelAttention`: channels are the tokens, positions the features :cite:`ding2022davit`;
- :class:`CascadedGroupAttention`: each head sees its own channel split plus the previous head's output :cite:`liu2023efficientvit`;
- :class:`SingleHeadAttention`: one head on a fraction of the channels, the rest passed through :cite:`yun2024shvit`;
- :class:`ConvAttention`: depthwise-convolutional Q/K/V projections over the patch grid :cite:`wu2021cvt`;
- :func:`manhattan_decay` / :class:`ManhattanAttention`: attention times $\gamma^{|\Delta y| + |\Delta x|}$ :cite:`fan2024rmt`,
  and :func:`axial_decay_attention`, its row-then-column form.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.attention import attention_weights, merge_heads, sdpa, split_heads
from minilib.vision.windows import _check_grid

__all__ = ["channel_attention", "ChannelAttention", "CascadedGroupAttention", "SingleHeadAttention", "ConvAttention",
           "manhattan_decay", "ManhattanAttention", "axial_decay_attention", "head_similarity"]


def _check_heads(d_model: int, n_heads: int) -> None:
    check_positive_int("d_model", d_model)
    if d_model % check_positive_int("n_heads", n_heads):
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")


def _check_tokens(x: torch.Tensor, n: int | None = None) -> None:
    require_tensor("x", x, ndim=3, floating=True)
    if n is not None and x.shape[1] != n:
        raise ValueError(f"x must hold {n} tokens (the grid), got {tuple(x.shape)}")


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_groups: int) -> torch.Tensor:
    r"""Channel group attention: within each group of $C_g = C/G$ channels, channels attend to channels.

    $$ \operatorname{A}(Q_g, K_g, V_g) = \Big(\operatorname{softmax}\big(Q_g^\top K_g / \sqrt{C_g}\big)\, V_g^\top\Big)^\top,
       \qquad Q_g \in \mathbb R^{N \times C_g} $$

    ``q, k, v (B, N, C) -> (B, N, C)``. Every output mixes every position (global receptive field) at cost
    $O(N C^2 / G)$, linear in the token count $N$. :cite:`ding2022davit`
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t, ndim=3, floating=True)
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one shape (B, N, C), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    _check_heads(q.shape[-1], n_groups)
    groups = [split_heads(t, n_groups).transpose(-1, -2) for t in (q, k, v)]  # (B, G, C_g, N)
    out = sdpa(*groups, scale=1 / math.sqrt(q.shape[-1] // n_groups))
    return merge_heads(out.transpose(-1, -2))


class ChannelAttention(nn.Module):
    """DaViT's channel group attention layer: linear Q, K, V, :func:`channel_attention`, output projection."""

    def __init__(self, d_model: int, n_groups: int):
        super().__init__()
        _check_heads(d_model, n_groups)
        self.n_groups = n_groups
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x)
        return self.out(channel_attention(*self.qkv(x).chunk(3, dim=-1), self.n_groups))


class CascadedGroupAttention(nn.Module):
    r"""Cascaded group attention: head $h$ attends over its own channel split $x_h$ plus head $h-1$'s output.

    $$ \tilde x_h = x_h + o_{h-1}\ (h > 1), \qquad o_h = \operatorname{Attn}(\tilde x_h W^Q_h, \tilde x_h W^K_h, \tilde x_h W^V_h),
       \qquad y = [o_1; \dots; o_H]\, W^P $$

    ``x (B, N, d_model) -> (B, N, d_model)``. Each head projects ``d_model / H`` channels, so the Q/K/V
    projections cost $H$ times fewer FLOPs than multi-head attention's. :cite:`liu2023efficientvit`
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        _check_heads(d_model, n_heads)
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.ModuleList(nn.Linear(self.head_dim, 3 * self.head_dim) for _ in range(n_heads))
        self.out = nn.Linear(d_model, d_model)

    def heads(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each head's output ``(B, N, d_model/H)`` and attention weights ``(B, N, N)``, in cascade order."""
        _check_tokens(x)
        outs, maps, prev = [], [], None
        for part, proj in zip(x.chunk(self.n_heads, dim=-1), self.qkv):
            q, k, v = proj(part if prev is None else part + prev).chunk(3, dim=-1)
            w = attention_weights(q[:, None], k[:, None])[:, 0]
            prev = w @ v
            outs.append(prev)
            maps.append(w)
        return outs, maps

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The heads' attention weights ``(B, H, N, N)``."""
        return torch.stack(self.heads(x)[1], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat(self.heads(x)[0], dim=-1))


class SingleHeadAttention(nn.Module):
    r"""SHViT's single-head attention on the first ``partial`` fraction of the channels; the rest pass through.

    $$ y = \big[\operatorname{Attn}(x_a W^Q, x_a W^K, x_a W^V);\ x_b\big] W^P, \qquad x = [x_a; x_b],\ x_a \in \mathbb R^{N \times pC} $$

    ``x (B, N, d_model) -> (B, N, d_model)``; queries and keys have ``qk_dim`` features. :cite:`yun2024shvit`
    """

    def __init__(self, d_model: int, *, partial: float = 0.25, qk_dim: int = 16):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_number("partial", partial, low=0, high=1)
        self.d_att = round(partial * d_model)
        if not 1 <= self.d_att <= d_model:
            raise ValueError(f"partial * d_model must be at least 1 channel, got partial={partial}, d_model={d_model}")
        self.qk_dim = check_positive_int("qk_dim", qk_dim)
        self.qkv = nn.Linear(self.d_att, 2 * qk_dim + self.d_att)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x)
        x_a, x_b = x[..., :self.d_att], x[..., self.d_att:]
        q, k, v = self.qkv(x_a).split((self.qk_dim, self.qk_dim, self.d_att), dim=-1)
        return self.out(torch.cat([sdpa(q[:, None], k[:, None], v[:, None])[:, 0], x_b], dim=-1))


class ConvAttention(nn.Module):
    r"""CvT's convolutional projection: Q, K, V are depthwise ``kernel x kernel`` convolutions over the patch grid
    followed by pointwise linear maps; K and V may be subsampled with ``kv_stride``.

    $$ Q = \operatorname{Linear}(\operatorname{DWConv}(\operatorname{grid}(x))), \quad \text{same for } K, V \text{ (stride } s) $$

    ``x (B, H*W, d_model) -> (B, H*W, d_model)``, tokens row by row over ``grid``; the convolution carries the
    position, so the model needs no positional encoding. :cite:`wu2021cvt`
    """

    def __init__(self, d_model: int, n_heads: int, *, grid: tuple[int, int], kernel: int = 3, kv_stride: int = 1):
        super().__init__()
        _check_heads(d_model, n_heads)
        self.grid, self.n_heads = _check_grid(grid), n_heads
        check_positive_int("kernel", kernel)
        strides = (1, check_positive_int("kv_stride", kv_stride), kv_stride)
        self.convs = nn.ModuleList(nn.Conv2d(d_model, d_model, kernel, stride=s, padding=kernel // 2, groups=d_model,
                                             bias=False) for s in strides)
        self.proj = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.grid
        _check_tokens(x, H * W)
        B, N, C = x.shape
        image = x.transpose(1, 2).reshape(B, C, H, W)
        q, k, v = (split_heads(proj(conv(image).flatten(2).transpose(1, 2)), self.n_heads)
                   for conv, proj in zip(self.convs, self.proj))
        return self.out(merge_heads(sdpa(q, k, v)))


def manhattan_decay(grid: tuple[int, int], gammas: torch.Tensor) -> torch.Tensor:
    r"""RMT's spatial decay $D_{nm} = \gamma^{|y_n - y_m| + |x_n - x_m|}$ per head, tokens row by row over ``grid``.

    ``gammas (heads,)`` in (0, 1] -> ``(heads, H*W, H*W)``. :cite:`fan2024rmt`
    """
    H, W = _check_grid(grid)
    require_tensor("gammas", gammas, ndim=1, floating=True)
    if not bool(((gammas > 0) & (gammas <= 1)).all()):
        raise ValueError(f"gammas must lie in (0, 1], got {gammas.tolist()}")
    ys, xs = torch.meshgrid(torch.arange(H, device=gammas.device), torch.arange(W, device=gammas.device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dist = (ys[:, None] - ys[None, :]).abs() + (xs[:, None] - xs[None, :]).abs()
    return gammas[:, None, None] ** dist


def _default_gammas(n_heads: int) -> torch.Tensor:
    # short to long ranges over the heads: gamma_h = 1 - 2^{-1-h} (0.5, 0.75, 0.875, ...)
    return 1 - 2.0 ** (-1 - torch.arange(n_heads, dtype=torch.float32))


class ManhattanAttention(nn.Module):
    r"""Manhattan self-attention: softmax attention weights multiplied by :func:`manhattan_decay`.

    $$ \operatorname{MaSA}(X) = \big(\operatorname{softmax}(QK^\top/\sqrt D) \odot D\big) V $$

    ``x (B, H*W, d_model) -> (B, H*W, d_model)``; ``gammas`` default to $1 - 2^{-1-h}$ for head $h$, and
    ``decay=False`` is the same layer without the decay (the ablation). :cite:`fan2024rmt`
    """

    def __init__(self, d_model: int, n_heads: int, *, grid: tuple[int, int], gammas: torch.Tensor | None = None,
                 decay: bool = True):
        super().__init__()
        _check_heads(d_model, n_heads)
        self.grid, self.n_heads = _check_grid(grid), n_heads
        gammas = _default_gammas(n_heads) if gammas is None else gammas
        d = manhattan_decay(self.grid, gammas) if decay else torch.ones(n_heads, self.grid[0] * self.grid[1],
                                                                           self.grid[0] * self.grid[1])
        if d.shape[0] != n_heads:
            raise ValueError(f"gammas must hold n_heads = {n_heads} values, got {tuple(gammas.shape)}")
        self.register_buffer("decay", d, persistent=False)
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x, self.grid[0] * self.grid[1])
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.out(merge_heads((attention_weights(q, k) * self.decay.to(q.dtype)) @ v))


def axial_decay_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, grid: tuple[int, int],
                          gammas: torch.Tensor) -> torch.Tensor:
    r"""RMT's decomposed form: decayed attention along each column, then along each row of the grid.

    $$ Y = \big(\operatorname{softmax}(Q_W K_W^\top) \odot D^W\big)\Big(\big(\operatorname{softmax}(Q_H K_H^\top) \odot D^H\big) V\Big),
       \quad D^H_{nm} = \gamma^{|y_n - y_m|},\ D^W_{nm} = \gamma^{|x_n - x_m|} $$

    ``q, k, v (B, heads, H*W, D)``, ``gammas (heads,)`` -> ``(B, heads, H*W, D)``; cost $O(HW(H+W)D)$ instead
    of $O((HW)^2 D)$. :cite:`fan2024rmt`
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t, ndim=4, floating=True)
    H, W = _check_grid(grid)
    B, h, N, D = q.shape
    if N != H * W or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must be (B, heads, H*W={H * W}, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    g = gammas.to(q.dtype)[:, None, None]
    decay_h = g ** (torch.arange(H)[:, None] - torch.arange(H)[None, :]).abs().to(q.dtype)
    decay_w = g ** (torch.arange(W)[:, None] - torch.arange(W)[None, :]).abs().to(q.dtype)

    def grid_of(t):
        return t.reshape(B, h, H, W, D)

    # along columns: tokens (y, x) for fixed x attend over y
    qc, kc, vc = (grid_of(t).transpose(2, 3) for t in (q, k, v))  # (B, h, W, H, D)
    wc = torch.softmax(qc @ kc.transpose(-1, -2) / math.sqrt(D), dim=-1) * decay_h[:, None]
    mid = (wc @ vc).transpose(2, 3)  # (B, h, H, W, D)
    qr, kr = grid_of(q), grid_of(k)
    wr = torch.softmax(qr @ kr.transpose(-1, -2) / math.sqrt(D), dim=-1) * decay_w[:, None]
    return (wr @ mid).reshape(B, h, N, D)


def head_similarity(maps: torch.Tensor) -> torch.Tensor:
    r"""Mean pairwise cosine similarity between the heads' attention maps: the redundancy CGA aims to lower.

    ``maps (B, H, N, N)`` -> scalar, $\frac{2}{H(H-1)} \sum_{h < h'} \cos(\operatorname{vec} A_h, \operatorname{vec} A_{h'})$
    averaged over the batch. :cite:`liu2023efficientvit`
    """
    require_tensor("maps", maps, ndim=4, floating=True)
    B, H = maps.shape[:2]
    if H < 2:
        raise ValueError(f"maps must hold at least 2 heads to compare, got {tuple(maps.shape)}")
    flat = F.normalize(maps.reshape(B, H, -1), dim=-1)
    cos = flat @ flat.transpose(1, 2)
    i, j = torch.triu_indices(H, H, offset=1)
    return cos[:, i, j].mean()
