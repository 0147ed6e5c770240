r"""Local token mixers: identity, pooling (PoolFormer), depthwise convolution, PoNet's multi-granularity pooling
and MetaMixer's FFNified attention. Every one has a causal form that reads only $x_{\le t}$.

All functions take ``x (B, L, C)`` and return ``(B, L, C)``. The causal windowed mixers decode with a
:class:`WindowCache`, which keeps the last inputs a window still needs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_positive_int, require_tensor
from minilib.mixers._common import check_x as _check_x, register_causal
from minilib.mixing import TokenMixer

__all__ = ["WindowCache", "depthwise_conv", "pool_mix", "segment_max_pool", "local_max_pool", "ponet_mix",
           "ffnified_attention", "IdentityMixer", "PoolMixer", "DepthwiseConvMixer", "PoNetMixer",
           "FFNifiedAttention"]


class WindowCache:
    """Decoding state of a causal windowed mixer: ``length`` positions seen, ``past[name]`` the last inputs ``(B, <K-1, C)``."""

    def __init__(self):
        self.length = 0
        self.past: dict[str, torch.Tensor] = {}

    def extend(self, name: str, x: torch.Tensor, keep: int) -> torch.Tensor:
        """The kept past of ``name`` followed by ``x (B, T, C)``; remembers the last ``keep`` of them."""
        past = self.past.get(name, x[:, :0])
        full = torch.cat([past, x], dim=1)
        self.past[name] = full[:, full.shape[1] - min(keep, full.shape[1]):]
        return full


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, *, causal: bool = False, n_past: int = 0) -> torch.Tensor:
    r"""Depthwise (per-channel) convolution along the sequence, zero-padded.

    $$ \text{causal: } y_{t,c} = \sum_{j=0}^{K-1} w_{c,j}\, x_{t-K+1+j,\,c} \qquad
       \text{centred: } y_{t,c} = \sum_{j=0}^{K-1} w_{c,j}\, x_{t-\lfloor K/2\rfloor+j,\,c} $$

    ``x (B, L, C)``, ``weight (C, K)`` -> ``(B, L, C)``. ``n_past`` (causal only): the first ``n_past`` rows of
    ``x`` are earlier inputs from a cache; only the outputs of the other rows are returned.
    """
    _check_x(x)
    require_tensor("weight", weight, ndim=2, floating=True)
    C, K = weight.shape
    if x.shape[2] != C:
        raise ValueError(f"weight must be (C, K) with C = x.shape[2], got x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    if n_past and not causal:
        raise ValueError(f"n_past={n_past} needs causal=True (a centred window reads future tokens)")
    left = K - 1 if causal else K // 2
    padded = F.pad(x.transpose(1, 2), (left, K - 1 - left))
    y = F.conv1d(padded, weight[:, None, :].to(x.dtype), groups=C).transpose(1, 2)
    return y[:, n_past:]


def pool_mix(x: torch.Tensor, pool_size: int = 3, *, causal: bool = False, grid: tuple[int, int] | None = None,
             n_past: int = 0) -> torch.Tensor:
    r"""PoolFormer's token mixer: the average of the window around each token minus the token itself.

    $$ y_t = \frac{1}{|W_t|}\sum_{s \in W_t} x_s \; - \; x_t $$

    $W_t$ is the window of ``pool_size`` positions centred on $t$ (``causal``: the ``pool_size`` positions
    ending at $t$), cut at the sequence ends; padding is not counted. ``grid=(H, W)``: the $L = HW$ tokens
    are an image in raster order and the window is ``pool_size x pool_size`` (the paper's 2-D pooling).
    ``x (B, L, C)`` -> ``(B, L, C)``. ``n_past`` as in :func:`depthwise_conv`. See :cite:`yu2022metaformer`.
    """
    _check_x(x)
    check_positive_int("pool_size", pool_size)
    B, L, C = x.shape
    if grid is not None:
        if causal or n_past:
            raise ValueError(f"grid pooling is centred; causal=True and n_past={n_past} need grid=None")
        H, W = grid
        if H * W != L:
            raise ValueError(f"grid {grid} must hold the L={L} tokens of x {tuple(x.shape)}")
        if pool_size % 2 == 0:
            raise ValueError(f"grid pooling needs an odd pool_size, got {pool_size}")
        img = x.transpose(1, 2).reshape(B, C, H, W)
        avg = F.avg_pool2d(img, pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)
        return avg.reshape(B, C, L).transpose(1, 2) - x
    ones = torch.ones(C, pool_size, dtype=x.dtype, device=x.device)
    sums = depthwise_conv(x, ones, causal=causal, n_past=n_past)
    # the window's real positions; a cache keeps every earlier row a causal window can still reach
    counts = depthwise_conv(torch.ones_like(x[:1, :, :1]), ones[:1], causal=causal, n_past=n_past)
    return sums / counts - x[:, n_past:]


def _window_max(x: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    left = window - 1 if causal else window // 2
    padded = F.pad(x.transpose(1, 2), (left, window - 1 - left), value=float("-inf"))
    return padded.unfold(2, window, 1).amax(-1).transpose(1, 2)


def local_max_pool(x: torch.Tensor, window: int = 3, *, causal: bool = False) -> torch.Tensor:
    r"""Sliding max over ``window`` positions, centred (``causal``: ending at $t$): $y_t = \max_{s \in W_t} x_s$.

    ``x (B, L, C)`` -> ``(B, L, C)``. PoNet's local pooling :cite:`tan2022ponet`.
    """
    _check_x(x)
    check_positive_int("window", window)
    return _window_max(x, window, causal)


def segment_max_pool(x: torch.Tensor, segment: int, *, causal: bool = False) -> torch.Tensor:
    r"""Max over each token's segment of ``segment`` consecutive positions, broadcast back to every token.

    $$ y_t = \max_{s \in S(t)} x_s, \qquad S(t) = \{\lfloor t/K\rfloor K, \dots, \lfloor t/K\rfloor K + K - 1\} \cap [0, L) $$

    (``causal``: $S(t)$ stops at $t$, a running max that restarts at every segment). ``x (B, L, C)`` -> ``(B, L, C)``;
    the last segment may be shorter. PoNet's segment pooling :cite:`tan2022ponet`.
    """
    _check_x(x)
    check_positive_int("segment", segment)
    B, L, C = x.shape
    n = -(-L // segment)
    padded = F.pad(x, (0, 0, 0, n * segment - L), value=float("-inf")).reshape(B, n, segment, C)
    pooled = padded.cummax(dim=2).values if causal else padded.amax(dim=2, keepdim=True).expand(-1, -1, segment, -1)
    return pooled.reshape(B, n * segment, C)[:, :L]


def ponet_mix(q: torch.Tensor, g: torch.Tensor, s: torch.Tensor, l: torch.Tensor, *, segment: int, window: int = 3,
              causal: bool = False) -> torch.Tensor:
    r"""PoNet's multi-granularity pooling fused with each token.

    $$ y_t = q_t \odot \bar g_t + \operatorname{SegMax}(s)_t + \operatorname{LocalMax}(l)_t, \qquad
       \bar g_t = \tfrac1L \textstyle\sum_{u} g_u \ (\text{causal: } \tfrac1{t+1}\sum_{u \le t} g_u) $$

    the global average gating each token, the segment max (:func:`segment_max_pool`) and the local max
    (:func:`local_max_pool`) added. ``q, g, s, l (B, L, C)`` are four projections of the input -> ``(B, L, C)``.
    The paper's second global stage (the average re-attending to the tokens) is left out. See :cite:`tan2022ponet`.
    """
    for name, t in (("q", q), ("g", g), ("s", s), ("l", l)):
        require_tensor(name, t, ndim=3, floating=True)
        if t.shape != q.shape:
            raise ValueError(f"q, g, s, l must share one shape, got q {tuple(q.shape)}, {name} {tuple(t.shape)}")
    if causal:
        count = torch.arange(1, g.shape[1] + 1, device=g.device, dtype=g.dtype)[None, :, None]
        g_bar = g.cumsum(1) / count
    else:
        g_bar = g.mean(1, keepdim=True)
    return q * g_bar + segment_max_pool(s, segment, causal=causal) + local_max_pool(l, window, causal=causal)


def ffnified_attention(x: torch.Tensor, key_kernel: torch.Tensor, value_kernel: torch.Tensor, *,
                       causal: bool = False) -> torch.Tensor:
    r"""MetaMixer's FFNified attention: query-key and attention-value products become depthwise convolutions.

    $$ y = \operatorname{DWConv}_{W_V}\big(\operatorname{GELU}(\operatorname{DWConv}_{W_K}(x))\big) $$

    The keys and values are learned kernels, not projections of the input; GELU replaces the softmax, as in an
    FFN ($W_2\,\sigma(W_1 x)$) read as query-key-value. ``x (B, L, C)``, kernels ``(C, K)`` -> ``(B, L, C)``.
    See :cite:`yun2024metamixer`.
    """
    _check_x(x)
    for name, kernel in (("key_kernel", key_kernel), ("value_kernel", value_kernel)):
        require_tensor(name, kernel, ndim=2, floating=True)
        if kernel.shape[0] != x.shape[2]:
            raise ValueError(f"{name} must be (C={x.shape[2]}, K) for x {tuple(x.shape)}, got {tuple(kernel.shape)}")
    return depthwise_conv(F.gelu(depthwise_conv(x, key_kernel, causal=causal)), value_kernel, causal=causal)


class IdentityMixer(TokenMixer):
    r"""The MetaFormer baseline that mixes no tokens: $y_t = x_t$ (the block is then a per-token MLP). See :cite:`yu2022metaformer`."""

    def __init__(self, *, causal: bool = True):
        super().__init__()
        self.causal = causal

    def new_cache(self) -> WindowCache:
        return WindowCache()

    def forward(self, x: torch.Tensor, *, cache: WindowCache | None = None) -> torch.Tensor:
        _check_x(x)
        if cache is not None:
            cache.length += x.shape[1]
        return x


def _no_cache_unless_causal(mixer: TokenMixer, cache) -> None:
    if cache is not None and not mixer.causal:
        raise ValueError(f"{type(mixer).__name__} with causal=False has no incremental form; pass cache=None")


class PoolMixer(TokenMixer):
    r"""PoolFormer's parameter-free mixer :func:`pool_mix`: $y_t = \operatorname{avg}_{W_t}(x) - x_t$.

    ``causal`` (default for language models) pools the ``pool_size`` tokens ending at $t$ and decodes with a
    :class:`WindowCache`; ``grid=(H, W)`` pools a centred square window over an image's tokens. See :cite:`yu2022metaformer`.
    """

    def __init__(self, pool_size: int = 3, *, causal: bool = True, grid: tuple[int, int] | None = None):
        super().__init__()
        self.pool_size, self.causal, self.grid = check_positive_int("pool_size", pool_size), causal, grid

    def new_cache(self) -> WindowCache | None:
        return WindowCache() if self.causal else None

    def forward(self, x: torch.Tensor, *, cache: WindowCache | None = None) -> torch.Tensor:
        _no_cache_unless_causal(self, cache)
        if cache is None:
            return pool_mix(x, self.pool_size, causal=self.causal, grid=self.grid)
        _check_x(x)
        full = cache.extend("x", x, self.pool_size - 1)
        cache.length += x.shape[1]
        return pool_mix(full, self.pool_size, causal=True, n_past=full.shape[1] - x.shape[1])


class DepthwiseConvMixer(TokenMixer):
    r"""A learned depthwise convolution over the sequence, :func:`depthwise_conv` with a ``(d_model, kernel_size)`` kernel.

    Causal by default (decodes with a :class:`WindowCache`), centred with ``causal=False``.
    """

    def __init__(self, d_model: int, kernel_size: int = 3, *, causal: bool = True):
        super().__init__()
        check_positive_int("d_model", d_model)
        self.kernel_size, self.causal = check_positive_int("kernel_size", kernel_size), causal
        self.weight = nn.Parameter(torch.empty(d_model, kernel_size).uniform_(-1, 1) / kernel_size ** 0.5)

    def new_cache(self) -> WindowCache | None:
        return WindowCache() if self.causal else None

    def forward(self, x: torch.Tensor, *, cache: WindowCache | None = None) -> torch.Tensor:
        _no_cache_unless_causal(self, cache)
        if cache is None:
            return depthwise_conv(x, self.weight, causal=self.causal)
        _check_x(x)
        full = cache.extend("x", x, self.kernel_size - 1)
        cache.length += x.shape[1]
        return depthwise_conv(full, self.weight, causal=True, n_past=full.shape[1] - x.shape[1])


class PoNetMixer(TokenMixer):
    r"""PoNet's pooling mixer: four projections of $x$ into :func:`ponet_mix`, then an output projection.

    $$ y = W_O\, \operatorname{ponet\_mix}(x W_Q, x W_G, x W_S, x W_L) $$

    ``segment`` tokens per segment, local ``window``. No incremental form (``new_cache()`` is ``None``).
    See :cite:`tan2022ponet`.
    """

    def __init__(self, d_model: int, *, segment: int = 4, window: int = 3, causal: bool = True):
        super().__init__()
        check_positive_int("d_model", d_model)
        self.segment, self.window = check_positive_int("segment", segment), check_positive_int("window", window)
        self.causal = causal
        self.proj = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("PoNetMixer has no incremental form (new_cache() is None); pass cache=None")
        _check_x(x)
        q, g, s, l = self.proj(x).chunk(4, dim=-1)
        return self.out(ponet_mix(q, g, s, l, segment=self.segment, window=self.window, causal=self.causal))


class FFNifiedAttention(TokenMixer):
    r"""MetaMixer's FFNified attention between two projections: $y = W_O\,\operatorname{ffnified}(x W_I)$.

    Key and value kernels of ``kernel_size`` (large, 7 by default) per channel, :func:`ffnified_attention`.
    Causal by default; decodes with a :class:`WindowCache` holding the last inputs of both convolutions.
    See :cite:`yun2024metamixer`.
    """

    def __init__(self, d_model: int, kernel_size: int = 7, *, causal: bool = True):
        super().__init__()
        check_positive_int("d_model", d_model)
        self.kernel_size, self.causal = check_positive_int("kernel_size", kernel_size), causal
        self.inp = nn.Linear(d_model, d_model)
        self.key = nn.Parameter(torch.empty(d_model, kernel_size).uniform_(-1, 1) / kernel_size ** 0.5)
        self.value = nn.Parameter(torch.empty(d_model, kernel_size).uniform_(-1, 1) / kernel_size ** 0.5)
        self.out = nn.Linear(d_model, d_model)

    def new_cache(self) -> WindowCache | None:
        return WindowCache() if self.causal else None

    def forward(self, x: torch.Tensor, *, cache: WindowCache | None = None) -> torch.Tensor:
        _no_cache_unless_causal(self, cache)
        _check_x(x)
        u = self.inp(x)
        if cache is None:
            return self.out(ffnified_attention(u, self.key, self.value, causal=self.causal))
        T, keep = x.shape[1], self.kernel_size - 1
        full = cache.extend("u", u, keep)
        h = F.gelu(depthwise_conv(full, self.key, causal=True, n_past=full.shape[1] - T))
        full = cache.extend("h", h, keep)
        cache.length += T
        return self.out(depthwise_conv(full, self.value, causal=True, n_past=full.shape[1] - T))


register_causal("identity", lambda config, causal, kw: IdentityMixer(causal=causal, **kw))
register_causal("pool", lambda config, causal, kw: PoolMixer(causal=causal, **kw))
register_causal("dwconv", lambda config, causal, kw: DepthwiseConvMixer(config.d_model, causal=causal, **kw))
register_causal("ponet", lambda config, causal, kw: PoNetMixer(config.d_model, causal=causal, **kw))
register_causal("ffnified", lambda config, causal, kw: FFNifiedAttention(config.d_model, causal=causal, **kw))
