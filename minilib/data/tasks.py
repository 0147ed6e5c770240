r"""Synthetic sequence tasks that later chapters reuse, and MEAP input masking.

Every decoder-only task returns a :class:`TaskBatch` ``(inputs, targets, mask)`` in next-token
layout: a whole sequence $z$ of length $N+1$ is built, ``inputs = z[:, :-1]``,
``targets = z[:, 1:]`` (so ``targets[:, t]`` is the token after ``inputs[:, t]``), and ``mask``
is True only where the target is part of the answer, the only positions a loss or an accuracy
should count (:func:`masked_targets` turns the rest into ``-100`` for ``cross_entropy``).
Content tokens are ``0 .. vocab_size - 1``; special tokens (separators, fillers, triggers) take
the next ids, and each docstring states the total number of ids a model must embed.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from minilib._checks import check_nonnegative_int, check_positive_int

__all__ = ["TaskBatch", "Seq2SeqBatch", "masked_targets", "copy_task", "reverse_task", "associative_recall",
           "selective_copying", "delayed_recall", "induction_heads", "key_value_lookup", "meap_mask"]

IGNORE_INDEX = -100


class TaskBatch(NamedTuple):
    """``inputs (B, N)``, ``targets (B, N)`` int64 and ``mask (B, N)`` bool: which targets count."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


class Seq2SeqBatch(NamedTuple):
    """Encoder input ``src (B, S)``, decoder input ``tgt_in (B, T)`` (starts with BOS), decoder targets ``tgt_out (B, T)``."""

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _next_token_batch(z: torch.Tensor, answers: slice) -> TaskBatch:
    """Split ``z (B, N+1)`` into inputs/targets; the targets at input positions ``answers`` count."""
    mask = torch.zeros(z.shape[0], z.shape[1] - 1, dtype=torch.bool)
    mask[:, answers] = True
    return TaskBatch(z[:, :-1].contiguous(), z[:, 1:].contiguous(), mask)


def _random_positions(batch_size: int, n_slots: int, n_pick: int, generator: torch.Generator) -> torch.Tensor:
    """``n_pick`` distinct indices out of ``n_slots`` per row, uniformly at random, shape (B, n_pick)."""
    return torch.rand(batch_size, n_slots, generator=generator).argsort(dim=1)[:, :n_pick]


