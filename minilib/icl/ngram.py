r"""An explicit Transformer that represents an n-gram language model :cite:`svete2024transformers`.

Head ``i`` (``i = 0..n-2``) of one attention layer puts all its weight on position ``t - i``: with keys
:math:`k_s = (s, s^2)` and queries :math:`q_t = (2(t-i), -1)` the score :math:`2s(t-i) - s^2 = -(s - (t-i))^2 + (t-i)^2`
peaks at ``s = t - i``, so hardmax attention copies that token's one-hot exactly (softmax at inverse temperature
``beta`` approaches it as ``beta`` grows). An FFN with one ReLU unit per history ``c`` fires iff every head saw
its token, :math:`\mathrm{ReLU}(\sum_i [x_{t-i} = c_i] - (n-2))`, and its output weights are the table's
log-probabilities :math:`\log p(\cdot \mid c)`.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from minilib._checks import check_number, check_token_ids, require_tensor

__all__ = ["NGramTransformer", "ngram_transformer"]


class NGramTransformer(nn.Module):
    """The construction of :func:`ngram_transformer`. ``forward(idx (B, T), beta=None)`` returns next-token
    log-probabilities ``(B, T - n + 2, V)`` at the positions ``t = n-2 .. T-1`` that have a full history;
    ``beta=None`` is hardmax attention, a number the softmax at that inverse temperature."""

    def __init__(self, head_offsets: torch.Tensor, ffn_in: torch.Tensor, ffn_bias: torch.Tensor, ffn_out: torch.Tensor):
        super().__init__()
        self.order = head_offsets.shape[0] + 1
        self.vocab_size = ffn_out.shape[0]
        self.register_buffer("head_offsets", head_offsets)
        self.register_buffer("ffn_in", ffn_in)
        self.register_buffer("ffn_bias", ffn_bias)
        self.register_buffer("ffn_out", ffn_out)

    def attention(self, T: int, beta: float | None = None) -> torch.Tensor:
        """The heads' attention weights ``(n-1, T, T)``: row ``t`` of head ``i`` peaks at position ``t - i``."""
        s = torch.arange(T, dtype=self.ffn_in.dtype)
        keys = torch.stack([s, s ** 2], -1)                                          # (T, 2)
        target = s[None, :] - self.head_offsets[:, None]                             # (n-1, T): t - i
        queries = torch.stack([2 * target, -torch.ones_like(target)], -1)           # (n-1, T, 2)
        scores = queries @ keys.T                                                    # (n-1, T, T)
        if beta is None:
            return nn.functional.one_hot(scores.argmax(-1), T).to(scores.dtype)
        return torch.softmax(beta * scores, -1)

    def forward(self, idx: torch.Tensor, beta: float | None = None) -> torch.Tensor:
        check_token_ids("idx", idx, ndim=2, vocab_size=self.vocab_size)
        if beta is not None:
            check_number("beta", beta, positive=True)
        T = idx.shape[1]
        if T < self.order - 1:
            raise ValueError(f"idx needs at least n-1 = {self.order - 1} tokens per row, got shape {tuple(idx.shape)}")
        onehot = nn.functional.one_hot(idx, self.vocab_size).to(self.ffn_in.dtype)  # (B, T, V)
        heads = torch.einsum("hts,bsv->bthv", self.attention(T, beta), onehot).flatten(2)  # (B, T, (n-1) V)
        hidden = torch.relu(heads @ self.ffn_in.T + self.ffn_bias)                   # (B, T, V^(n-1))
        return (hidden @ self.ffn_out.T)[:, self.order - 2:]


def ngram_transformer(table: torch.Tensor) -> NGramTransformer:
    r"""The Transformer whose next-token distribution equals the n-gram table.

    ``table`` holds :math:`\log p(x_{t+1} \mid x_{t-n+2}, \dots, x_t)` with shape ``(V,) * n``: index
    ``[c_0, ..., c_{n-2}, next]``, ``c_{n-2}`` the current token. Weights: ``n - 1`` heads, an FFN of
    ``V^(n-1)`` ReLU units. :cite:`svete2024transformers`
    """
    require_tensor("table", table, floating=True)
    n, V = table.dim(), table.shape[-1]
    if n < 2 or any(s != V for s in table.shape):
        raise ValueError(f"table must have shape (V,) * n with n >= 2, got {tuple(table.shape)}")
    dtype = torch.float64
    contexts = list(itertools.product(range(V), repeat=n - 1))
    ffn_in = torch.zeros(len(contexts), (n - 1) * V, dtype=dtype)
    ffn_out = torch.zeros(V, len(contexts), dtype=dtype)
    for unit, context in enumerate(contexts):
        for j, token in enumerate(context):
            head = n - 2 - j  # head i reads position t - i; context[j] sits at t - (n - 2 - j)
            ffn_in[unit, head * V + token] = 1.0
        ffn_out[:, unit] = table[context].to(dtype)
    ffn_bias = torch.full((len(contexts),), -(n - 2.0), dtype=dtype)
    return NGramTransformer(torch.arange(n - 1, dtype=dtype), ffn_in, ffn_bias, ffn_out)
