r"""Model compression: fake (simulated) quantization of weights and activations.

A *fake* quantizer rounds a float tensor to the grid an integer format can represent and returns
the result as floats again, so a model can be evaluated "as if" it ran in INT8 without integer
kernels :cite:`jacob2018quantization`, :cite:`nagel2021white`. Chapter 2 uses it to measure how
much activation outliers cost an 8-bit model (W8A8: 8-bit weights and 8-bit inputs of every
linear layer) :cite:`bondarenko2023quantizable`.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from minilib._checks import check_flag, check_nonnegative_int, check_number, check_positive_int, require_tensor

__all__ = ["quantization_scale", "fake_quantize", "fake_quantized", "quantized_weights", "quantize_int", "fp_grid",
           "fp_quantize", "search_fp_format", "power_of_two_scales", "fold_input_scales", "binarize", "ternarize",
           "ElasticActQuant"]


def _check_bits(bits, name: str = "bits") -> int:
    if not 2 <= check_positive_int(name, bits) <= 16:
        raise ValueError(f"{name} must be an int in [2, 16], got {bits!r}")
    return bits


def quantization_scale(x: torch.Tensor, *, bits: int = 8) -> torch.Tensor:
    r"""Step of the symmetric per-tensor grid that just covers ``x``: $\Delta = \max_i |x_i| \,/\, (2^{b-1} - 1)$.

    ``x`` any shape -> a 0-d tensor (``127`` levels each side of zero for ``bits=8``). An all-zero ``x``
    gives $\Delta = 0$. See :cite:`nagel2021white`.
    """
    require_tensor("x", x, floating=True)
    bits = _check_bits(bits)
    return x.detach().abs().amax() / (2 ** (bits - 1) - 1)


def fake_quantize(x: torch.Tensor, *, bits: int = 8, scale: torch.Tensor | float | None = None) -> torch.Tensor:
    r"""Round ``x`` to the symmetric ``bits``-bit integer grid and back to floats (per-tensor, round to nearest).

    $$ \hat x = \Delta \cdot \operatorname{clamp}\!\big(\operatorname{round}(x / \Delta),\ -q_{\max},\ q_{\max}\big),
       \qquad q_{\max} = 2^{b-1} - 1, \quad \Delta = \max_i |x_i| / q_{\max} $$

    ``round`` is round-half-to-even (:func:`torch.round`). With the default ``scale`` nothing is clipped
    and $|\hat x - x| \le \Delta / 2$; a given ``scale`` (a float or a 0-d tensor) clips values beyond
    $q_{\max}\Delta$. The gradient is the straight-through estimator $\partial \hat x / \partial x = 1$
    :cite:`bengio2013estimating`, so the same function serves quantization-aware training.
    ``x`` any shape -> same shape and dtype. An all-zero ``x`` is returned unchanged.
    See :cite:`jacob2018quantization`, :cite:`bondarenko2023quantizable`.
    """
    require_tensor("x", x, floating=True)
    bits = _check_bits(bits)
    q_max = 2 ** (bits - 1) - 1
    step = quantization_scale(x, bits=bits) if scale is None else torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    if step.ndim != 0 or step < 0:
        raise ValueError(f"scale must be a non-negative scalar, got {scale!r}")
    if step == 0:
        return x
    rounded = torch.clamp(torch.round(x.detach() / step), -q_max, q_max) * step
    return x + (rounded - x.detach())


class _WeightFunction(nn.Module):
    """Parametrization that replaces a weight by ``quantizer(weight)``."""

    def __init__(self, quantizer: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.quantizer(weight)


@contextlib.contextmanager
def quantized_weights(model: nn.Module, quantizer: Callable[[torch.Tensor], torch.Tensor], *,
                      layer_types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> Iterator[nn.Module]:
    r"""Run ``model`` with the weight $W$ of every module of ``layer_types`` replaced by ``quantizer(W)``.

    ``quantizer`` maps a weight to a tensor of the same shape (e.g. ``ternarize``, or
    ``lambda w: fp_quantize(w, exp_bits=2, man_bits=1)``); gradients flow through it to the float weights, so
    quantization-aware training runs inside the block. On exit the original weights are restored exactly.
    Yields ``model``. See :cite:`nagel2021white`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(quantizer):
        raise TypeError(f"quantizer must be callable, got {type(quantizer).__name__}")
    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    done = []
    try:
        for layer in layers:
            parametrize.register_parametrization(layer, "weight", _WeightFunction(quantizer))
            done.append(layer)
        yield model
    finally:
        for layer in done:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)


