"""What the chapters' questions share: seeded inputs, dtype names, exact tolerances and the
off-limits lists (see :mod:`minilib.grade.guard` for what an entry may be)."""
from __future__ import annotations

import torch

f32, f64 = torch.float32, torch.float64
EXACT = {f32: (0.0, 0.0), f64: (0.0, 0.0)}

#: The softmax family: ``torch.softmax``, ``F.softmax``, ``Tensor.softmax``, ``F.softmin``,
#: ``torch._softmax``... all end in the aten ops these names map to, where they are refused;
#: and SciPy's, the one a student reaches for outside torch (the others are an honour rule).
SOFTMAX = ("torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax",
           "torch.log_softmax", "torch.nn.functional.log_softmax", "scipy.special.softmax",
           "scipy.special.log_softmax")
SDPA = ("torch.nn.functional.scaled_dot_product_attention",)
#: The library's attention code, whole modules: every softmax, attention and FlashAttention
#: function it defines, public or private (``minilib.attention._softmax_rows``, ``attend``, ...).
LIBRARY_ATTENTION = ("minilib.attention", "minilib.flash", "minilib.parallel")


def randn(shape, dtype=f64, seed=0, scale=1.0) -> torch.Tensor:
    """Standard normal values (times ``scale``) drawn in float64 from ``seed``, then cast to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=f64) * scale).to(dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def causal_keep(T: int, S: int) -> torch.Tensor:
    """(T, S) bool, True where query row t (at key position t + S - T) may see key s."""
    return torch.ones(T, S, dtype=torch.bool).tril(S - T)
