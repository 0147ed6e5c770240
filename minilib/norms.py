r"""Normalisation layers of the residual stream (LayerNorm, RMSNorm and relatives) and σReparam for weights.

Half-precision inputs (float16, bfloat16) are normalised in float32 and returned in their dtype, as torch's own
norms do (squares of float16 values above ~256 overflow). NaN inputs are not checked for and propagate to their rows.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_last_dim, check_positive_int

__all__ = ["LayerNorm", "RMSNorm", "CRMSNorm", "BiasNorm", "make_norm", "SigmaReparamLinear", "sigma_reparam_", "PRepBN"]

NORMS = ("rms", "layer")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is half precision: the squares of fp16 inputs above ~256 overflow."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    return float(eps)


class LayerNorm(nn.Module):
    r"""Layer normalisation over the last dimension.

    $$ \operatorname{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,\quad
       \mu = \tfrac1d \textstyle\sum_i x_i,\ \sigma^2 = \tfrac1d \sum_i (x_i - \mu)^2 $$

    ``x (..., d) -> (..., d)``; same output as ``torch.nn.LayerNorm(d, eps=eps)``. See :cite:`ba2016layernorm`.
    """

    def __init__(self, d: int, *, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.d, self.eps = check_positive_int("d", d), _check_eps(eps)
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d, size_name="d")
        xf = _at_least_float32(x)
        centred = xf - xf.mean(dim=-1, keepdim=True)
        y = (centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight
        return y if self.bias is None else y + self.bias


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation: LayerNorm without re-centring.

    $$ \operatorname{RMSNorm}(x) = \gamma \odot \frac{x}{\sqrt{\tfrac1d \sum_i x_i^2 + \epsilon}} $$

    ``x (..., d) -> (..., d)``; same output as ``torch.nn.RMSNorm(d, eps=eps)``. See :cite:`zhang2019rmsnorm`.
    """

    def __init__(self, d: int, *, eps: float = 1e-6):
        super().__init__()
        self.d, self.eps = check_positive_int("d", d), _check_eps(eps)
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d, size_name="d")
        xf = _at_least_float32(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class CRMSNorm(nn.Module):
    r"""Compressed RMSNorm: RMSNorm of a zero-mean $d$-vector stored in its first $d-1$ coordinates.

    A zero-mean $x \in \mathbb{R}^d$ is determined by $z = x_{1:d-1}$, since $x_d = -\sum_i z_i$. Then

    $$ \operatorname{CRMSNorm}(z) = \frac{z}{\sqrt{\tfrac1d\left(\sum_{i=1}^{d-1} z_i^2 + \big(\sum_{i=1}^{d-1} z_i\big)^2\right) + \epsilon}} $$

    equals the first $d-1$ coordinates of $\operatorname{RMSNorm}(x)$ with unit gain; the gain is
    folded into the next linear layer. ``z (..., d-1) -> (..., d-1)``; ``d`` is the implied size.
    See :cite:`jiang2023prermsnorm`.
    """

    def __init__(self, d: int, *, eps: float = 1e-6):
        super().__init__()
        if check_positive_int("d", d) < 2:
            raise ValueError(f"CRMSNorm needs the implied size d >= 2, got d={d}")
        self.d, self.eps = d, _check_eps(eps)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_last_dim("z", z, self.d - 1, size_name="d - 1")
        mean_square = (z.pow(2).sum(dim=-1, keepdim=True) + z.sum(dim=-1, keepdim=True).pow(2)) / self.d
        return z * torch.rsqrt(mean_square + self.eps)


class BiasNorm(nn.Module):
    r"""Zipformer's BiasNorm: divide by the RMS of the input shifted by a learned bias, scale by $e^\gamma$.

    $$ \operatorname{BiasNorm}(x) = \frac{x}{\operatorname{RMS}(x - b)}\, e^{\gamma},\qquad
       \operatorname{RMS}(v) = \sqrt{\tfrac1d \textstyle\sum_i v_i^2} $$

    with a channel-wise bias $b \in \mathbb{R}^d$ (used only inside the RMS) and a scalar $\gamma$.
    Unlike LayerNorm the output is not invariant to the input's length $\lVert x\rVert$ when $b \neq 0$.
    ``eps`` is added to the mean square (the paper writes none) so that ``x = b`` gives a finite output.
    ``x (..., d) -> (..., d)``. See :cite:`yao2024zipformer`.
    """

    def __init__(self, d: int, *, eps: float = 1e-6):
        super().__init__()
        self.d, self.eps = check_positive_int("d", d), _check_eps(eps)
        self.bias = nn.Parameter(torch.zeros(d))
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d, size_name="d")
        xf = _at_least_float32(x)
        rms = torch.rsqrt((xf - self.bias).pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (xf * rms).to(x.dtype) * self.log_scale.exp()


def make_norm(kind: str, d: int) -> nn.Module:
    """The norm a config names: ``"rms"`` -> :class:`RMSNorm`, ``"layer"`` -> :class:`LayerNorm`, over ``d`` channels."""
    if kind == "rms":
        return RMSNorm(d)
    if kind == "layer":
        return LayerNorm(d)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class SigmaReparamLinear(nn.Module):
    r"""Linear layer whose weight is divided by its spectral norm and scaled by one learned scalar (σReparam).

    $$ \widehat W = \frac{\gamma}{\sigma(W)}\, W,\qquad y = \widehat W x + b,\qquad
       \sigma(W) \approx u^\top W v,\quad v \leftarrow \frac{W^\top u}{\lVert W^\top u\rVert},\
       u \leftarrow \frac{W v}{\lVert W v\rVert} $$

    $\sigma(W)$, the largest singular value, is estimated by ``n_power_iterations`` steps of power
    iteration per forward pass on persistent buffers ``u (d_out,)`` and ``v (d_in,)``, updated in training
    mode only and never differentiated; the gradient flows through $\sigma = u^\top W v$
    :cite:`miyato2018spectral`. ``u``, ``v`` start at the exact top singular vectors and $\gamma$ at
    $\sigma(W_0)$, so a new layer computes the same function as a plain linear layer with weight $W_0$
    (as in the authors' reference code). ``x (..., d_in) -> (..., d_out)``. See :cite:`zhai2023stabilizing`.
    """

    def __init__(self, d_in: int, d_out: int, *, bias: bool = True, n_power_iterations: int = 1):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("n_power_iterations", n_power_iterations)):
            check_positive_int(name, value)
        # in_features/out_features as nn.Linear names them, so code reading a projection's width takes either
        self.d_in, self.d_out, self.n_power_iterations = d_in, d_out, n_power_iterations
        self.in_features, self.out_features = d_in, d_out
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default initialisation
        if self.bias is not None:
            nn.init.uniform_(self.bias, -d_in ** -0.5, d_in ** -0.5)
        self.register_buffer("u", torch.empty(d_out))
        self.register_buffer("v", torch.empty(d_in))
        self.gamma = nn.Parameter(torch.empty(()))
        self.reset_sigma()

    @torch.no_grad()
    def reset_sigma(self) -> None:
        r"""Set ``u``, ``v`` to the top singular vectors of the current weight and $\gamma = \sigma(W)$, so $\widehat W = W$."""
        left, singular, right_h = torch.linalg.svd(self.weight.detach(), full_matrices=False)
        self.u.copy_(left[:, 0])
        self.v.copy_(right_h[0])
        self.gamma.copy_(singular[0])

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, n_power_iterations: int = 1) -> "SigmaReparamLinear":
        """A σReparam layer computing the same function as ``linear`` (its weight and bias copied)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    n_power_iterations=n_power_iterations).to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.reset_sigma()
        return layer

    def sigma(self) -> torch.Tensor:
        r"""The spectral-norm estimate $u^\top W v$ (after the power-iteration update when training)."""
        if self.training:
            with torch.no_grad():
                u = self.u
                for _ in range(self.n_power_iterations):
                    v = F.normalize(self.weight.T @ u, dim=0)
                    u = F.normalize(self.weight @ v, dim=0)
                self.u.copy_(u)
                self.v.copy_(v)
        # clones: autograd keeps u and v for the backward pass, and the next update writes the buffers in place
        return self.u.clone() @ self.weight @ self.v.clone()

    def effective_weight(self) -> torch.Tensor:
        r"""$\widehat W = \gamma\, W / \sigma(W)$, shape ``(d_out, d_in)``."""
        return self.gamma / self.sigma() * self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d_in, size_name="d_in")
        return F.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, bias={self.bias is not None}, n_power_iterations={self.n_power_iterations}"


def sigma_reparam_(module: nn.Module, *, skip: Iterable[str] = (), n_power_iterations: int = 1) -> nn.Module:
    r"""Replace every ``nn.Linear`` inside ``module`` by an equivalent :class:`SigmaReparamLinear`, in place.

    Each new layer starts with $\gamma = \sigma(W)$, so the model's output is unchanged at the moment of the
    swap; training then updates $\gamma$ and the direction $W / \sigma(W)$ separately. ``skip`` lists
    qualified names (as in ``module.named_modules()``) of linear layers to leave alone. Returns ``module``.
    See :cite:`zhai2023stabilizing`.
    """
    if isinstance(skip, str):
        raise TypeError(f"skip must be a collection of layer names, not the single string {skip!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, nn.Linear):
        raise TypeError("module is itself an nn.Linear; use SigmaReparamLinear.from_linear(module) instead")
    skip = set(skip)
    linears = {name for name, child in module.named_modules() if isinstance(child, nn.Linear)}
    unknown = skip - linears
    if unknown:
        raise ValueError(f"skip names {sorted(unknown)} are not nn.Linear layers of the module; linear layers: {sorted(linears)}")
    for name in sorted(linears - skip):
        parent_name, _, child_name = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, child_name, SigmaReparamLinear.from_linear(getattr(parent, child_name),
                                                                   n_power_iterations=n_power_iterations))
    return module


class PRepBN(nn.Module):
    r"""Progressive re-parameterised BatchNorm (SLAB) :cite:`guo2024slab`: LayerNorm handed over to a foldable BatchNorm.

    $$ \operatorname{RepBN}(x) = \operatorname{BN}(x) + \eta\, x, \qquad
       \operatorname{PRepBN}(x) = \gamma\, \operatorname{LN}(x) + (1 - \gamma)\, \operatorname{RepBN}(x), $$

    with $\gamma$ decaying linearly from 1 to 0 over the first ``warmup_steps`` training forwards (counted in a
    buffer) and $\eta$ learned. Once $\gamma = 0$ the layer at inference is an affine map per channel with
    BatchNorm's running statistics, which :meth:`fold_into` merges into the next linear layer: no normalisation
    statistics are computed at inference. ``x (..., d) -> (..., d)``; BatchNorm statistics are over all leading axes.
    """

    def __init__(self, d: int, *, warmup_steps: int, eps: float = 1e-5):
        super().__init__()
        self.d, self.warmup_steps = check_positive_int("d", d), check_positive_int("warmup_steps", warmup_steps)
        self.ln = LayerNorm(d, eps=eps)
        self.bn = nn.BatchNorm1d(d, eps=_check_eps(eps))
        self.eta = nn.Parameter(torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def gamma(self) -> float:
        """The LayerNorm share: $1 - \\text{steps}/\\text{warmup}$, floored at 0."""
        return max(0.0, 1.0 - self.steps.item() / self.warmup_steps)

    def rep_bn(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.reshape(-1, self.d)).reshape(x.shape) + self.eta * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("x", x, self.d, size_name="d")
        gamma = self.gamma
        if self.training:
            self.steps += 1
        out = self.rep_bn(x)
        return out if gamma == 0 else gamma * self.ln(x) + (1 - gamma) * out

    def fold_into(self, linear: nn.Linear) -> nn.Linear:
        r"""The linear layer $x \mapsto W\,\operatorname{RepBN}(x) + c$ as one ``nn.Linear`` (inference, $\gamma = 0$).

        $\operatorname{RepBN}(x) = a \odot x + b$ with $a = w_{BN}/\sqrt{\sigma^2 + \epsilon} + \eta$ and
        $b = \beta_{BN} - \mu\, w_{BN}/\sqrt{\sigma^2 + \epsilon}$, so $W' = W \operatorname{diag}(a)$, $c' = W b + c$.
        """
        if self.gamma != 0:
            raise ValueError(f"fold_into needs the LayerNorm share gamma to have reached 0, it is {self.gamma:.3f}")
        if not isinstance(linear, nn.Linear) or linear.in_features != self.d:
            raise ValueError(f"linear must be an nn.Linear with in_features={self.d}, got {linear!r}")
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        a = scale + self.eta
        b = self.bn.bias - self.bn.running_mean * scale
        folded = nn.Linear(self.d, linear.out_features, dtype=linear.weight.dtype)
        with torch.no_grad():
            folded.weight.copy_(linear.weight * a)
            folded.bias.copy_(linear.weight @ b + (linear.bias if linear.bias is not None else 0))
        return folded
