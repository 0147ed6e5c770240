r"""Language-model batches: random training windows, a contiguous split, and evaluation windows."""
from __future__ import annotations

from typing import Iterator

import torch

from minilib._checks import check_positive_int, check_token_ids

__all__ = ["train_val_split", "lm_batches", "lm_eval_windows"]


def train_val_split(ids: torch.Tensor, val_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Split a token stream into a leading training part and a trailing validation part.

    $$ \text{train} = x_{1:n - v}, \quad \text{val} = x_{n-v+1:n}, \quad v = \lfloor \text{val\_frac} \cdot n \rceil. $$

    Contiguous (not shuffled), so no validation window overlaps a training window.
    ``ids (N,)`` -> ``(train (N - v,), val (v,))``, both views of ``ids``. See :cite:`karpathy2015char`.
    """
    check_token_ids("ids", ids, ndim=1)
    if not isinstance(val_frac, (int, float)) or not 0.0 < val_frac < 1.0:
        raise ValueError(f"val_frac must be a number in (0, 1), got {val_frac!r}")
    n = ids.numel()
    v = round(val_frac * n)
    if v < 1 or v > n - 1:
        raise ValueError(f"val_frac={val_frac} leaves an empty part of ids with shape {tuple(ids.shape)}")
    return ids[: n - v], ids[n - v:]


def lm_batches(ids: torch.Tensor, *, batch_size: int, seq_len: int,
               generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    r"""Endless random windows for next-token training: inputs and the same window shifted by one.

    For a start $a$ drawn uniformly from $\{0, \dots, N - T - 1\}$:
    $x = \text{ids}_{a:a+T}$, $y = \text{ids}_{a+1:a+T+1}$ (so $y_t$ is the token after $x_t$).

    ``ids (N,)`` with $N \ge T + 1$ -> yields ``x (B, T)``, ``y (B, T)`` int64. Starts come from
    ``generator`` only, so a seeded generator gives the same batches every run.
    See :cite:`karpathy2015char`.
    """
    check_token_ids("ids", ids, ndim=1)
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if ids.numel() < seq_len + 1:
        raise ValueError(f"ids must hold at least seq_len + 1 = {seq_len + 1} tokens, got shape {tuple(ids.shape)}")
    ids = ids.long()
    offsets = torch.arange(seq_len + 1)

    def windows():
        while True:
            starts = torch.randint(0, ids.numel() - seq_len, (batch_size,), generator=generator)
            chunk = ids[starts[:, None] + offsets]
            yield chunk[:, :-1], chunk[:, 1:]

    return windows()


def lm_eval_windows(ids: torch.Tensor, *, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Every non-overlapping window of a stream, for a deterministic validation loss.

    Window $k$: $x_k = \text{ids}_{kT:(k+1)T}$, $y_k = \text{ids}_{kT+1:(k+1)T+1}$ for
    $k = 0, \dots, \lfloor (N-1)/T \rfloor - 1$; the leftover tail is dropped.

    ``ids (N,)`` -> ``x (K, T)``, ``y (K, T)`` int64, $K = \lfloor (N-1)/T \rfloor \ge 1$.
    See :cite:`karpathy2015char`.
    """
    check_token_ids("ids", ids, ndim=1)
    check_positive_int("seq_len", seq_len)
    k = (ids.numel() - 1) // seq_len
    if k < 1:
        raise ValueError(f"ids must hold at least seq_len + 1 = {seq_len + 1} tokens, got shape {tuple(ids.shape)}")
    ids = ids.long()
    x = ids[: k * seq_len].reshape(k, seq_len)
    y = ids[1: k * seq_len + 1].reshape(k, seq_len)
    return x, y
