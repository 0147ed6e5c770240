r"""GTrXL: GRU-type gates in place of the residual sums, and the decoder-only LM built from them.

Activations are ``(batch, time, d_model)``. See :cite:`parisotto2020gtrxl`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_divisible, check_positive_int, check_token_ids, require_tensor
from minilib.attention import MultiHeadAttention
from minilib.feedforward import FeedForward
from minilib.norms import make_norm

__all__ = ["GatedResidual", "GatedBlock", "GatedTransformerLM"]


class GatedResidual(nn.Module):
    r"""GRU-type gate that replaces the residual sum $x + y$ (GTrXL).

    $$ r = \sigma(W_r y + U_r x),\quad z = \sigma(W_z y + U_z x - b_g),\quad
       \hat h = \tanh(W_g y + U_g (r \odot x)),\quad g(x, y) = (1 - z) \odot x + z \odot \hat h $$

    ``x`` the stream, ``y`` the sublayer output, both ``(B, T, d)`` -> ``(B, T, d)``. The learnable
    bias $b_g$ starts at ``gate_bias``; a positive value makes $z \approx \sigma(-b_g)$ small, so the
    gate starts close to the identity $g(x, y) \approx x$. See :cite:`parisotto2020gtrxl`.
    """

    def __init__(self, d_model: int, *, gate_bias: float = 2.0):
        super().__init__()
        self.d = check_positive_int("d_model", d_model)
        self.w = nn.Linear(d_model, 3 * d_model, bias=False)     # W_r, W_z, W_g stacked
        self.u_rz = nn.Linear(d_model, 2 * d_model, bias=False)  # U_r, U_z stacked
        self.u_g = nn.Linear(d_model, d_model, bias=False)
        self.gate_bias = nn.Parameter(torch.full((d_model,), float(gate_bias)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, floating=True)
        require_tensor("y", y, floating=True)
        if x.shape != y.shape or x.shape[-1] != self.d:
            raise ValueError(f"x and y must both have shape (..., {self.d}), got x {tuple(x.shape)}, y {tuple(y.shape)}")
        wr, wz, wg = self.w(y).chunk(3, dim=-1)
        ur, uz = self.u_rz(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.gate_bias)
        h = torch.tanh(wg + self.u_g(r * x))
        return (1 - z) * x + z * h


class GatedBlock(nn.Module):
    r"""GTrXL layer: identity-map reordering (norm before each sublayer, ReLU after it) and gated residuals.

    $$ x \leftarrow g_1\big(x, \operatorname{ReLU}(\operatorname{Attn}(\operatorname{LN}(x)))\big),\qquad
       x \leftarrow g_2\big(x, \operatorname{ReLU}(\operatorname{FFN}(\operatorname{LN}(x)))\big) $$

    ``x (B, T, d) -> (B, T, d)``, causal attention with RoPE. See :cite:`parisotto2020gtrxl`.
    """

    def __init__(self, d_model: int, n_heads: int, *, d_ff: int | None = None, gate_bias: float = 2.0):
        super().__init__()
        check_positive_int("d_model", d_model)
        self.norm1, self.norm2 = make_norm("layer", d_model), make_norm("layer", d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, rope=True)
        self.ffn = FeedForward(d_model, d_ff, kind="gelu")
        self.gate1 = GatedResidual(d_model, gate_bias=gate_bias)
        self.gate2 = GatedResidual(d_model, gate_bias=gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate1(x, F.relu(self.attn(self.norm1(x), causal=True)))
        return self.gate2(x, F.relu(self.ffn(self.norm2(x))))


class GatedTransformerLM(nn.Module):
    r"""Decoder-only LM whose layers are :class:`GatedBlock` s, with tied embeddings and a final LayerNorm.

    $$ h^{(0)} = E[\text{idx}],\quad h^{(\ell)} = \operatorname{GatedBlock}_\ell(h^{(\ell-1)}),\quad
       \text{logits} = \operatorname{LN}(h^{(L)}) E^\top $$

    ``idx (B, T)`` int -> ``logits (B, T, vocab_size)``. See :cite:`parisotto2020gtrxl`.
    """

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, *, d_ff: int | None = None,
                 gate_bias: float = 2.0):
        super().__init__()
        for name, value in dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads).items():
            check_positive_int(name, value)
        check_divisible("d_model", d_model, "n_heads", n_heads)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(GatedBlock(d_model, n_heads, d_ff=d_ff, gate_bias=gate_bias) for _ in range(n_layers))
        self.final_norm = make_norm("layer", d_model)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_token_ids("idx", idx, ndim=2, vocab_size=self.vocab_size)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) @ self.embed.weight.T
