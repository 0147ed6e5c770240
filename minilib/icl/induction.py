r"""Induction heads: the two-layer circuit that continues a repeated pattern, and the score that finds one
:cite:`olsson2022induction`.

Layer 1, a previous-token head, writes each position's previous token :math:`x_{s-1}` into the residual stream.
Layer 2, the induction head, matches the current token :math:`x_t` (query) against that feature (key), attends to
the positions ``s`` whose previous token equals :math:`x_t`, and copies :math:`x_s`: after "... A B ... A" it
predicts "B".
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_number, check_positive_int, check_token_ids, require_tensor
from minilib.feedforward import register_ffn

__all__ = ["induction_head_patterns", "prefix_matching_score", "copying_score", "repeated_segments", "NoFeedForward"]


class NoFeedForward(nn.Module):
    """The feed-forward network of an attention-only Transformer: it adds nothing, ``x (..., d) -> 0``. Registered
    as ``ffn="none"`` (:class:`minilib.models.TransformerConfig`), the setting in which induction heads were first
    traced :cite:`olsson2022induction`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, floating=True)
        return torch.zeros_like(x)


register_ffn("none", lambda config, layer: NoFeedForward())


def induction_head_patterns(tokens: torch.Tensor) -> torch.Tensor:
    r"""The hard attention patterns of the constructed two-layer circuit on ``tokens (T,)``: ``(2, T, T)``.

    Row ``t`` of layer 1 attends to ``t - 1`` (position 0 to itself). Row ``t`` of layer 2 attends uniformly to
    the keys :math:`s \le t` with :math:`x_{s-1} = x_t` (key ``s`` carries :math:`x_{s-1}` from layer 1), and to
    position 0 when there is none. :cite:`olsson2022induction`
    """
    check_token_ids("tokens", tokens, ndim=1)
    T = tokens.shape[0]
    positions = torch.arange(T)
    previous_token_head = torch.zeros(T, T, dtype=torch.float64)
    previous_token_head[positions, (positions - 1).clamp(min=0)] = 1.0
    previous = previous_token_head @ tokens.double()                           # x_{s-1}, what layer 1 writes at s
    match = (previous[None, :] == tokens.double()[:, None]) & (positions[None, :] <= positions[:, None])
    match[:, 0] = False                                                        # position 0 has no previous token
    match[~match.any(-1), 0] = True                                            # nothing to copy: attend to the start
    induction = match.double() / match.sum(-1, keepdim=True)
    return torch.stack([previous_token_head, induction])


def prefix_matching_score(attn: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    r"""How much each head attends like an induction head on a random segment repeated once: ``(..., T, T)`` -> ``(...)``.

    $$ \text{score} = \frac1L \sum_{t=L}^{2L-1} \sum_{1 \le s \le t:\ x_{s-1} = x_t} a_{ts} , \qquad T = 2L; $$
    1 for a perfect induction head, about :math:`\frac1L\sum_t \frac{1}{t+1}` for uniform causal attention.
    :cite:`olsson2022induction`
    """
    check_token_ids("tokens", tokens, ndim=1)
    require_tensor("attn", attn, floating=True)
    T = tokens.shape[0]
    if attn.dim() < 2 or attn.shape[-2:] != (T, T):
        raise ValueError(f"attn must end in (T, T) = ({T}, {T}) for tokens of length {T}, got {tuple(attn.shape)}")
    if T % 2:
        raise ValueError(f"tokens must be a segment repeated once (even length), got length {T}")
    previous = torch.cat([tokens.new_full((1,), -1), tokens[:-1]])
    match = (previous[None, :] == tokens[:, None]) & torch.ones(T, T, dtype=torch.bool).tril()
    match[: T // 2] = False
    return (attn * match.to(attn.dtype)).sum((-1, -2)) / (T // 2)


def copying_score(circuit: torch.Tensor) -> torch.Tensor:
    r"""How much a head's OV circuit copies its input token: ``circuit (..., V, V)`` -> ``(...)`` in ``[-1, 1]``.

    ``circuit[a, b]`` is the logit the head adds to token ``b`` when it attends to token ``a`` (embedding, value,
    output and unembedding multiplied out). With :math:`\lambda_i` its eigenvalues,
    $$ \text{score} = \frac{\sum_i \operatorname{Re}\lambda_i}{\sum_i |\lambda_i|} = \frac{\operatorname{tr} M}{\sum_i |\lambda_i|}; $$
    1 when every eigenvalue is positive (attending to a token raises that token's logit), -1 when every one is
    negative. :cite:`olsson2022induction`
    """
    require_tensor("circuit", circuit, floating=True)
    if circuit.dim() < 2 or circuit.shape[-1] != circuit.shape[-2]:
        raise ValueError(f"circuit must end in a square (V, V), got shape {tuple(circuit.shape)}")
    eig = torch.linalg.eigvals(circuit.double())
    return (eig.real.sum(-1) / eig.abs().sum(-1).clamp_min(1e-300)).to(circuit.dtype)


def repeated_segments(batch_size: int, *, seq_len: int, vocab_size: int, min_len: int,
                      generator: torch.Generator, trigram: torch.Tensor | None = None,
                      follow: float = 0.8) -> torch.Tensor:
    r"""Random tokens in which a random segment appears twice in a row: ``(B, seq_len)`` int64.

    Row ``b`` draws a segment length :math:`L_b \sim \mathcal U\{m..\lfloor T/2 \rfloor\}` (``m = min_len``) and a
    start :math:`p_b`, then :math:`x_{p+L+i} = x_{p+i}` for :math:`i < L`. The distance between the copies varies,
    so no fixed positional offset predicts the second copy: only an induction head (find where the current token
    occurred, copy what followed) does. Outside the two copies the tokens are uniform, or, with a ``trigram`` table
    ``(V, V)`` of token ids, follow :math:`x_t = \mathrm{trigram}[x_{t-2}, x_{t-1}]` with probability ``follow``
    (uniform otherwise): a background in which a previous-token head pays off on its own, as in text, which is
    what lets the induction circuit form in a few thousand steps. :cite:`olsson2022induction`
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("min_len", min_len)
    if 2 * min_len > seq_len:
        raise ValueError(f"min_len ({min_len}) must be at most seq_len / 2 ({seq_len} / 2)")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_number("follow", follow, low=0.0, high=1.0)
    x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    if trigram is not None:
        check_token_ids("trigram", trigram, ndim=2)
        if trigram.shape != (vocab_size, vocab_size) or int(trigram.max()) >= vocab_size:
            raise ValueError(f"trigram must be (vocab_size, vocab_size) = ({vocab_size}, {vocab_size}) of ids below "
                             f"{vocab_size}, got shape {tuple(trigram.shape)}")
        keep = torch.rand(batch_size, seq_len, generator=generator) < follow
        for t in range(2, seq_len):
            x[:, t] = torch.where(keep[:, t], trigram[x[:, t - 2], x[:, t - 1]], x[:, t])
    lengths = torch.randint(min_len, seq_len // 2 + 1, (batch_size,), generator=generator)
    starts = (torch.rand(batch_size, generator=generator) * (seq_len - 2 * lengths + 1)).long()
    positions = torch.arange(seq_len)
    second = (positions >= (starts + lengths)[:, None]) & (positions < (starts + 2 * lengths)[:, None])
    first = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
    fresh = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    x = torch.where(first, fresh, x)                       # the segment itself is uniform, also over a background
    source = torch.where(second, positions - lengths[:, None], positions)
    return x.gather(1, source)
