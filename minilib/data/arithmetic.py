r"""Modular arithmetic expressions with and without chain-of-thought steps :cite:`feng2023towards`.

An expression :math:`a_1 \circ_1 a_2 \circ_2 \cdots \circ_{k-1} a_k` over :math:`\mathbb Z_p` with
:math:`\circ_j \in \{+, \times\}`, evaluated left to right: :math:`r_1 = a_1,\ r_{j+1} = r_j \circ_j a_{j+1}`.
Without chain of thought the model writes the answer :math:`r_k` right after ``=``; with it, it writes every partial
result :math:`r_2, \dots, r_k` (the last is the answer), so each new token needs one operation on what is already
written.

Token ids: digits ``0..p-1``, ``PLUS = p``, ``TIMES = p + 1``, ``EQUALS = p + 2``; a model needs ``p + 3`` ids.
"""
from __future__ import annotations

import torch

from minilib._checks import check_flag, check_positive_int
from .tasks import TaskBatch, _check_generator, _next_token_batch

__all__ = ["arith_tasks"]


def arith_tasks(batch_size: int, *, n_operands: int, generator: torch.Generator, cot: bool, modulus: int = 7) -> TaskBatch:
    r"""Left-to-right modular expressions of ``n_operands`` operands, with (``cot=True``) or without their steps.

    $$ z = (a_1, \circ_1, a_2, \dots, \circ_{k-1}, a_k,\ =,\ r_2, \dots, r_k) \quad\text{(CoT)}, \qquad
       z = (a_1, \circ_1, \dots, a_k,\ =,\ r_k) \quad\text{(direct)}, $$
    :math:`r_{j+1} = (r_j \circ_j a_{j+1}) \bmod p`. Returns :class:`TaskBatch` with the targets after ``=`` counted;
    the answer :math:`r_k` is always ``targets[:, -1]``. :cite:`feng2023towards`
    """
    check_positive_int("batch_size", batch_size)
    if check_positive_int("n_operands", n_operands) < 2:
        raise ValueError(f"n_operands must be at least 2, got {n_operands}")
    if check_positive_int("modulus", modulus) < 2:
        raise ValueError(f"modulus must be at least 2, got {modulus}")
    check_flag("cot", cot)
    _check_generator(generator)
    p = modulus
    operands = torch.randint(0, p, (batch_size, n_operands), generator=generator)
    times = torch.rand(batch_size, n_operands - 1, generator=generator) < 0.5
    partial = [operands[:, 0]]
    for j in range(n_operands - 1):
        a = operands[:, j + 1]
        partial.append(torch.where(times[:, j], partial[-1] * a, partial[-1] + a) % p)
    expression = torch.empty(batch_size, 2 * n_operands - 1, dtype=torch.long)
    expression[:, 0::2] = operands
    expression[:, 1::2] = torch.where(times, p + 1, p)
    after = torch.stack(partial[1:], 1) if cot else partial[-1][:, None]
    z = torch.cat([expression, torch.full((batch_size, 1), p + 2), after], 1)
    return _next_token_batch(z, slice(expression.shape[1], None))
