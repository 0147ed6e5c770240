r"""Feature maps $\phi$ for linear attention: $\exp(q\cdot k)$ replaced by $\phi(q)\cdot\phi(k)$."""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int

__all__ = ["feature_map"]


def feature_map(name: str, *, dim: int | None = None, n_features: int | None = None, n_bits: int | None = None,
                seed: int = 0):
    r"""The feature map $\phi$ that turns $\exp(q\cdot k)$ into $\phi(q)\cdot\phi(k)$ (approximately or by design).

    - ``"elu+1"``: $\phi(x) = \mathrm{elu}(x) + 1 > 0$ :cite:`katharopoulos2020transformers`;
    - ``"relu"``: $\phi(x) = \max(x, 0)$;
    - ``"identity"``: $\phi(x) = x$ (plain linear attention, as in RetNet's retention);
    - ``"softmax_kernel"``: positive random features $\phi(x) = e^{W x - \|x\|^2/2} / \sqrt{m}$ with
      ``n_features`` $= m$ Gaussian rows $W$ (block-orthogonalised), so that
      $\mathbb{E}[\phi(q)\cdot\phi(k)] = e^{q\cdot k}$ :cite:`choromanski2021rethinking`. Needs ``dim`` (the
      input size $D$); ``seed`` fixes $W$, which is shared by queries and keys;
    - ``"binary_hash"``: EcoFormer-style hashing :cite:`liu2022ecoformer` of $x$ into ``n_bits`` $= b$ signs
      $h(x) = \operatorname{sign}(W x) \in \{-1, 1\}^b$ (random hyperplanes here; EcoFormer learns them with a
      kernel), returned as the $2b$ binary features $\phi(x) = [(1 + h)/2,\ (1 - h)/2] \in \{0, 1\}^{2b}$, so
      $\phi(q)\cdot\phi(k) = b - \operatorname{Hamming}(h(q), h(k))$, the number of agreeing bits: a similarity
      that linear attention accumulates with additions only. Needs ``dim`` and ``n_bits``.

    Returns a callable ``(..., D) -> (..., D')``.
    """
    if name == "elu+1":
        return lambda x: torch.nn.functional.elu(x) + 1
    if name == "relu":
        return torch.relu
    if name == "identity":
        return lambda x: x
    if name == "softmax_kernel":
        return _RandomSoftmaxFeatures(check_positive_int("dim", dim), check_positive_int("n_features", n_features), seed)
    if name == "binary_hash":
        return _BinaryHash(check_positive_int("dim", dim), check_positive_int("n_bits", n_bits), seed)
    raise ValueError(f"name must be one of 'elu+1', 'relu', 'identity', 'softmax_kernel', 'binary_hash', got {name!r}")


class _RandomSoftmaxFeatures:
    """Positive orthogonal random features of the softmax kernel (see :func:`feature_map`)."""

    def __init__(self, dim: int, n_features: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        blocks = []
        for _ in range(-(-n_features // dim)):
            gauss = torch.randn(dim, dim, generator=g, dtype=torch.float64)
            Qm, _ = torch.linalg.qr(gauss)
            norms = torch.randn(dim, dim, generator=g, dtype=torch.float64).norm(dim=1)
            blocks.append(norms[:, None] * Qm.T)
        self.W = torch.cat(blocks)[:n_features]
        self.dim, self.n_features = dim, n_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must end in dim={self.dim}, got shape {tuple(x.shape)}")
        proj = x @ self.W.to(x).T
        return (proj - 0.5 * (x * x).sum(-1, keepdim=True)).exp() / self.n_features ** 0.5


class _BinaryHash:
    """Random-hyperplane binary codes as 0/1 features (see :func:`feature_map`); ``codes(x)`` gives the signs."""

    def __init__(self, dim: int, n_bits: int, seed: int):
        self.W = torch.randn(n_bits, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.dim, self.n_bits = dim, n_bits

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        r"""$h(x) = \operatorname{sign}(Wx) \in \{-1, 1\}^b$ (a zero projection counts as +1)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must end in dim={self.dim}, got shape {tuple(x.shape)}")
        return torch.where(x @ self.W.to(x).T >= 0, 1.0, -1.0).to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = self.codes(x)
        return torch.cat([(1 + h) / 2, (1 - h) / 2], dim=-1)
