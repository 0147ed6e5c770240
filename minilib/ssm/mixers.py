r"""State-space token mixers: the Mamba block (selective), its LTI twin with an S4D kernel, and H3.

Both share one skeleton :cite:`gu2023mamba`: $[x; z] = W_{\text{in}} u$, a causal depthwise convolution
and SiLU on $x$, a diagonal SSM over $x$ per channel, a gate $y \odot \mathrm{SiLU}(z)$ and $W_{\text{out}}$.
They differ only in the SSM:

- ``"mamba"``: $\Delta_t = \mathrm{softplus}(W_\Delta W_r x_t + b)$, $B_t = W_B x_t$, $C_t = W_C x_t$, the
  selective scan (:func:`~minilib.ssm.selective_scan_chunked` in training, one step per token when decoding);
- ``"s4d"``: $\Delta, B, C$ fixed per channel (S4D-Lin :cite:`gu2022s4d`), a convolution with
  :func:`~minilib.ssm.s4d_kernel` by :func:`~minilib.ssm.fft_conv` in training, the recurrence when decoding.

:class:`H3Mixer` (``"h3"``) combines a shift SSM on the keys with a diagonal SSM on keys times values.
Every decoding state (:class:`SSMCache`) is fixed-size: the last ``d_conv - 1`` convolution inputs and the
SSM state, whatever the length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_last_dim, check_positive_int
from minilib.convolution import fft_conv
from minilib.mixing import TokenMixer, register_mixer
from minilib.ssm.lti import s4d_init, s4d_kernel, s4d_recurrent
from minilib.ssm.selective import selective_scan_chunked, selective_scan_recurrent

__all__ = ["SSMCache", "MambaMixer", "S4DMixer", "H3Mixer"]


class SSMCache:
    """Decoding state of one SSM mixer: ``conv (B, d_conv - 1, d_inner)``, ``state`` and ``length`` (positions seen)."""

    def __init__(self):
        self.conv, self.state, self.length = None, None, 0


def _check_ssm_call(x: torch.Tensor, d_model: int, cache) -> None:
    """What every SSM mixer's forward checks: ``x`` is ``(B, T, d_model)`` and ``cache`` an :class:`SSMCache` or None."""
    check_last_dim("x", x, d_model, ndim=3)
    if cache is not None and not isinstance(cache, SSMCache):
        raise TypeError(f"cache must be an SSMCache (from new_cache()) or None, got {type(cache).__name__}")


def _causal_depthwise_conv(conv: nn.Conv1d, x: torch.Tensor, cache: SSMCache | None) -> torch.Tensor:
    """Depthwise causal convolution of ``x (B, T, C)``: left-pad with zeros, or with the cache's tail when decoding."""
    width = conv.kernel_size[0] - 1
    if cache is not None and cache.conv is not None and cache.conv.shape[0] != x.shape[0]:
        raise ValueError(f"x of batch {x.shape[0]} continues a cache holding batch {cache.conv.shape[0]}; "
                         f"x {tuple(x.shape)}, cache.conv {tuple(cache.conv.shape)}")
    past = x.new_zeros(x.shape[0], width, x.shape[2]) if cache is None or cache.conv is None else cache.conv
    padded = torch.cat([past, x], dim=1)
    if cache is not None:
        cache.conv = padded[:, padded.shape[1] - width:]
    return conv(padded.transpose(1, 2)).transpose(1, 2)


