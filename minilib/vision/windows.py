r"""Swin: attention inside ``w x w`` windows of the patch grid, shifted by ``w/2`` every other block :cite:`liu2021swin`.

$$ \operatorname{W\text{-}MSA}(z)_{\text{window } m} = \operatorname{softmax}\!\Big(\tfrac{Q_m K_m^\top}{\sqrt D} + B\Big) V_m,
   \qquad \text{cost } O(N w^2 d) \text{ instead of } O(N^2 d) $$

Tokens are laid out row by row over a ``grid = (H, W)`` of patches. The shifted block rolls the grid by ``-shift``
(cyclic shift), attends inside the windows of the rolled grid with :func:`shifted_window_mask` keeping apart the
pieces that the roll brought together from opposite borders, and rolls back. ``B`` is the learned relative
position bias, one value per head and offset $(\Delta y, \Delta x) \in [-(w-1), w-1]^2$.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_nonnegative_int, check_positive_int, require_tensor
from minilib.attention import merge_heads, sdpa, split_heads
from minilib.norms import LayerNorm

__all__ = ["window_partition", "window_reverse", "shifted_window_mask", "relative_position_index",
           "window_attention", "window_attention_flops", "WindowAttention", "patch_merging", "PatchMerging"]


def _check_grid(grid, window: int | None = None) -> tuple[int, int]:
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
        raise TypeError(f"grid must be a pair (H, W) of patch rows and columns, got {grid!r}")
    H, W = (check_positive_int("grid height", grid[0]), check_positive_int("grid width", grid[1]))
    if window is not None and (H % check_positive_int("window", window) or W % window):
        raise ValueError(f"window ({window}) must divide the grid height and width, got grid {H}x{W}")
    return H, W


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    r"""Cut a grid of tokens into non-overlapping ``window x window`` squares, window by window, row by row in each.

    ``x (B, H, W, C) -> (B, (H/w)(W/w), w^2, C)``; :func:`window_reverse` puts them back.
    """
    require_tensor("x", x, ndim=4)
    B, H, W, C = x.shape
    _check_grid((H, W), window)
    w = window
    return x.reshape(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, (H // w) * (W // w), w * w, C)


def window_reverse(windows: torch.Tensor, window: int, grid: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`window_partition`: ``windows (B, (H/w)(W/w), w^2, C) -> (B, H, W, C)``, ``grid = (H, W)``."""
    require_tensor("windows", windows, ndim=4)
    H, W = _check_grid(grid, window)
    w = window
    B, n, ww, C = windows.shape
    if n != (H // w) * (W // w) or ww != w * w:
        raise ValueError(f"windows must be (B, {(H // w) * (W // w)}, {w * w}, C) for grid {H}x{W} and window {w}, "
                         f"got {tuple(windows.shape)}")
    return windows.reshape(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def shifted_window_mask(grid: tuple[int, int], window: int, shift: int, *, device=None) -> torch.Tensor:
    r"""Which tokens of a window of the cyclically shifted grid may attend to each other: ``(n_windows, w^2, w^2)`` bool.

    After rolling the grid by ``-shift`` the last ``shift`` rows (columns) are the first rows (columns) of the image,
    wrapped around. The grid is labelled in regions $[0, H-w)$, $[H-w, H-s)$, $[H-s, H)$ per axis; two tokens
    of a window attend (True) only when they carry the same label, i.e. were neighbours before the roll.
    ``shift = 0`` keeps everything.
    """
    H, W = _check_grid(grid, window)
    check_nonnegative_int("shift", shift)
    if shift >= window:
        raise ValueError(f"shift must be smaller than window ({window}), got {shift}")
    labels = torch.zeros(H, W, dtype=torch.long, device=device)
    if shift:
        cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for a, rows in enumerate(cuts):
            for b, cols in enumerate(cuts):
                labels[rows, cols] = 3 * a + b
    lab = window_partition(labels[None, :, :, None], window)[0, :, :, 0]
    return lab[:, :, None] == lab[:, None, :]


def relative_position_index(window: int) -> torch.Tensor:
    r"""``(w^2, w^2)`` index into a ``((2w-1)^2, n_heads)`` bias table: $(\Delta y + w - 1)(2w - 1) + \Delta x + w - 1$."""
    w = check_positive_int("window", window)
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :] + w - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, grid: tuple[int, int], window: int,
                     shift: int = 0, bias: torch.Tensor | None = None) -> torch.Tensor:
    r"""(Shifted-)window attention of per-head tokens laid out row by row over ``grid``.

    ``q, k, v (B, heads, H*W, D)``, ``bias`` ``(heads, w^2, w^2)`` or None -> ``(B, heads, H*W, D)``: roll by
    ``-shift``, :func:`window_partition`, :func:`~minilib.attention.sdpa` per window with
    :func:`shifted_window_mask`, reverse, roll back. Equals ``sdpa`` over all tokens with the mask that keeps
    only pairs in the same shifted window that were neighbours before the roll. :cite:`liu2021swin`
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t, ndim=4, floating=True)
    H, W = _check_grid(grid, window)
    B, h, N, D = q.shape
    if N != H * W or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k, v must be (B, heads, H*W={H * W}, D) for grid {H}x{W}, "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    mask = shifted_window_mask((H, W), window, shift, device=q.device)
    n_win, ww = mask.shape[0], window * window

    def to_windows(t: torch.Tensor) -> torch.Tensor:
        g = t.reshape(B * h, H, W, t.shape[-1]).roll((-shift, -shift), dims=(1, 2))
        g = window_partition(g, window).reshape(B, h, n_win, ww, t.shape[-1])
        return g.transpose(1, 2).reshape(B * n_win, h, ww, t.shape[-1])

    out = sdpa(to_windows(q), to_windows(k), to_windows(v), mask=mask.repeat(B, 1, 1)[:, None],
               bias=None if bias is None else bias[None])
    out = out.reshape(B, n_win, h, ww, -1).transpose(1, 2).reshape(B * h, n_win, ww, -1)
    out = window_reverse(out, window, (H, W)).roll((shift, shift), dims=(1, 2))
    return out.reshape(B, h, N, -1)


def window_attention_flops(grid: tuple[int, int], window: int | None, d_model: int) -> int:
    r"""Multiply-add FLOPs of the scores and weighted values of (window) attention over a grid: $4 N w^2 d$.

    ``window=None`` is global attention, $4 N^2 d$: every query meets every key. Projections are left out.
    """
    H, W = _check_grid(grid, window)
    check_positive_int("d_model", d_model)
    keys = H * W if window is None else window * window
    return 4 * H * W * keys * d_model


class WindowAttention(nn.Module):
    r"""Multi-head (shifted-)window self-attention with a relative position bias: the Swin mixer :cite:`liu2021swin`.

    ``x (B, H*W, d_model) -> (B, H*W, d_model)``, tokens row by row over ``grid``; Q, K, V and output are linear maps,
    the bias a learned ``((2w-1)^2, n_heads)`` table read through :func:`relative_position_index`.
    """

    def __init__(self, d_model: int, n_heads: int, *, grid: tuple[int, int], window: int, shift: int = 0):
        super().__init__()
        check_positive_int("d_model", d_model)
        if d_model % check_positive_int("n_heads", n_heads):
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.grid, self.window, self.n_heads = _check_grid(grid, window), window, n_heads
        shifted_window_mask(self.grid, window, shift)  # validates shift
        self.shift = shift
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.bias_table = nn.Parameter(0.02 * torch.randn((2 * window - 1) ** 2, n_heads))
        self.register_buffer("index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        if x.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"x must hold H*W = {self.grid[0] * self.grid[1]} tokens, got {tuple(x.shape)}")
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        bias = self.bias_table[self.index].permute(2, 0, 1)
        return self.out(merge_heads(window_attention(q, k, v, grid=self.grid, window=self.window,
                                                     shift=self.shift, bias=bias)))


def patch_merging(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    r"""Concatenate each 2x2 neighbourhood of tokens: ``x (B, H*W, C) -> (B, (H/2)(W/2), 4C)`` :cite:`liu2021swin`.

    $$ y_{ij} = [\,z_{2i,2j};\ z_{2i+1,2j};\ z_{2i,2j+1};\ z_{2i+1,2j+1}\,] $$
    """
    require_tensor("x", x, ndim=3)
    H, W = _check_grid(grid, 2)
    B, N, C = x.shape
    if N != H * W:
        raise ValueError(f"x must hold H*W = {H * W} tokens for grid {H}x{W}, got {tuple(x.shape)}")
    g = x.reshape(B, H, W, C)
    parts = (g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2])
    return torch.cat(parts, dim=-1).reshape(B, (H // 2) * (W // 2), 4 * C)


class PatchMerging(nn.Module):
    """Swin's downsampling: :func:`patch_merging`, LayerNorm, linear ``4C -> 2C``; the grid halves, width doubles."""

    def __init__(self, d_model: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = _check_grid(grid, 2)
        self.norm = LayerNorm(4 * check_positive_int("d_model", d_model))
        self.proj = nn.Linear(4 * d_model, 2 * d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(patch_merging(x, self.grid)))