def masked_targets(targets: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    r"""Targets with every position outside ``mask`` set to ``ignore_index`` (-100), for ``F.cross_entropy``.

    $$ \tilde y_{bt} = y_{bt} \text{ if } m_{bt} \text{ else } \text{ignore\_index}. $$

    ``targets (B, N)``, ``mask (B, N)`` bool -> ``(B, N)``. See :cite:`paszke2019pytorch`.
    """
    if not isinstance(targets, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError("targets and mask must be torch.Tensors")
    if targets.shape != mask.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of the shape of targets {tuple(targets.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    return targets.masked_fill(~mask, ignore_index)


def copy_task(batch_size: int, *, seq_len: int, vocab_size: int, generator: torch.Generator) -> TaskBatch:
    r"""Copy a random string after a separator.

    $$ z = (s_1, \dots, s_L,\ \texttt{SEP},\ s_1, \dots, s_L), \qquad s_i \sim \mathcal U\{0..V-1\}. $$

    Token ids: content ``0..V-1``, ``SEP = V``; a model needs ``V + 1`` ids.
    Returns ``inputs, targets, mask`` of shape ``(B, 2L)``; ``mask[:, t]`` is True for
    $t \ge L$, where ``targets[:, L + i] = s_{i+1}``. See :cite:`graves2014ntm`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_positive_int("vocab_size", vocab_size)
    _check_generator(generator)
    s = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    sep = torch.full((batch_size, 1), vocab_size)
    return _next_token_batch(torch.cat([s, sep, s], dim=1), slice(seq_len, None))


def reverse_task(batch_size: int, *, seq_len: int, vocab_size: int, generator: torch.Generator) -> Seq2SeqBatch:
    r"""Sequence reversal for an encoder-decoder (the toy stand-in for translation).

    $$ \text{src} = (s_1, \dots, s_L), \quad \text{tgt\_out} = (s_L, \dots, s_1), \quad
       \text{tgt\_in} = (\texttt{BOS}, s_L, \dots, s_2). $$

    Token ids: content ``0..V-1``, ``BOS = V``; a model needs ``V + 1`` ids. All ``L`` decoder
    targets count. Returns ``src, tgt_in, tgt_out``, each ``(B, L)``. See :cite:`vaswani2017attention`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_positive_int("vocab_size", vocab_size)
    _check_generator(generator)
    src = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    tgt_out = src.flip(1)
    tgt_in = torch.cat([torch.full((batch_size, 1), vocab_size), tgt_out[:, :-1]], dim=1)
    return Seq2SeqBatch(src, tgt_in, tgt_out)


def associative_recall(batch_size: int, *, n_pairs: int, n_keys: int, n_values: int, generator: torch.Generator,
                       n_queries: int = 1, distinct_keys: bool = True) -> TaskBatch:
    r"""Key-value pairs, then query keys, each followed by the value it was bound to (multi-query recall).

    $$ z = (k_1, v_1, \dots, k_N, v_N,\ q_1, a_1, \dots, q_Q, a_Q), \qquad
       a_j = v_{\max\{i:\ k_i = q_j\}}. $$

    Keys are ids ``0..n_keys-1``, values ``n_keys..n_keys+n_values-1`` (a model needs
    ``n_keys + n_values`` ids). With ``distinct_keys`` the N keys of a row differ (needs
    ``n_pairs <= n_keys``); otherwise they are drawn with replacement and a repeated key's latest
    value is the answer. The queries are the keys of ``n_queries`` distinct pairs, in random order.
    Returns ``(B, 2N + 2Q - 1)`` tensors; ``mask`` is True at the query positions, whose targets are
    the answers. See :cite:`ba2016fastweights`, :cite:`fu2023h3`, :cite:`arora2023zoology`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_pairs", n_pairs)
    check_positive_int("n_keys", n_keys)
    check_positive_int("n_values", n_values)
    check_positive_int("n_queries", n_queries)
    _check_generator(generator)
    if distinct_keys and n_pairs > n_keys:
        raise ValueError(f"n_pairs ({n_pairs}) must be <= n_keys ({n_keys}) when distinct_keys=True")
    if n_queries > n_pairs:
        raise ValueError(f"n_queries ({n_queries}) must be <= n_pairs ({n_pairs})")
    if distinct_keys:
        keys = _random_positions(batch_size, n_keys, n_pairs, generator)
    else:
        keys = torch.randint(0, n_keys, (batch_size, n_pairs), generator=generator)
    values = torch.randint(n_keys, n_keys + n_values, (batch_size, n_pairs), generator=generator)
    queries = keys.gather(1, _random_positions(batch_size, n_pairs, n_queries, generator))
    slot = torch.arange(n_pairs)
    latest = torch.where(keys[:, None, :] == queries[:, :, None], slot, -1).amax(dim=2)
    answers = values.gather(1, latest)
    z = torch.cat([torch.stack([keys, values], dim=2).flatten(1),
                   torch.stack([queries, answers], dim=2).flatten(1)], dim=1)
    return _next_token_batch(z, slice(2 * n_pairs, None, 2))


def selective_copying(batch_size: int, *, n_tokens: int, seq_len: int, vocab_size: int,
                      generator: torch.Generator) -> TaskBatch:
    r"""Content tokens scattered among noise tokens; after a separator, write them in order.

    A region of ``seq_len`` slots holds ``NOISE`` except at $n$ random positions
    $p_1 < \dots < p_n$ holding $c_1, \dots, c_n$; then

    $$ z = (\text{region}_1, \dots, \text{region}_{L},\ \texttt{SEP},\ c_1, \dots, c_n). $$

    Token ids: content ``0..V-1``, ``NOISE = V``, ``SEP = V + 1``; a model needs ``V + 2`` ids.
    Returns ``(B, L + n)`` tensors; ``mask[:, t]`` is True for $t \ge L$, where
    ``targets[:, L + i] = c_{i+1}``. See :cite:`gu2023mamba`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_tokens", n_tokens)
    check_positive_int("seq_len", seq_len)
    check_positive_int("vocab_size", vocab_size)
    _check_generator(generator)
    if n_tokens > seq_len:
        raise ValueError(f"n_tokens ({n_tokens}) must be <= seq_len ({seq_len})")
    positions = _random_positions(batch_size, seq_len, n_tokens, generator).sort(dim=1).values
    content = torch.randint(0, vocab_size, (batch_size, n_tokens), generator=generator)
    region = torch.full((batch_size, seq_len), vocab_size).scatter(1, positions, content)
    sep = torch.full((batch_size, 1), vocab_size + 1)
    return _next_token_batch(torch.cat([region, sep, content], dim=1), slice(seq_len, None))


def delayed_recall(batch_size: int, *, delay: int, vocab_size: int, generator: torch.Generator,
                   n_remember: int = 1) -> TaskBatch:
    r"""Remember $k$ tokens through ``delay`` filler tokens, then recall them after a query token.

    $$ z = (c_1, \dots, c_k,\ \underbrace{\texttt{FILL}, \dots, \texttt{FILL}}_{\text{delay}},\
       \texttt{QUERY},\ c_1, \dots, c_k). $$

    Token ids: content ``0..V-1``, ``FILL = V``, ``QUERY = V + 1``; a model needs ``V + 2`` ids.
    Returns ``(B, 2k + delay)`` tensors; ``mask[:, t]`` is True for $t \ge k + \text{delay}$, where
    ``targets[:, k + delay + i] = c_{i+1}``. See :cite:`parisotto2020gtrxl`.
    """
    check_positive_int("batch_size", batch_size)
    check_nonnegative_int("delay", delay)
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("n_remember", n_remember)
    _check_generator(generator)
    content = torch.randint(0, vocab_size, (batch_size, n_remember), generator=generator)
    fill = torch.full((batch_size, delay), vocab_size)
    query = torch.full((batch_size, 1), vocab_size + 1)
    return _next_token_batch(torch.cat([content, fill, query, content], dim=1), slice(n_remember + delay, None))


def induction_heads(batch_size: int, *, seq_len: int, vocab_size: int, generator: torch.Generator) -> TaskBatch:
    r"""``A B ... A -> B``: after a trigger seen once before, predict the token that followed it.

    Random content $z_t \sim \mathcal U\{0..V-1\}$, except a trigger $\texttt{A}$ at a random
    position $p \le L - 3$ and at the last input position $L - 1$, each followed by the same
    random token $b$:

    $$ z_p = z_{L-1} = \texttt{A}, \qquad z_{p+1} = z_L = b. $$

    Token ids: content ``0..V-1``, trigger ``A = V``; a model needs ``V + 1`` ids.
    Returns ``(B, L)`` tensors; only ``mask[:, L-1]`` is True (target $b$). See :cite:`olsson2022induction`.
    """
    check_positive_int("batch_size", batch_size)
    if check_positive_int("seq_len", seq_len) < 3:
        raise ValueError(f"seq_len must be an int >= 3, got {seq_len!r}")
    check_positive_int("vocab_size", vocab_size)
    _check_generator(generator)
    z = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=generator)
    p = torch.randint(0, seq_len - 2, (batch_size, 1), generator=generator)
    b = torch.randint(0, vocab_size, (batch_size, 1), generator=generator)
    trigger = torch.full((batch_size, 1), vocab_size)
    z = z.scatter(1, p, trigger).scatter(1, p + 1, b)
    z[:, seq_len - 1:seq_len] = trigger
    z[:, seq_len:] = b
    return _next_token_batch(z, slice(seq_len - 1, None))


def key_value_lookup(batch_size: int, *, n_pairs: int, vocab_size: int, generator: torch.Generator,
                     key_len: int = 2, value_len: int = 2, query_pair: int | None = None) -> TaskBatch:
    r"""A phone book of multi-token keys and values, then one key to look up (the MEAP retrieval demo).

    With $K_i$ a key of ``key_len`` tokens (all keys of a row distinct) and $W_i$ a value of
    ``value_len`` tokens, and $j$ the queried pair:

    $$ z = (K_1\, \texttt{:}\, W_1\, \texttt{,}\ \dots\ K_N\, \texttt{:}\, W_N\, \texttt{,}\
       \texttt{?}\, K_j\, \texttt{:}\, W_j). $$

    Token ids: content ``0..V-1`` (keys and values share them), ``':' = V``, ``',' = V + 1``,
    ``'?' = V + 2``; a model needs ``V + 3`` ids. $j$ is uniform per row, or ``query_pair`` for
    every row (to measure accuracy against the position of the pair, as in "lost in the middle").
    Returns ``(B, N(k + w + 2) + k + w + 1)`` tensors; ``mask`` is True on the last ``value_len``
    positions, whose targets are $W_j$. See :cite:`zhuang2025meap`, :cite:`liu2024lost`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("n_pairs", n_pairs)
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("key_len", key_len)
    check_positive_int("value_len", value_len)
    _check_generator(generator)
    n_keys = vocab_size ** key_len
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs ({n_pairs}) must be <= vocab_size ** key_len ({n_keys}) for distinct keys")
    if n_keys > 10 ** 7:
        raise ValueError(f"vocab_size ** key_len must be <= 1e7 (keys are drawn without replacement), got {n_keys}")
    if query_pair is not None and not (isinstance(query_pair, int) and 0 <= query_pair < n_pairs):
        raise ValueError(f"query_pair must be None or an int in [0, {n_pairs}), got {query_pair!r}")
    codes = torch.stack([torch.randperm(n_keys, generator=generator)[:n_pairs] for _ in range(batch_size)])
    powers = vocab_size ** torch.arange(key_len - 1, -1, -1)
    keys = (codes[:, :, None] // powers) % vocab_size
    values = torch.randint(0, vocab_size, (batch_size, n_pairs, value_len), generator=generator)
    colon = torch.full((batch_size, n_pairs, 1), vocab_size)
    comma = torch.full((batch_size, n_pairs, 1), vocab_size + 1)
    book = torch.cat([keys, colon, values, comma], dim=2).flatten(1)
    if query_pair is None:
        j = torch.randint(0, n_pairs, (batch_size,), generator=generator)
    else:
        j = torch.full((batch_size,), query_pair)
    rows = torch.arange(batch_size)
    tail = torch.cat([torch.full((batch_size, 1), vocab_size + 2), keys[rows, j],
                      torch.full((batch_size, 1), vocab_size), values[rows, j]], dim=1)
    z = torch.cat([book, tail], dim=1)
    return _next_token_batch(z, slice(z.shape[1] - 1 - value_len, None))


def meap_mask(idx: torch.Tensor, *, p: float, mask_id: int, generator: torch.Generator,
              protect: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mask-Enhanced Autoregressive Prediction: replace a fraction ``p`` of input tokens by ``mask_id``.

    In each row, $m = \operatorname{round}(p \cdot n_b)$ of the $n_b$ unprotected positions,
    chosen uniformly without replacement, are replaced:

    $$ \tilde x_{bt} = \begin{cases} \texttt{mask\_id} & t \in M_b \\ x_{bt} & \text{otherwise,} \end{cases}
       \qquad \mathcal L = -\sum_t \log p_\theta(y_t \mid \tilde x_{\le t}), $$

    with the targets $y$ those of the *unmasked* sequence: feed ``meap_mask(inputs, ...)`` to the
    model and keep ``targets`` as they are. ``idx`` is not modified. ``idx (B, T)`` int ->
    ``(B, T)``; ``protect`` (bool, ``(T,)`` or ``(B, T)``) marks positions never masked (e.g. a
    query that the answer depends on). ``mask_id`` is usually one id beyond the task's vocabulary.
    See :cite:`zhuang2025meap`.
    """
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"idx must be a torch.Tensor, got {type(idx).__name__}")
    if idx.ndim != 2 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"idx must be a 2-D integer tensor (B, T), got {idx.dtype} {tuple(idx.shape)}")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a number in [0, 1], got {p!r}")
    if not isinstance(mask_id, int) or isinstance(mask_id, bool):
        raise ValueError(f"mask_id must be an int, got {mask_id!r}")
    _check_generator(generator)
    B, T = idx.shape
    if protect is None:
        protect = torch.zeros(B, T, dtype=torch.bool)
    elif not isinstance(protect, torch.Tensor) or protect.dtype != torch.bool or protect.shape not in ((T,), (B, T)):
        got = f"{protect.dtype} {tuple(protect.shape)}" if isinstance(protect, torch.Tensor) else type(protect).__name__
        raise ValueError(f"protect must be a bool tensor of shape ({T},) or ({B}, {T}) for idx {tuple(idx.shape)}, got {got}")
    protect = protect.expand(B, T)
    n_mask = torch.round(p * (~protect).sum(dim=1).double()).long()
    # Protected slots get a score above every uniform draw, so they sort last and are never picked.
    scores = torch.rand(B, T, generator=generator).masked_fill(protect, 2.0)
    order = scores.argsort(dim=1)
    chosen = torch.zeros(B, T, dtype=torch.bool).scatter(1, order, torch.arange(T)[None, :] < n_mask[:, None])
    return idx.masked_fill(chosen, mask_id)
