r"""Long-range tasks in the spirit of Long Range Arena, generated in code and scaled down (L up to about 1K).

Every task is a classification read off the last position, written as a next-token batch like
:mod:`minilib.data.tasks`: ``inputs (B, L)``, ``targets (B, L)``, ``mask (B, L)`` True only at the last position,
whose target is the class token. A causal model must carry the information to the end of the sequence; a
sliding window shorter than the distance to the evidence cannot. See :cite:`tay2021long`.
"""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int
from minilib.data.tasks import TaskBatch

__all__ = ["LISTOPS_TOKENS", "lra_listops", "listops_value", "lra_retrieval", "needle_retrieval", "marked_parity"]

# ListOps vocabulary: digits 0-9, then the operators, the closing bracket, padding and the query token.
LISTOPS_TOKENS = [str(d) for d in range(10)] + ["[MAX", "[MIN", "[MED", "[SM", "]", "<pad>", "="]
_OPS = {10: max, 11: min, 12: lambda xs: sorted(xs)[(len(xs) - 1) // 2], 13: lambda xs: sum(xs) % 10}
_CLOSE, _PAD, _QUERY = 14, 15, 16


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _answer_batch(rows: list[list[int]], answers: list[int]) -> TaskBatch:
    """Rows of equal length ending with the query token; the last position's target is the answer."""
    x = torch.tensor(rows, dtype=torch.long)
    targets = torch.cat([x[:, 1:], torch.tensor(answers, dtype=torch.long)[:, None]], dim=1)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, -1] = True
    return TaskBatch(x, targets, mask)


def _expression(depth: int, max_args: int, budget: int, generator: torch.Generator) -> list[int]:
    """Tokens of a random ListOps expression of at most ``budget`` tokens (a digit when nothing bigger fits)."""
    draw = (lambda n: int(torch.randint(n, (), generator=generator)))
    if depth == 0 or budget < 4 or draw(4) == 0:
        return [draw(10)]
    tokens, room = [10 + draw(4)], budget - 2
    for _ in range(2 + draw(max_args - 1)):
        if room < 1:
            break
        arg = _expression(depth - 1, max_args, room, generator)
        tokens += arg
        room -= len(arg)
    return tokens + [_CLOSE]


def listops_value(tokens: list[int]) -> int:
    """The value (0-9) of a ListOps expression given as tokens (padding and the query token ignored)."""
    stack: list = []
    for tok in tokens:
        if tok in (_PAD, _QUERY):
            continue
        if tok == _CLOSE:
            args = []
            while not isinstance(stack[-1], tuple):
                args.append(stack.pop())
            stack[-1] = _OPS[stack[-1][0]](args)
        else:
            stack.append((tok,) if tok in _OPS else tok)
    (value,) = stack
    return value


def lra_listops(batch_size: int, *, seq_len: int, generator: torch.Generator, max_depth: int = 4,
                max_args: int = 5) -> TaskBatch:
    r"""Mini-ListOps: a nested expression of ``MAX``, ``MIN``, ``MED`` (lower median) and ``SM`` (sum mod 10) over
    digits, left-padded to ``seq_len - 1`` tokens, then ``=``; the answer is its value (10 classes, token ids 0-9).

    ``[MAX 3 [SM 4 9 ] 1 ] =`` has answer 3. Vocabulary :data:`LISTOPS_TOKENS` (17 ids). See :cite:`tay2021long`.
    """
    check_positive_int("batch_size", batch_size)
    if check_positive_int("seq_len", seq_len) < 2:
        raise ValueError(f"seq_len must be >= 2 (an expression and the query), got {seq_len}")
    check_positive_int("max_depth", max_depth)
    if check_positive_int("max_args", max_args) < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    _check_generator(generator)
    rows, answers = [], []
    for _ in range(batch_size):
        expr = _expression(max_depth, max_args, seq_len - 1, generator)
        rows.append([_PAD] * (seq_len - 1 - len(expr)) + expr + [_QUERY])
        answers.append(listops_value(expr))
    return _answer_batch(rows, answers)


def lra_retrieval(batch_size: int, *, seq_len: int, generator: torch.Generator, vocab_size: int = 16,
                  change: float = 0.1) -> TaskBatch:
    r"""Mini document matching: two documents of $h = (L - 2) / 2$ random tokens, a separator between them, then the
    query token. Half the rows are *related* (the second document is the first with a share ``change`` of its
    tokens redrawn), half unrelated (drawn independently). Answer: ``vocab_size + 2`` (unrelated) or
    ``vocab_size + 3`` (related). Token ids: documents ``0..vocab_size-1``, separator ``vocab_size``, query
    ``vocab_size + 1``; a model needs ``vocab_size + 4`` ids. Matching compares positions $h + 1$ apart.
    See :cite:`tay2021long`.
    """
    check_positive_int("batch_size", batch_size)
    if check_positive_int("seq_len", seq_len) < 4 or seq_len % 2:
        raise ValueError(f"seq_len must be even and >= 4, got {seq_len}")
    check_positive_int("vocab_size", vocab_size)
    if not 0.0 <= change < 1.0:
        raise ValueError(f"change must be in [0, 1), got {change!r}")
    _check_generator(generator)
    h = (seq_len - 2) // 2
    first = torch.randint(vocab_size, (batch_size, h), generator=generator)
    related = torch.arange(batch_size) % 2 == 1
    redraw = (torch.rand(batch_size, h, generator=generator) < change) | ~related[:, None]
    second = torch.where(redraw, torch.randint(vocab_size, (batch_size, h), generator=generator), first)
    sep = torch.full((batch_size, 1), vocab_size)
    rows = torch.cat([first, sep, second, sep + 1], dim=1)
    return _answer_batch(rows.tolist(), (vocab_size + 2 + related.long()).tolist())


def needle_retrieval(batch_size: int, *, seq_len: int, generator: torch.Generator, n_values: int = 8,
                     n_filler: int = 8, min_distance: int = 1) -> TaskBatch:
    r"""A needle in a haystack: filler tokens, somewhere a needle marker followed by a value, and at the end the
    query token; the answer is the value. The value sits at least ``min_distance`` positions before the query.

    Token ids: filler ``0..n_filler-1``, values ``n_filler..n_filler+n_values-1``, needle marker
    ``n_filler + n_values``, query ``n_filler + n_values + 1``; a model needs ``n_filler + n_values + 2`` ids.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_positive_int("n_values", n_values)
    check_positive_int("n_filler", n_filler)
    check_positive_int("min_distance", min_distance)
    if seq_len < min_distance + 3:
        raise ValueError(f"seq_len ({seq_len}) must be >= min_distance + 3 = {min_distance + 3}")
    _check_generator(generator)
    rows = torch.randint(n_filler, (batch_size, seq_len), generator=generator)
    values = torch.randint(n_filler, n_filler + n_values, (batch_size,), generator=generator)
    # value at position p <= seq_len - 1 - min_distance, marker at p - 1 >= 0
    p = 1 + torch.randint(seq_len - 1 - min_distance, (batch_size,), generator=generator)
    rows[torch.arange(batch_size), p - 1] = n_filler + n_values
    rows[torch.arange(batch_size), p] = values
    rows[:, -1] = n_filler + n_values + 1
    return _answer_batch(rows.tolist(), values.tolist())


def marked_parity(batch_size: int, *, seq_len: int, generator: torch.Generator, n_marked: int = 4) -> TaskBatch:
    r"""Parity of marked tokens: ``seq_len - 1`` random bits, ``n_marked`` of them (at random positions) *marked*,
    then the query token; the answer is the parity of the marked ones,
    $y = \sum_{t \text{ marked}} b_t \bmod 2$. The unmarked bits are distractors, and a marked bit may lie anywhere
    before the query, so a model must read every marked position, however far back.

    Token ids: unmarked bits ``0, 1``, marked bits ``2, 3`` (``2 + b``), query ``4``; answers ``5`` (even) and
    ``6`` (odd): a model needs 7 ids. See :cite:`tay2021long`.
    """
    check_positive_int("batch_size", batch_size)
    if check_positive_int("seq_len", seq_len) < 2:
        raise ValueError(f"seq_len must be >= 2 (a bit and the query), got {seq_len}")
    if check_positive_int("n_marked", n_marked) > seq_len - 1:
        raise ValueError(f"n_marked ({n_marked}) must be <= seq_len - 1 = {seq_len - 1}")
    _check_generator(generator)
    bits = torch.randint(2, (batch_size, seq_len - 1), generator=generator)
    marked = torch.zeros_like(bits, dtype=torch.bool).scatter_(
        1, torch.rand(batch_size, seq_len - 1, generator=generator).argsort(dim=1)[:, :n_marked], True)
    rows = torch.cat([bits + 2 * marked, torch.full((batch_size, 1), 4)], dim=1)
    return _answer_batch(rows.tolist(), (5 + (bits * marked).sum(1) % 2).tolist())
