r"""MemoryFormer's hash memory layer: a fully connected layer replaced by table look-ups.

The input $x \in \mathbb{R}^{d_\text{in}}$ is cut into $K = d_\text{in}/\tau$ chunks $z_k \in \mathbb{R}^\tau$. Each
chunk's signs $h_k = \operatorname{sign}(z_k) \in \{-1, 1\}^\tau$ are a bucket of a table
$T_k \in \mathbb{R}^{2^\tau \times d_\text{out}}$, and

$$ y = \sum_{k=1}^{K} p(h_k \mid z_k)\, T_k[h_k],\qquad
   p(h \mid z) = \frac{e^{\langle z, h\rangle / t}}{\sum_{h'} e^{\langle z, h'\rangle / t}}
   = \prod_{i=1}^{\tau} \sigma\!\big(2 \lvert z_i \rvert / t\big), $$

the probability of the chosen bucket under a softmax over all $2^\tau$ codes, which factorises over the bits. It
lets the gradient reach $x$ (and the layers before) while the forward only adds $K$ rows:
:meth:`HashMemoryLayer.flops_per_token` counts $O(d_\text{in} + K d_\text{out})$ against $2 d_\text{in} d_\text{out}$
for ``nn.Linear`` :cite:`ding2024memoryformer`.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_divisible, check_last_dim, check_number, check_positive_int
from minilib.feedforward import register_ffn

__all__ = ["HashMemoryLayer"]


class HashMemoryLayer(nn.Module):
    """Hash memory in place of ``nn.Linear(d_in, d_out)``: chunks of ``chunk`` bits, tables of ``2**chunk`` rows,
    temperature ``temperature``. ``x (..., d_in) -> (..., d_out)``. See :cite:`ding2024memoryformer`."""

    def __init__(self, d_in: int, d_out: int, *, chunk: int = 8, temperature: float = 1.0):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("chunk", chunk)):
            check_positive_int(name, value)
        if chunk > 16:
            raise ValueError(f"chunk must be at most 16 (tables of 2**chunk rows), got {chunk}")
        check_divisible("d_in", d_in, "chunk", chunk)
        self.temperature = check_number("temperature", temperature, positive=True)
        self.d_in, self.d_out, self.chunk, self.n_chunks = d_in, d_out, chunk, d_in // chunk
        self.tables = nn.Parameter(torch.randn(self.n_chunks, 2 ** chunk, d_out) * (self.n_chunks ** -0.5))
        self.register_buffer("bit_values", 2 ** torch.arange(chunk), persistent=False)

    def buckets(self, x: torch.Tensor) -> torch.Tensor:
        """Bucket index of every chunk, ``(..., K)`` int64: bit $i$ is set where $z_i > 0$."""
        check_last_dim("x", x, self.d_in, size_name="d_in")
        z = x.reshape(*x.shape[:-1], self.n_chunks, self.chunk)
        return ((z > 0).long() * self.bit_values).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.buckets(x)
        z = x.reshape(*x.shape[:-1], self.n_chunks, self.chunk)
        prob = torch.sigmoid(2 * z.abs() / self.temperature).prod(-1)             # (..., K)
        rows = self.tables[torch.arange(self.n_chunks, device=x.device), idx]        # (..., K, d_out)
        return (prob[..., None] * rows).sum(-2)

    def flops_per_token(self) -> int:
        """Counted operations per token: a comparison, a sigmoid argument and a product per input coordinate
        ($3 d_\\text{in}$), then $K$ scaled rows added ($2 K d_\\text{out}$)."""
        return 3 * self.d_in + 2 * self.n_chunks * self.d_out


class _HashMemoryFFN(nn.Module):
    """Two hash memory layers with a ReLU between them, the FFN of a MemoryFormer-style block."""

    def __init__(self, d_model: int, d_ff: int, **kwargs):
        super().__init__()
        self.up, self.down = HashMemoryLayer(d_model, d_ff, **kwargs), HashMemoryLayer(d_ff, d_model, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def _hash_memory_factory(config, layer: int) -> nn.Module:
    return _HashMemoryFFN(config.d_model, config.d_ff or 4 * config.d_model, **config.ffn_kwargs)


register_ffn("hash_memory", _hash_memory_factory)
