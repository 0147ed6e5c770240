r"""Feature maps $\phi$ for linear attention: $\exp(q\cdot k)$ replaced by $\phi(q)\cdot\phi(k)$."""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int

__all__ = ["feature_map"]


def feature_map(name: str, *, dim: int | None = None, n_features: int | None = None, seed: int = 0):
    r"""The feature map $\phi$ that turns $\exp(q\cdot k)$ into $\phi(q)\cdot\phi(k)$ (approximately or by design).

    - ``"elu+1"``: $\phi(x) = \mathrm{elu}(x) + 1 > 0$ :cite:`katharopoulos2020transformers`;
    - ``"relu"``: $\phi(x) = \max(x, 0)$;
    - ``"identity"``: $\phi(x) = x$ (plain linear attention, as in RetNet's retention);
    - ``"softmax_kernel"``: positive random features $\phi(x) = e^{W x - \|x\|^2/2} / \sqrt{m}$ with
      ``n_features`` $= m$ Gaussian rows $W$ (block-orthogonalised), so that
      $\mathbb{E}[\phi(q)\cdot\phi(k)] = e^{q\cdot k}$ :cite:`choromanski2021rethinking`. Needs ``dim`` (the
      input size $D$); ``seed`` fixes $W$, which is shared by queries and keys.

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
    raise ValueError(f"name must be one of 'elu+1', 'relu', 'identity', 'softmax_kernel', got {name!r}")


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
