r"""Hyena: long convolutions with implicit filters and data-controlled gating :cite:`poli2023hyena`, in 1-D and 2-D.

A Hyena operator of order 2 projects the input into $v, x_1, x_2$ (each followed by a short causal
depthwise convolution) and alternates long convolutions with elementwise gates,

$$ z^{(0)} = v,\qquad z^{(i)} = x_i \odot \big(h_i * z^{(i-1)}\big),\qquad y = W_{\text{out}} z^{(2)}, $$

where each filter $h_i$ as long as the sequence is *implicit*: a small MLP of positional features
$(t/L, \cos 2\pi k t/L, \sin 2\pi k t/L)$, times an exponentially decaying window. The parameter count
does not grow with $L$, and the convolutions cost $O(L\log L)$ by :func:`~minilib.ssm.fft_conv`.
Multi-dimensional Hyena :cite:`zimerman2024hyenand` does the same over an image grid with 2-D filters and
:func:`fft_conv2d`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_last_dim, check_positive_int, require_tensor
from minilib.convolution import fft_conv
from minilib.mixing import TokenMixer, register_mixer

__all__ = ["fft_conv2d", "ImplicitFilter", "HyenaMixer", "Hyena2D", "Hyena2DMixer"]


def fft_conv2d(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    r"""2-D linear convolution by FFT, anchored at the origin: $y_{ij} = \sum_{a,b} k_{ab}\, u_{i-a, j-b}$.

    ``u (..., C, H, W)``, ``kernel (C, k_h, k_w)`` with $k_h \le H$, $k_w \le W$ -> ``(..., C, H, W)``; both
    zero-padded to $(H + k_h - 1) \times (W + k_w - 1)$, so nothing wraps around.
    """
    require_tensor("u", u, floating=True)
    require_tensor("kernel", kernel, ndim=3, floating=True)
    if u.ndim < 3 or kernel.shape[0] != u.shape[-3] or kernel.shape[1] > u.shape[-2] or kernel.shape[2] > u.shape[-1]:
        raise ValueError(f"kernel must be (C, k_h <= H, k_w <= W) for u (..., C, H, W), got u {tuple(u.shape)} "
                         f"and kernel {tuple(kernel.shape)}")
    H, W = u.shape[-2:]
    size = (H + kernel.shape[1] - 1, W + kernel.shape[2] - 1)
    y = torch.fft.irfft2(torch.fft.rfft2(u, s=size) * torch.fft.rfft2(kernel.to(u.dtype), s=size), s=size)
    return y[..., :H, :W]


class ImplicitFilter(nn.Module):
    r"""Filters $h_c(p)$ for ``channels`` channels at positions $p \in [0, 1]^{\text{dims}}$ from one small MLP:

    $h(p) = \mathrm{MLP}\big(p, \cos 2\pi k p, \sin 2\pi k p\big)_{k=1..K} \cdot e^{-\alpha_c \lVert p\rVert_1}$,
    with per-channel decay rates $\alpha_c$ spread log-uniformly (short and long filters from the start).
    """

    def __init__(self, channels: int, *, dims: int = 1, n_freqs: int = 8, hidden: int = 32, max_decay: float = 30.0):
        super().__init__()
        for name, value in (("channels", channels), ("dims", dims), ("n_freqs", n_freqs), ("hidden", hidden)):
            check_positive_int(name, value)
        self.dims, self.n_freqs = dims, n_freqs
        self.mlp = nn.Sequential(nn.Linear(dims * (1 + 2 * n_freqs), hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, channels))
        self.register_buffer("decay", torch.exp(torch.linspace(0.0, math.log(max_decay), channels)))

    def forward(self, *sizes: int) -> torch.Tensor:
        """The ``(channels, *sizes)`` filter on a grid of ``sizes`` (one per dim)."""
        if len(sizes) != self.dims:
            raise ValueError(f"need {self.dims} sizes, got {sizes}")
        axes = [torch.arange(n, dtype=self.decay.dtype, device=self.decay.device) / max(n, 1) for n in sizes]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*sizes, dims)
        k = torch.arange(1, self.n_freqs + 1, dtype=grid.dtype, device=grid.device)
        angles = 2 * math.pi * grid[..., None] * k  # (*sizes, dims, K)
        feats = torch.cat([grid, angles.cos().flatten(-2), angles.sin().flatten(-2)], dim=-1)
        window = torch.exp(-self.decay * grid.sum(-1)[..., None])  # (*sizes, channels)
        return (self.mlp(feats) * window).movedim(-1, 0)


class HyenaMixer(TokenMixer):
    r"""Causal order-2 Hyena operator over ``(B, T, d_model)``; no fixed-size decoding state (``new_cache`` is None)."""

    causal = True

    def __init__(self, d_model: int, *, short: int = 3, n_freqs: int = 8, hidden: int = 32):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("short", short)
        self.d_model = d_model
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short = nn.Conv1d(3 * d_model, 3 * d_model, short, groups=3 * d_model, padding=short - 1)
        self.filters = ImplicitFilter(2 * d_model, n_freqs=n_freqs, hidden=hidden)
        self.bias = nn.Parameter(torch.zeros(2, d_model))  # the skip term of each long convolution
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        check_last_dim("x", x, self.d_model, ndim=3)
        T = x.shape[1]
        z = self.short(self.in_proj(x).transpose(1, 2))[..., :T]  # causal: keep the first T outputs
        v, x1, x2 = z.chunk(3, dim=1)  # (B, d_model, T) each
        h = self.filters(T).view(2, self.d_model, T)
        for i, gate in enumerate((x1, x2)):
            v = gate * (fft_conv(v, h[i]) + self.bias[i, :, None] * v)
        return self.out_proj(v.transpose(1, 2))

    def fft_flops(self, T: int, batch: int = 1) -> int:
        r"""Real operations of the two long convolutions' FFTs at length ``T``, the part of the cost that
        ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions only) does not see.

        Per channel and convolution :func:`~minilib.ssm.fft_conv` pads to $n = 2^{\lceil\log_2(2T-1)\rceil}$ and, per
        sequence, runs a real FFT of the input and an inverse one (each counted as half the usual complex
        $5 n\log_2 n$) and a complex product of $n/2+1$ points (6 each); the filter's FFT is shared by the ``batch``:
        $2d\,\big(B\,(5 n\log_2 n + 6(n/2+1)) + 2.5\, n\log_2 n\big)$.
        """
        check_positive_int("T", T)
        check_positive_int("batch", batch)
        n = 1 << (2 * T - 2).bit_length()
        fft = 2.5 * n * math.log2(n) if n > 1 else 0.0
        per_conv = batch * (2 * fft + 6 * (n // 2 + 1)) + fft
        return round(2 * self.d_model * per_conv)


class Hyena2D(nn.Module):
    r"""Order-2 Hyena over an image grid ``(B, H, W, d)`` with 2-D implicit filters and :func:`fft_conv2d`.

    Filters are anchored at one corner, so each output mixes the positions above and left of it; the
    two orders use opposite corners (the second pass flips the grid), so together they see the whole image.
    """

    def __init__(self, d: int, *, n_freqs: int = 4, hidden: int = 32):
        super().__init__()
        check_positive_int("d", d)
        self.d = d
        self.in_proj = nn.Linear(d, 3 * d)
        self.filters = ImplicitFilter(2 * d, dims=2, n_freqs=n_freqs, hidden=hidden)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, ndim=4, floating=True)
        if x.shape[-1] != self.d:
            raise ValueError(f"x must be (B, H, W, d={self.d}), got {tuple(x.shape)}")
        H, W = x.shape[1:3]
        v, x1, x2 = self.in_proj(x).movedim(-1, 1).chunk(3, dim=1)  # (B, d, H, W)
        h = self.filters(H, W).view(2, self.d, H, W)
        v = x1 * fft_conv2d(v, h[0])
        v = x2 * fft_conv2d(v.flip(-1, -2), h[1]).flip(-1, -2)
        return self.out_proj(F.gelu(v).movedim(1, -1))


class Hyena2DMixer(TokenMixer):
    r""":class:`Hyena2D` as a (non-causal) token mixer over the ``grid = (H, W)`` tokens of an image, read row by
    row: ``(B, H*W, d_model) -> (B, H*W, d_model)``, as in a ViT whose first blocks are Hyena :cite:`zimerman2024hyenand`."""

    causal = False

    def __init__(self, d_model: int, grid: tuple[int, int], **kwargs):
        super().__init__()
        if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(n, int) and n > 0 for n in grid)):
            raise ValueError(f"grid must be (H, W) of positive ints, got {grid!r}")
        self.grid = tuple(grid)
        self.hyena = Hyena2D(d_model, **kwargs)

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        H, W = self.grid
        check_last_dim("x", x, self.hyena.d, ndim=3)
        if x.shape[1] != H * W:
            raise ValueError(f"x must hold grid {H}x{W} = {H * W} tokens, got {tuple(x.shape)}")
        return self.hyena(x.unflatten(1, (H, W))).flatten(1, 2)


register_mixer("hyena", lambda config, layer: HyenaMixer(config.d_model, **config.mixer_kwargs))
register_mixer("hyena2d", lambda config, layer: Hyena2DMixer(config.d_model, **config.mixer_kwargs))
