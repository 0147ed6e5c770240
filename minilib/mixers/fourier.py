r"""Fourier token mixers: FNet's parameter-free 2-D FFT, adaptive frequency filters (a global convolution) and
the DCT that the Fourier Transformer uses to shorten a sequence.

Every function takes ``x (B, L, C)``; the FFTs run along the sequence (``dim=1``) unless stated otherwise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_positive_int, require_tensor
from minilib.convolution import fft_conv
from minilib.mixers._common import check_x as _check_x, register_causal
from minilib.mixing import TokenMixer

__all__ = ["fourier_mix", "aff_mix", "dct", "idct", "dct_matrix", "dct_downsample",
           "FourierMixer", "AFFMixer", "DCTLowpassMixer"]


def fourier_mix(x: torch.Tensor) -> torch.Tensor:
    r"""FNet's token mixer: the real part of the 2-D discrete Fourier transform over sequence and hidden dims.

    $$ y = \operatorname{Re}\big(\mathcal F_{\text{seq}}(\mathcal F_{\text{hidden}}(x))\big), \qquad
       y_{t,c} = \operatorname{Re}\sum_{s,d} e^{-2\pi i\, ts/L}\, e^{-2\pi i\, cd/C}\, x_{s,d} $$

    No parameters, $O(LC \log(LC))$. Every output reads every token, so it has no causal form.
    ``x (B, L, C)`` -> ``(B, L, C)``. See :cite:`lee2022fnet`.
    """
    _check_x(x)
    return torch.fft.fft2(x, dim=(1, 2)).real


def aff_mix(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    r"""Adaptive frequency filtering: FFT over tokens, elementwise product with a filter, inverse FFT.

    $$ y = \mathcal F^{-1}\big(\mathcal F(x) \odot \hat h\big) = h \circledast x, \qquad
       y_{t,c} = \sum_{s=0}^{L-1} h_{(t-s) \bmod L,\,c}\; x_{s,c}, \quad h = \mathcal F^{-1}(\hat h) $$

    a global *circular* convolution with the kernel $h$ whose spectrum is the filter (convolution theorem).
    ``x (B, L, C)``, ``filt`` complex ``(B or 1, L // 2 + 1, C)`` (the half spectrum of a real kernel, as
    ``torch.fft.rfft`` returns it) -> ``(B, L, C)``. In AFF the filter is computed from $\mathcal F(x)$ itself
    (:class:`AFFMixer`), which makes the mixer input-adaptive. See :cite:`huang2023aff`.
    """
    _check_x(x)
    require_tensor("filt", filt, ndim=3)
    L = x.shape[1]
    if not filt.is_complex() or filt.shape[1:] != (L // 2 + 1, x.shape[2]) or filt.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"filt must be a complex (B or 1, L // 2 + 1 = {L // 2 + 1}, C = {x.shape[2]}) half "
                         f"spectrum for x {tuple(x.shape)}, got {tuple(filt.shape)} {filt.dtype}")
    return torch.fft.irfft(torch.fft.rfft(x, dim=1) * filt, n=L, dim=1)


def dct_matrix(n: int, *, dtype=torch.float64) -> torch.Tensor:
    r"""The orthonormal DCT-II matrix $D_{kj} = s_k \cos\!\big(\pi (2j+1) k / 2n\big)$, $s_0 = \sqrt{1/n}$, $s_k = \sqrt{2/n}$.

    ``(n, n)``, with $D D^\top = I$; the explicit form that :func:`dct` computes with an FFT. See :cite:`he2023fourier`.
    """
    check_positive_int("n", n)
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    scale = torch.full((n, 1), math.sqrt(2.0 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / n)
    return (scale * torch.cos(math.pi * (2 * j + 1) * k / (2 * n))).to(dtype)


def dct(x: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    r"""Orthonormal DCT-II along ``dim`` with one FFT of the same length (Makhoul's reordering).

    $$ v = (x_0, x_2, x_4, \dots, x_5, x_3, x_1), \qquad X_k = s_k\, \operatorname{Re}\big(e^{-i\pi k/2n}\, \mathcal F(v)_k\big) $$

    equals ``dct_matrix(n) @ x`` along ``dim``; $O(n \log n)$ instead of $O(n^2)$. See :cite:`he2023fourier`.
    """
    require_tensor("x", x, floating=True)
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    k = torch.arange(n, dtype=x.dtype, device=x.device)
    X = (torch.fft.fft(v, dim=-1) * torch.exp(-1j * math.pi * k / (2 * n))).real
    X = X * math.sqrt(2.0 / n)
    X[..., 0] = X[..., 0] / math.sqrt(2.0)
    return X.movedim(-1, dim)


def idct(X: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    r"""Inverse of :func:`dct` (the orthonormal DCT-III) along ``dim``, also with one FFT: ``dct_matrix(n).T @ X``."""
    require_tensor("X", X, floating=True)
    X = X.movedim(dim, -1)
    n = X.shape[-1]
    k = torch.arange(n, dtype=X.dtype, device=X.device)
    scaled = X * math.sqrt(n / 2.0)
    scaled = torch.cat([scaled[..., :1] * math.sqrt(2.0), scaled[..., 1:]], dim=-1)
    # V_k = e^{i pi k / 2n} (X_k - i X_{n-k}) is the FFT of the reordered signal v
    flipped = torch.cat([torch.zeros_like(scaled[..., :1]), scaled[..., 1:].flip(-1)], dim=-1)
    V = torch.exp(1j * math.pi * k / (2 * n)) * (scaled - 1j * flipped)
    v = torch.fft.ifft(V, dim=-1).real
    x = torch.empty_like(v)
    half = (n + 1) // 2
    x[..., ::2] = v[..., :half]
    x[..., 1::2] = v[..., half:].flip(-1)
    return x.movedim(-1, dim)


def dct_downsample(x: torch.Tensor, keep: int) -> torch.Tensor:
    r"""The Fourier Transformer's shortening: keep the ``keep`` lowest DCT coefficients of the sequence, and
    read them back as a sequence of length ``keep``.

    $$ y = \sqrt{k/L}\; D_k^\top \big[(D_L x)_{0:k}\big] $$

    A smooth sequence survives (a constant one exactly); the FLOPs of every later layer shrink by $k/L$ (quadratic
    attention by $(k/L)^2$). ``x (B, L, C)`` -> ``(B, keep, C)``. See :cite:`he2023fourier`.
    """
    _check_x(x)
    check_positive_int("keep", keep)
    L = x.shape[1]
    if keep > L:
        raise ValueError(f"keep must be at most the sequence length L={L} of x {tuple(x.shape)}, got {keep}")
    return idct(dct(x, dim=1)[:, :keep], dim=1) * math.sqrt(keep / L)


class FourierMixer(TokenMixer):
    """FNet's parameter-free :func:`fourier_mix`. It has no causal form: ``causal=True`` raises. See :cite:`lee2022fnet`."""

    causal = False

    def __init__(self, *, causal: bool = False):
        super().__init__()
        if causal:
            raise ValueError("causal=True is impossible for the Fourier mixer: every output of the FFT over the "
                             "sequence reads every token, future ones included (use it in an encoder, causal=False)")

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("FourierMixer has no incremental form (new_cache() is None); pass cache=None")
        return fourier_mix(x)


class AFFMixer(TokenMixer):
    r"""Adaptive frequency filter mixer: $y = \mathcal F^{-1}(\mathcal F(x) \odot (1 + m(\mathcal F(x))))$.

    The filter's deviation $m$ is a small per-frequency MLP on the real and imaginary parts of the input's spectrum
    (hidden width ``hidden``), so the global convolution adapts to the input :cite:`huang2023aff`. ``causal=True``
    cannot let a filter depend on the whole spectrum; it learns one input-independent kernel of ``max_len`` taps per
    channel instead, applied by :func:`~minilib.convolution.fft_conv` (no incremental form).
    """

    def __init__(self, d_model: int, *, max_len: int = 1024, hidden: int | None = None, causal: bool = False):
        super().__init__()
        check_positive_int("d_model", d_model)
        self.causal = causal
        if causal:
            kernel = torch.zeros(check_positive_int("max_len", max_len), d_model)
            kernel[0] = 1.0
            self.kernel = nn.Parameter(kernel + 0.02 * torch.randn_like(kernel))
        else:
            hidden = 2 * d_model if hidden is None else check_positive_int("hidden", hidden)
            self.filter_in = nn.Linear(2 * d_model, hidden)
            self.filter_out = nn.Linear(hidden, 2 * d_model)
            nn.init.zeros_(self.filter_out.weight)
            nn.init.zeros_(self.filter_out.bias)

    def frequency_filter(self, x: torch.Tensor) -> torch.Tensor:
        """The filter $1 + m(\\mathcal F(x))$ this mixer applies to ``x (B, L, C)``: complex ``(B, L // 2 + 1, C)``."""
        _check_x(x)
        spectrum = torch.fft.rfft(x, dim=1)
        m = self.filter_out(F.relu(self.filter_in(torch.cat([spectrum.real, spectrum.imag], dim=-1))))
        real, imag = m.chunk(2, dim=-1)
        return torch.complex(1.0 + real, imag)

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("AFFMixer has no incremental form (new_cache() is None); pass cache=None")
        _check_x(x)
        if self.causal:
            if x.shape[1] > self.kernel.shape[0]:
                raise ValueError(f"x has {x.shape[1]} positions, more than the kernel's max_len={self.kernel.shape[0]}")
            return fft_conv(x.transpose(1, 2), self.kernel[:x.shape[1]].T).transpose(1, 2)
        return aff_mix(x, self.frequency_filter(x))


class DCTLowpassMixer(TokenMixer):
    r"""The Fourier Transformer's shortening as a shape-keeping mixer: $y = D_L^\top P_k D_L x$, the projection of
    each channel onto its ``keep`` lowest DCT frequencies (``keep`` or the fraction ``keep_frac`` of $L$). Not causal.
    See :cite:`he2023fourier`.
    """

    causal = False

    def __init__(self, *, keep_frac: float = 0.5, causal: bool = False):
        super().__init__()
        if causal:
            raise ValueError("causal=True is impossible for the DCT low-pass mixer: each coefficient sums every token")
        if not 0.0 < keep_frac <= 1.0:
            raise ValueError(f"keep_frac must be in (0, 1], got {keep_frac!r}")
        self.keep_frac = keep_frac

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("DCTLowpassMixer has no incremental form; pass cache=None")
        _check_x(x)
        keep = max(1, round(self.keep_frac * x.shape[1]))
        coeffs = dct(x, dim=1)
        coeffs = torch.cat([coeffs[:, :keep], torch.zeros_like(coeffs[:, keep:])], dim=1)
        return idct(coeffs, dim=1)


register_causal("fourier", lambda config, causal, kw: FourierMixer(causal=causal, **kw))
register_causal("aff", lambda config, causal, kw: AFFMixer(config.d_model, max_len=config.max_len,
                                                          causal=causal, **kw))
register_causal("dct", lambda config, causal, kw: DCTLowpassMixer(causal=causal, **kw))