@contextlib.contextmanager
def fake_quantized(model: nn.Module, *, weight_bits: int | None = 8, act_bits: int | None = 8,
                   layer_types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> Iterator[nn.Module]:
    r"""Run ``model`` with the weights and the inputs of its linear layers fake-quantized (W8A8 by default).

    $$ y = \hat W_{b_w}\, \hat x_{b_a} + c $$

    for every module of ``layer_types`` in ``model``, $\hat\cdot$ being :func:`fake_quantize` with one scale per
    tensor: per weight matrix, and per input tensor of each call (dynamic activation quantization, the scale
    taken from the batch it sees). Biases stay in float, as they would in 32-bit integer accumulators.
    ``weight_bits=None`` or ``act_bits=None`` leaves that side in float. Inside the ``with`` block the model
    is changed in place (gradients pass straight through, so it can also be trained there); on exit
    the original modules and weights are restored exactly. Yields ``model``. Everything outside the listed
    layer types (embeddings, norms, the softmax, residual additions, a tied output head written as a matrix
    product) stays in float. See :cite:`bondarenko2023quantizable`, :cite:`nagel2021white`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weight_bits = None if weight_bits is None else _check_bits(weight_bits, "weight_bits")
    act_bits = None if act_bits is None else _check_bits(act_bits, "act_bits")
    hooks = []
    try:
        if act_bits is not None:
            for layer in [m for m in model.modules() if isinstance(m, layer_types)]:
                hooks.append(layer.register_forward_pre_hook(
                    lambda module, args: (fake_quantize(args[0], bits=act_bits),) + tuple(args[1:])))
        with contextlib.ExitStack() as stack:
            if weight_bits is not None:
                stack.enter_context(quantized_weights(model, functools.partial(fake_quantize, bits=weight_bits),
                                                      layer_types=layer_types))
            yield model
    finally:
        for hook in hooks:
            hook.remove()


def _ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """``quantized`` in the forward pass, gradient 1 to ``x`` (straight-through estimator)."""
    return x + (quantized - x).detach()


def _grouped(x: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """``x`` viewed as ``(n_groups, group)``: one row for the tensor, per last-dim row, or per ``group_size`` run."""
    if granularity == "tensor":
        return x.reshape(1, -1)
    if x.ndim < 1:
        raise ValueError(f"x must have at least one dimension for granularity={granularity!r}")
    if granularity == "channel":
        return x.reshape(-1, x.shape[-1])
    if granularity == "group":
        if group_size is None or check_positive_int("group_size", group_size) and x.shape[-1] % group_size:
            raise ValueError(f"group_size must divide the last dimension of x {tuple(x.shape)}, got {group_size!r}")
        return x.reshape(-1, group_size)
    raise ValueError(f"granularity must be 'tensor', 'channel' or 'group', got {granularity!r}")


def quantize_int(x: torch.Tensor, *, bits: int = 8, granularity: str = "tensor", group_size: int | None = None,
                 symmetric: bool = True) -> torch.Tensor:
    r"""Fake-quantize ``x`` to a ``bits``-bit integer grid with one scale per tensor, per channel or per group.

    Symmetric: $\hat x = \Delta\,\operatorname{clamp}(\operatorname{round}(x/\Delta), -q_{\max}, q_{\max})$ with
    $\Delta = \max|x| / q_{\max}$, $q_{\max} = 2^{b-1}-1$. Asymmetric (a zero point $z$):
    $\Delta = (\max x - \min x)/(2^b - 1)$, $z = \operatorname{round}(-\min x / \Delta)$,
    $\hat x = \Delta\,(\operatorname{clamp}(\operatorname{round}(x/\Delta) + z, 0, 2^b - 1) - z)$.
    The max/min run over the whole tensor (``"tensor"``), each row of the last dimension (``"channel"``: for a
    weight ``(out, in)`` one scale per output channel) or each run of ``group_size`` consecutive entries of the
    last dimension (``"group"``). Gradient: straight-through. ``x`` any shape -> same shape. See
    :cite:`nagel2021white`, :cite:`jacob2018quantization`.
    """
    require_tensor("x", x, floating=True)
    bits = _check_bits(bits)
    check_flag("symmetric", symmetric)
    rows = _grouped(x.detach(), granularity, group_size)
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        step = rows.abs().amax(dim=1, keepdim=True) / q_max
        safe = torch.where(step > 0, step, torch.ones_like(step))
        q = torch.clamp(torch.round(rows / safe), -q_max, q_max) * step
    else:
        low, high = rows.amin(dim=1, keepdim=True), rows.amax(dim=1, keepdim=True)
        step = (high - low) / (2 ** bits - 1)
        safe = torch.where(step > 0, step, torch.ones_like(step))
        zero = torch.round(-low / safe)
        q = (torch.clamp(torch.round(rows / safe) + zero, 0, 2 ** bits - 1) - zero) * step
        q = torch.where(step > 0, q, rows)
    return _ste(x, q.reshape(x.shape))


def fp_grid(exp_bits: int, man_bits: int, *, bias: float | None = None) -> torch.Tensor:
    r"""The non-negative values of a sign + ``exp_bits`` + ``man_bits`` floating-point format, sorted (float64).

    Every code is finite (no inf/NaN, as in the OCP FP4/FP8 "FN" formats). Exponent field $E$, mantissa $M$:
    $$ v = \begin{cases} 2^{1-b}\, M / 2^{m} & E = 0 \text{ (subnormal)}\\
                          2^{E-b}\,(1 + M/2^{m}) & E > 0 \end{cases}, \qquad b = 2^{e-1} - 1 \text{ by default.} $$
    E2M1 gives $\{0, 0.5, 1, 1.5, 2, 3, 4, 6\}$. A real ``bias`` $b$ scales the grid by $2^{-b}$: LLM-FP4 searches it
    in place of a clipping value :cite:`liu2023llmfp4`.
    """
    check_positive_int("exp_bits", exp_bits)
    check_nonnegative_int("man_bits", man_bits)
    if exp_bits + man_bits > 10:
        raise ValueError(f"exp_bits + man_bits must be at most 10, got exp_bits={exp_bits}, man_bits={man_bits}")
    b = float(2 ** (exp_bits - 1) - 1) if bias is None else check_number("bias", bias)
    values = set()
    for e in range(2 ** exp_bits):
        for m in range(2 ** man_bits):
            frac = m / 2 ** man_bits
            values.add(2.0 ** (1 - b) * frac if e == 0 else 2.0 ** (e - b) * (1 + frac))
    return torch.tensor(sorted(values), dtype=torch.float64)


def fp_quantize(x: torch.Tensor, *, exp_bits: int = 2, man_bits: int = 1, max_value: torch.Tensor | float | None = None,
                granularity: str = "tensor", group_size: int | None = None) -> torch.Tensor:
    r"""Fake-quantize ``x`` to a sign + ``exp_bits`` + ``man_bits`` floating-point format (E2M1 = FP4 by default).

    The format's grid (:func:`fp_grid`) is scaled so its largest value is the clipping value $c$ (``max_value``;
    default $\max|x|$ per tensor/channel/group as in :func:`quantize_int`), which is the same as choosing a real
    exponent bias $b = 2^e - 1 - \log_2\!\big(c / (2 - 2^{-m})\big)$ :cite:`liu2023llmfp4`. Each $|x|$ is rounded
    to the nearest grid value (ties to the lower one), values beyond $c$ are clipped, the sign is kept:
    $\hat x = \operatorname{sign}(x)\, \tfrac{c}{g_{\max}}\, \operatorname{nearest}_g\!\big(\min(|x|, c)\, g_{\max}/c\big)$.
    Gradient: straight-through. ``x`` any shape -> same shape and dtype.
    """
    require_tensor("x", x, floating=True)
    grid = fp_grid(exp_bits, man_bits).to(x.dtype)
    rows = _grouped(x.detach(), granularity, group_size)
    if max_value is None:
        clip = rows.abs().amax(dim=1, keepdim=True)
    else:
        clip = torch.as_tensor(max_value, dtype=x.dtype)
        if clip.numel() != 1 or clip <= 0:
            raise ValueError(f"max_value must be one positive number, got {max_value!r}")
        clip = clip.reshape(1, 1)
    scale = clip / grid[-1]
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    mag = torch.minimum(rows.abs() / safe, grid[-1])
    idx = torch.searchsorted(grid, mag).clamp(1, grid.numel() - 1)
    low, high = grid[idx - 1], grid[idx]
    nearest = torch.where(mag - low <= high - mag, low, high)
    q = torch.where(scale > 0, torch.sign(rows) * nearest * scale, rows)
    return _ste(x, q.reshape(x.shape))


def search_fp_format(x: torch.Tensor, *, bits: int = 4, clip_ratios: torch.Tensor | None = None,
                     granularity: str = "tensor", group_size: int | None = None) -> dict:
    r"""LLM-FP4's format search: the exponent/mantissa split and clipping value minimising $\lVert \hat x - x\rVert^2$.

    Tries every split $e + m = b - 1$ ($e \ge 1$) and every clipping value $c = \rho \max|x|$ for $\rho$ in
    ``clip_ratios`` (default 40 values in $[0.3, 1]$), with :func:`fp_quantize`. Returns
    ``dict(exp_bits, man_bits, clip_ratio, bias, mse)`` where ``bias`` is the equivalent real exponent bias.
    Per-channel / per-group granularity uses one shared ratio. See :cite:`liu2023llmfp4`.
    """
    require_tensor("x", x, floating=True)
    if not 3 <= check_positive_int("bits", bits) <= 8:
        raise ValueError(f"bits must be an int in [3, 8], got {bits!r}")
    ratios = torch.linspace(0.3, 1.0, 40) if clip_ratios is None else torch.as_tensor(clip_ratios, dtype=torch.float64)
    if ratios.ndim != 1 or ratios.numel() == 0 or (ratios <= 0).any():
        raise ValueError(f"clip_ratios must be a non-empty 1-d tensor of positive ratios, got {clip_ratios!r}")
    x = x.detach()
    rows = _grouped(x, granularity, group_size)
    absmax = rows.abs().amax(dim=1, keepdim=True)
    best = None
    for exp_bits in range(1, bits):
        man_bits = bits - 1 - exp_bits
        for ratio in ratios.tolist():
            grid_max = fp_grid(exp_bits, man_bits)[-1].item()
            scale = (absmax * ratio / grid_max).clamp_min(torch.finfo(x.dtype).tiny)
            q = fp_quantize(rows / scale, exp_bits=exp_bits, man_bits=man_bits, max_value=grid_max) * scale
            mse = (q - rows).pow(2).mean().item()
            if best is None or mse < best["mse"]:
                clip = ratio * absmax.max().item()
                bias = 2 ** exp_bits - 1 - math.log2(clip / (2 - 2 ** -man_bits)) if clip > 0 else 0.0
                best = dict(exp_bits=exp_bits, man_bits=man_bits, clip_ratio=ratio, bias=bias, mse=mse)
    return best


def power_of_two_scales(channel_absmax: torch.Tensor) -> torch.Tensor:
    r"""Per-channel activation scales rounded to powers of two: $s_c = 2^{\operatorname{round}\log_2(a_c / \max_j a_j)}$.

    ``channel_absmax (C,)`` (positive) -> ``(C,)``. Dividing an activation by $s_c$ only shifts its exponent, so it
    is exact in floating point, and the scale folds into the next linear layer: $W x = (W \operatorname{diag}(s))
    (x / s)$ (:func:`fold_input_scales`). LLM-FP4 calls this the pre-shifted exponent bias :cite:`liu2023llmfp4`.
    """
    require_tensor("channel_absmax", channel_absmax, ndim=1, floating=True)
    if (channel_absmax <= 0).any():
        raise ValueError("channel_absmax must be positive")
    return 2.0 ** torch.round(torch.log2(channel_absmax / channel_absmax.max()))


def fold_input_scales(linear: nn.Linear, scales: torch.Tensor) -> nn.Linear:
    r"""A copy of ``linear`` that expects its input divided by ``scales``: $W' = W \operatorname{diag}(s)$, bias kept.

    ``linear`` maps ``in_features = C``; ``scales (C,)``. Then ``folded(x / scales) == linear(x)`` up to float
    rounding (exactly when the scales are powers of two and nothing overflows). See :cite:`liu2023llmfp4`.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    require_tensor("scales", scales, ndim=1, floating=True)
    if scales.shape[0] != linear.in_features:
        raise ValueError(f"scales must have in_features={linear.in_features} entries, got shape {tuple(scales.shape)}")
    folded = copy.deepcopy(linear)
    with torch.no_grad():
        folded.weight.mul_(scales.to(folded.weight.dtype))
    return folded