class _GatedSSM(TokenMixer):
    """The shared skeleton; subclasses implement ``_ssm(x (B, T, d_inner), cache) -> (B, T, d_inner)``."""

    causal = True

    def __init__(self, d_model: int, *, d_state: int, expand: int, d_conv: int):
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("expand", expand), ("d_conv", d_conv)):
            check_positive_int(name, value)
        self.d_model, self.d_state, self.d_inner, self.d_conv = d_model, d_state, expand * d_model, d_conv
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def new_cache(self) -> SSMCache:
        return SSMCache()

    def _causal_conv(self, x: torch.Tensor, cache: SSMCache | None) -> torch.Tensor:
        return _causal_depthwise_conv(self.conv, x, cache)

    def forward(self, x: torch.Tensor, *, cache: SSMCache | None = None) -> torch.Tensor:
        _check_ssm_call(x, self.d_model, cache)
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        xi = F.silu(self._causal_conv(xi, cache))
        y = self._ssm(xi, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return self.out_proj(y * F.silu(z))


class MambaMixer(_GatedSSM):
    r"""Mamba block :cite:`gu2023mamba`: input-dependent $\Delta_t, B_t, C_t$ and the selective scan.

    $A = -e^{A_{\log}}$ starts at $-(1, 2, \dots, N)$ per channel (S4D-Real); $\Delta$'s bias is set so that
    $\mathrm{softplus}(b)$ is log-uniform in ``[dt_min, dt_max]``. ``chunk_size`` sets the training-time scan.
    ``A_log``, ``D`` and ``dt_bias`` carry ``_no_weight_decay = True``, which :func:`minilib.models.train` honours.
    The projections keep PyTorch's default init, uniform in $\pm 1/\sqrt{d_\text{in}}$, as in Mamba's reference
    (``owns_init``): under a language model's $\mathcal N(0, 0.02^2)$ the input-dependent $B_t, C_t$ start about
    4x smaller and the model sits at chance for hundreds of steps on selective copying.
    """

    owns_init = True

    def __init__(self, d_model: int, *, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, chunk_size: int = 64):
        super().__init__(d_model, d_state=d_state, expand=expand, d_conv=d_conv)
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        check_positive_int("dt_rank", self.dt_rank)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        # Delta's bias must keep this init: a zero bias would make every Delta softplus(0) = 0.69 and, with
        # A = -(1..N), forget within a few steps.
        bound = self.dt_rank ** -0.5
        self.dt_weight = nn.Parameter(torch.empty(self.d_inner, self.dt_rank).uniform_(-bound, bound))
        dt = torch.exp(torch.empty(self.d_inner).uniform_(math.log(dt_min), math.log(dt_max)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^{-1}(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # as in Mamba: decay would pull A towards -1 and Delta towards softplus(0)

    def _ssm(self, x: torch.Tensor, cache: SSMCache | None) -> torch.Tensor:
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(F.linear(dt, self.dt_weight, self.dt_bias))
        A = -torch.exp(self.A_log)
        if cache is None:
            return selective_scan_chunked(x, delta, A, B, C, self.D, chunk_size=self.chunk_size)
        scan = selective_scan_recurrent if x.shape[1] == 1 else selective_scan_chunked
        kwargs = {} if x.shape[1] == 1 else {"chunk_size": self.chunk_size}
        y, cache.state = scan(x, delta, A, B, C, self.D, state=cache.state, return_state=True, **kwargs)
        return y


class S4DMixer(_GatedSSM):
    r"""The same block with a linear time-invariant S4D-Lin SSM :cite:`gu2022s4d`: a learned long convolution.

    Per channel $A_n = -e^{a_n} + i\,\omega_n$ ($n < N/2$, one of each conjugate pair), $B = 1$, learned complex
    $C$ and $\log\Delta$; training convolves with :func:`~minilib.ssm.s4d_kernel` by FFT.
    """

    def __init__(self, d_model: int, *, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_min: float = 1e-3,
                 dt_max: float = 1e-1):
        super().__init__(d_model, d_state=d_state, expand=expand, d_conv=d_conv)
        half = max(d_state // 2, 1)
        A = s4d_init(half, kind="lin", channels=self.d_inner)
        self.log_neg_real = nn.Parameter(torch.log(-A.real).float())
        self.imag = nn.Parameter(A.imag.float())
        self.C = nn.Parameter(torch.randn(self.d_inner, half, 2) * 0.5 ** 0.5)
        self.log_dt = nn.Parameter(torch.empty(self.d_inner).uniform_(math.log(dt_min), math.log(dt_max)))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def ssm_parameters(self):
        """``(A, B, C, dt)`` as :func:`~minilib.ssm.s4d_kernel` takes them, in complex128/float64."""
        A = torch.complex(-torch.exp(self.log_neg_real.double()), self.imag.double())
        C = torch.view_as_complex(self.C.double().contiguous())
        return A, torch.ones_like(A), C, torch.exp(self.log_dt.double())

    def _ssm(self, x: torch.Tensor, cache: SSMCache | None) -> torch.Tensor:
        A, B, C, dt = self.ssm_parameters()
        u = x.transpose(1, 2)  # (B, d_inner, T)
        if cache is None:
            y = fft_conv(u, s4d_kernel(A, B, C, dt, x.shape[1]))
        else:
            y, cache.state = s4d_recurrent(u, A, B, C, dt, state=cache.state, return_state=True)
        return y.transpose(1, 2) + self.D * x


class H3Mixer(TokenMixer):
    r"""H3 :cite:`fu2023h3`: a shift SSM on the keys, a diagonal SSM on $K \otimes V$, read by the queries.

    Per head (size $d_h$): $\tilde K = \mathrm{shift}(K)$ (a causal depthwise convolution of width
    ``shift``, i.e. an SSM whose $A$ is the shift matrix), $S_t = \mathrm{SSM}_{\text{diag}}(\tilde K_t V_t^\top)$
    for each of the $d_h^2$ entries (S4D-Lin kernels by :func:`~minilib.ssm.fft_conv`), $y_t = S_t^\top Q_t$,
    then the output projection. The shift lets a token be compared with its predecessor (the induction
    pattern), the diagonal SSM remembers the pairs: associative recall without attention.
    """

    causal = True

    def __init__(self, d_model: int, n_heads: int, *, d_state: int = 8, shift: int = 4, dt_min: float = 1e-3,
                 dt_max: float = 1e-1):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("d_state", d_state), ("shift", shift)):
            check_positive_int(name, value)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = nn.Conv1d(d_model, d_model, shift, groups=d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        channels, half = n_heads * self.head_dim ** 2, max(d_state // 2, 1)
        A = s4d_init(half, kind="lin", channels=channels)
        self.log_neg_real = nn.Parameter(torch.log(-A.real).float())
        self.imag = nn.Parameter(A.imag.float())
        self.C = nn.Parameter(torch.randn(channels, half, 2) * 0.5 ** 0.5)
        self.log_dt = nn.Parameter(torch.empty(channels).uniform_(math.log(dt_min), math.log(dt_max)))

    ssm_parameters = S4DMixer.ssm_parameters

    def new_cache(self) -> SSMCache:
        return SSMCache()

    def forward(self, x: torch.Tensor, *, cache: SSMCache | None = None) -> torch.Tensor:
        check_last_dim("x", x, self.d_model, ndim=3)
        Bt, T, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k = _causal_depthwise_conv(self.conv, k, cache)
        H, dh = self.n_heads, self.head_dim
        kv = (k.view(Bt, T, H, dh, 1) * v.view(Bt, T, H, 1, dh)).reshape(Bt, T, H * dh * dh).transpose(1, 2)
        A, B, C, dt = self.ssm_parameters()
        if cache is None:
            s = fft_conv(kv, s4d_kernel(A, B, C, dt, T))
        else:
            s, cache.state = s4d_recurrent(kv, A, B, C, dt, state=cache.state, return_state=True)
            cache.length += T
        s = s.transpose(1, 2).reshape(Bt, T, H, dh, dh)
        y = torch.einsum("bthij,bthi->bthj", s, q.view(Bt, T, H, dh))
        return self.out_proj(y.reshape(Bt, T, self.d_model))


def _factory(cls):
    def factory(config, layer: int):
        return cls(config.d_model, **config.mixer_kwargs)
    return factory


register_mixer("mamba", _factory(MambaMixer))
register_mixer("s4d", _factory(S4DMixer))
register_mixer("h3", lambda config, layer: H3Mixer(config.d_model, config.n_heads, **config.mixer_kwargs))
