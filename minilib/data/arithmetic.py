r"""Modular arithmetic expressions with and without chain-of-thought steps :cite:`feng2023towards`, and letter
counting with character or merged tokens :cite:`zhang2024counting` (:func:`letter_counting`).

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

__all__ = ["arith_tasks", "letter_counting", "MERGED_PIECES"]

#: The pieces of :func:`letter_counting`'s merged tokens (ids 0..7, in this order): a BPE-like vocabulary over
#: ``{a, b}`` where only the runs ``aaa`` and ``bbb`` were merged beyond pairs.
MERGED_PIECES = ("a", "b", "aa", "ab", "ba", "bb", "aaa", "bbb")


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


def _segment(text: str) -> list[int]:
    """Greedy longest match of ``text`` over :data:`MERGED_PIECES` (every pair is a piece, so it never fails)."""
    ids, i = [], 0
    while i < len(text):
        size = next(k for k in (3, 2, 1) if text[i:i + k] in MERGED_PIECES)
        ids.append(MERGED_PIECES.index(text[i:i + size]))
        i += size
    return ids


def letter_counting(batch_size: int, *, n_chars: int, generator: torch.Generator, merged: bool) -> TaskBatch:
    r"""How many ``a`` in a random string of ``n_chars`` letters from ``{a, b}``, tokenised per character or merged.

    $$ z = (\texttt{PAD}, \dots, \texttt{PAD},\ t_1, \dots, t_m,\ =,\ c), \qquad c = \#\{i : s_i = a\}, $$
    with :math:`t_1..t_m` the characters (``merged=False``, :math:`m = n` tokens ``a = 0``, ``b = 1``) or the greedy
    longest-match pieces of :data:`MERGED_PIECES` (``merged=True``, ids 0..7, :math:`m \le n`), left-padded so that
    ``=`` is always at position ``n_chars``. Ids: ``PAD = 8``, ``EQUALS = 9``, count ``c`` is ``10 + c``; a model
    needs ``11 + n_chars`` ids. Only the count is a target. :cite:`zhang2024counting`
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_chars", n_chars)
    check_flag("merged", merged)
    _check_generator(generator)
    letters = torch.randint(0, 2, (batch_size, n_chars), generator=generator)
    z = torch.full((batch_size, n_chars + 2), len(MERGED_PIECES), dtype=torch.long)
    for row, codes in enumerate(letters.tolist()):
        text = "".join("ab"[c] for c in codes)
        ids = _segment(text) if merged else codes
        z[row, n_chars - len(ids):n_chars] = torch.tensor(ids)
    z[:, n_chars] = len(MERGED_PIECES) + 1
    z[:, n_chars + 1] = len(MERGED_PIECES) + 2 + (letters == 0).sum(1)
    return _next_token_batch(z, slice(n_chars, None))