def binarize(w: torch.Tensor) -> torch.Tensor:
    r"""Binary weights: $\hat w = \alpha\,\operatorname{sign}(w)$, $\alpha = \operatorname{mean}|w|$ per output row.

    $\alpha$ is the scale that minimises $\lVert \alpha\operatorname{sign}(w) - w \rVert^2$. ``sign(0) = +1``.
    ``w (out, in)`` (or any shape: one scale per row of the last dimension) -> same shape; gradient:
    straight-through. See :cite:`liu2023binary`, :cite:`bengio2013estimating`.
    """
    require_tensor("w", w, floating=True)
    if w.ndim < 1:
        raise ValueError("w must have at least one dimension")
    alpha = w.detach().abs().mean(dim=-1, keepdim=True)
    signs = torch.where(w.detach() >= 0, 1.0, -1.0).to(w.dtype)
    return _ste(w, alpha * signs)


def ternarize(w: torch.Tensor) -> torch.Tensor:
    r"""Ternary weights (absmean, BitNet b1.58 style): $\hat w = \gamma\,\operatorname{clamp}(\operatorname{round}(w/\gamma), -1, 1)$.

    $\gamma = \operatorname{mean}|w|$ per output row, so weights below $\gamma/2$ in magnitude become 0.
    ``w (out, in)`` (any shape, one scale per row of the last dimension) -> same shape; gradient:
    straight-through. Two bits per weight instead of 32: 16x less weight memory. See :cite:`liu2023binary`.
    """
    require_tensor("w", w, floating=True)
    if w.ndim < 1:
        raise ValueError("w must have at least one dimension")
    gamma = w.detach().abs().mean(dim=-1, keepdim=True)
    safe = torch.where(gamma > 0, gamma, torch.ones_like(gamma))
    return _ste(w, torch.clamp(torch.round(w.detach() / safe), -1, 1) * gamma)


