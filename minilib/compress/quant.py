r"""Model compression: fake (simulated) quantization of weights and activations.

A *fake* quantizer rounds a float tensor to the grid an integer format can represent and returns
the result as floats again, so a model can be evaluated "as if" it ran in INT8 without integer
kernels :cite:`jacob2018quantization`, :cite:`nagel2021white`. Chapter 2 uses it to measure how
much activation outliers cost an 8-bit model (W8A8: 8-bit weights and 8-bit inputs of every
linear layer) :cite:`bondarenko2023quantizable`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from minilib._checks import check_positive_int, require_tensor

__all__ = ["quantization_scale", "fake_quantize", "fake_quantized"]


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


class _FakeQuantize(nn.Module):
    """Parametrization that replaces a weight by :func:`fake_quantize` of it."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, bits=self.bits)


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
    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    hooks, parametrized = [], []
    try:
        for layer in layers:
            if act_bits is not None:
                hooks.append(layer.register_forward_pre_hook(
                    lambda module, args: (fake_quantize(args[0], bits=act_bits),) + tuple(args[1:])))
            if weight_bits is not None:
                parametrize.register_parametrization(layer, "weight", _FakeQuantize(weight_bits))
                parametrized.append(layer)
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for layer in parametrized:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
