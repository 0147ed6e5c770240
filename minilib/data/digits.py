"""scikit-learn's bundled 8x8 handwritten digits (1 797 images, no download) as tensors, and batches of them."""
from __future__ import annotations

from typing import Iterator

import torch

from minilib._checks import check_nonnegative_int, check_positive_int, require_tensor

__all__ = ["digits_split", "labelled_batches"]

N_DIGITS = 1797  # images in sklearn.datasets.load_digits


def digits_split(*, n_test: int, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((x_train, y_train), (x_test, y_test))``: images ``(n, 8, 8)`` scaled to [0, 1], labels ``(n,)`` in 0..9.

    A seeded permutation puts its first ``n_test`` images in the test set, the rest in training.
    """
    from sklearn.datasets import load_digits

    check_nonnegative_int("n_test", n_test)
    if n_test > N_DIGITS:
        raise ValueError(f"n_test must be at most the {N_DIGITS} digits, got {n_test}")
    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)
    labels = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def labelled_batches(x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                     generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(x[i], y[i])`` batches of ``batch_size`` rows drawn uniformly with replacement."""
    require_tensor("x", x)
    require_tensor("y", y)
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must hold the same non-zero number of rows, got x {tuple(x.shape)}, y {tuple(y.shape)}")
    check_positive_int("batch_size", batch_size)
    while True:
        idx = torch.randint(0, len(y), (batch_size,), generator=generator)
        yield x[idx], y[idx]