class ElasticActQuant(nn.Module):
    r"""Learnable-range (elastic) activation quantizer: a trained scale $\alpha$ and offset $\beta$.

    $$ \hat x = \alpha\, \operatorname{clamp}\!\big(\lfloor (x - \beta)/\alpha \rceil,\ q_{\min},\ q_{\max}\big) + \beta $$

    with $[q_{\min}, q_{\max}] = [-2^{b-1}, 2^{b-1}-1]$. Only the rounding is straight-through, so $\alpha$ and
    $\beta$ receive gradients (clipped values pull on the range). Initialised from the first batch it sees:
    $\beta = $ its mean, $\alpha = \max|x - \beta| / q_{\max}$. ``x`` any shape -> same shape.
    See :cite:`liu2023binary`.
    """

    def __init__(self, bits: int = 8):
        super().__init__()
        self.bits = _check_bits(bits)
        self.scale = nn.Parameter(torch.ones(()))
        self.offset = nn.Parameter(torch.zeros(()))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, floating=True)
        q_min, q_max = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        if not self.initialized:
            with torch.no_grad():
                self.offset.copy_(x.mean())
                self.scale.copy_(((x - x.mean()).abs().max() / q_max).clamp_min(1e-8))
                self.initialized.fill_(True)
        t = (x - self.offset) / self.scale
        rounded = t + (torch.round(t) - t).detach()
        return torch.clamp(rounded, q_min, q_max) * self.scale + self.offset
