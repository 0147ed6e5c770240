"""Argument checks shared by every family, so bad input fails early with a message that names it."""
from __future__ import annotations

import math
import numbers

import torch


def require_tensor(name: str, x, *, ndim: int | tuple[int, ...] | None = None, floating: bool = False) -> None:
    """Raise TypeError/ValueError unless ``x`` is a tensor of the given rank (and a float dtype)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and x.ndim not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                           scale: float | None = None) -> None:
    """Validate ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``, ``v (B,Hkv,S,Dv)`` with ``H % Hkv == 0``, a bool ``causal``, a
    real ``scale`` or None. Float dtypes may differ: every attention form computes in :func:`compute_dtype`."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x, ndim=4, floating=True)
    B, H, _, D = q.shape
    Bk, Hkv, S, Dk = k.shape
    if Bk != B or v.shape[0] != B:
        raise ValueError(f"q, k, v must share the batch size, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if Dk != D:
        raise ValueError(f"q and k must share head_dim, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if v.shape[1] != Hkv or v.shape[2] != S:
        raise ValueError(f"k and v must share heads and length, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({Hkv}); q {tuple(q.shape)}, k {tuple(k.shape)}")
    check_flag("causal", causal)
    if scale is not None:
        check_number("scale", scale)


def check_positive_int(name: str, value) -> int:
    """Return ``value`` if it is an int >= 1 (``True`` is not an int here); else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_nonnegative_int(name: str, value) -> int:
    """Return ``value`` if it is an int >= 0 (not a bool); else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def check_token_ids(name: str, idx, *, ndim: int | tuple[int, ...] | None = None, vocab_size: int | None = None) -> None:
    """Raise unless ``idx`` is an integer tensor of token ids (of rank ``ndim``, each in ``[0, vocab_size)``)."""
    require_tensor(name, idx, ndim=ndim)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {idx.dtype}")
    if vocab_size is not None and idx.numel() and (idx.min() < 0 or idx.max() >= vocab_size):
        raise ValueError(f"{name} holds ids outside [0, {vocab_size}): min {idx.min().item()}, max {idx.max().item()}")


def default_scale(head_dim: int, scale: float | None) -> float:
    r"""The attention scale: ``scale`` if given (a real number), else $1/\sqrt{D}$ for head size ``head_dim``."""
    return head_dim ** -0.5 if scale is None else check_number("scale", scale)


def check_divisible(name: str, value: int, by_name: str, by: int) -> None:
    """Raise ValueError naming both sizes unless ``value`` is a multiple of ``by`` (e.g. ``d_model`` of ``n_heads``)."""
    if value % by:
        raise ValueError(f"{name} ({value}) must be divisible by {by_name} ({by})")


def check_last_dim(name: str, x, size: int, *, size_name: str = "d_model", ndim: int | tuple[int, ...] | None = None) -> None:
    """Raise unless ``x`` is a float tensor (of rank ``ndim``) whose last dimension is ``size`` (called ``size_name``)."""
    require_tensor(name, x, ndim=ndim, floating=True)
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(f"{name} must end in {size_name}={size} features, got shape {tuple(x.shape)}")


def check_flag(name: str, value) -> bool:
    """Return ``value`` if it is a bool; else raise ``TypeError`` naming ``name`` (a string like ``"yes"`` is not a flag)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_number(name: str, value, *, positive: bool = False, low: float | None = None, high: float | None = None) -> float:
    """Return ``value`` as a float if it is a real number (not a bool), positive / within ``[low, high]`` if asked."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (positive and not value > 0) or (low is not None and value < low) \
            or (high is not None and value > high):
        want = "> 0" if positive else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return value


def check_bias(bias, scores_shape: tuple[int, ...]) -> None:
    """Raise unless ``bias`` is a real number or a float tensor that broadcasts to the scores' shape ``(B, H, T, S)``."""
    if isinstance(bias, numbers.Real) and not isinstance(bias, bool):
        return
    require_tensor("bias", bias, floating=True)
    try:
        if torch.broadcast_shapes(bias.shape, scores_shape) != tuple(scores_shape):
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to the scores {tuple(scores_shape)} "
                         "(B, H, T, S)") from None


def promoted_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the tensors promote to together (the output dtype of an attention form over them)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype attention arithmetic runs in: the inputs' promoted dtype, float32 for half precision (fp16, bf16)."""
    dtype = promoted_dtype(*tensors)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
