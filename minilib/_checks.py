"""Argument checks shared by every family, so bad input fails early with a message that names it."""
from __future__ import annotations

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


def check_attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Validate ``q (B,H,T,D)``, ``k (B,Hkv,S,D)``, ``v (B,Hkv,S,Dv)`` with ``H % Hkv == 0``."""
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
