r"""The Dual-Stream Transformer: the residual stream split into a token stream written by attention and a
context stream written by the feed-forward network.

Activations are ``(batch, time, d_token + d_context)``. See :cite:`kerce2026dualstream`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_divisible, check_positive_int, check_token_ids, require_tensor
from minilib.attention import merge_heads, sdpa, split_heads
from minilib.norms import make_norm
from minilib.positional import rope

__all__ = ["DualStreamBlock", "DualStreamLM"]


MIXINGS = ("independent", "kronecker", "dense")


class DualStreamBlock(nn.Module):
    r"""One layer of the Dual-Stream Transformer: attention writes the token stream, the FFN the context stream.

    $$ u = \operatorname{LN}([x_t; x_e]),\qquad
       x_t \leftarrow x_t + W_O\,[o_1; \dots; o_H],\quad o_h = \operatorname{softmax}\!\Big(\tfrac{q_h k_h^\top}{\sqrt{D}}\Big) v_h,\quad
       (q_h, k_h, v_h) = u\,(W_Q^h, W_K^h, W_V^h) $$
    $$ x_e \leftarrow x_e + W_2\, \operatorname{gelu}\big(W_1 \operatorname{LN}([x_t; x_e])\big) $$

    Head mixing fixes the form of $W_O \in \mathbb{R}^{HD \times HD}$ (channel $h$ of the token stream is
    head $h$'s block of $D$ coordinates): ``"independent"`` $W_O = I$ (head $h$ writes only channel $h$,
    no parameters), ``"kronecker"`` $W_O = M \otimes I_D$ with $M \in \mathbb{R}^{H\times H}$ (heads
    exchange scalar multiples of whole vectors, $H^2$ parameters), ``"dense"`` any $W_O$ ($H^2D^2$).
    Each family contains the previous one; all three start at $W_O = I$.
    ``x (B, T, d_token + d_context) -> same``, causal, RoPE. See :cite:`kerce2026dualstream`.
    """

    def __init__(self, d_token: int, d_context: int, n_heads: int, *, mixing: str = "kronecker", d_ff: int | None = None):
        super().__init__()
        if mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}")
        d_ff = 4 * (d_token + d_context) if d_ff is None else d_ff
        for name, value in dict(d_token=d_token, d_context=d_context, n_heads=n_heads, d_ff=d_ff).items():
            check_positive_int(name, value)
        check_divisible("d_token", d_token, "n_heads", n_heads)
        d = d_token + d_context
        self.d_token, self.d_context, self.n_heads, self.head_dim, self.mixing = d_token, d_context, n_heads, d_token // n_heads, mixing
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got d_token / n_heads = {self.head_dim}")
        self.norm1, self.norm2 = make_norm("layer", d), make_norm("layer", d)
        self.wqkv = nn.Linear(d, 3 * d_token, bias=False)
        if mixing == "kronecker":
            self.mix = nn.Parameter(torch.eye(n_heads))
        elif mixing == "dense":
            self.mix = nn.Parameter(torch.eye(d_token))
        else:
            self.mix = None
        self.w1 = nn.Linear(d, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_context, bias=False)

    def output_matrix(self) -> torch.Tensor:
        r"""The head-mixing matrix $W_O$, ``(d_token, d_token)``, acting as ``y = heads @ W_O.T``."""
        if self.mixing == "independent":
            return torch.eye(self.d_token, device=self.wqkv.weight.device, dtype=self.wqkv.weight.dtype)
        if self.mixing == "kronecker":
            return torch.kron(self.mix, torch.eye(self.head_dim, device=self.mix.device, dtype=self.mix.dtype))
        return self.mix

    def mix_heads(self, heads: torch.Tensor) -> torch.Tensor:
        r"""Apply $W_O$ to per-head outputs ``(B, H, T, D) -> (B, T, H*D)`` without forming $M \otimes I$."""
        if self.mixing == "independent":
            return merge_heads(heads)
        if self.mixing == "kronecker":
            return merge_heads(torch.einsum("gh,bhtd->bgtd", self.mix, heads))
        return merge_heads(heads) @ self.mix.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        if x.shape[-1] != self.d_token + self.d_context:
            raise ValueError(f"x must have d_token + d_context = {self.d_token + self.d_context} channels, got {tuple(x.shape)}")
        positions = torch.arange(x.shape[1], device=x.device)
        q, k, v = (split_heads(t, self.n_heads) for t in self.wqkv(self.norm1(x)).chunk(3, dim=-1))
        heads = sdpa(rope(q, positions), rope(k, positions), v, causal=True)
        x_token = x[..., :self.d_token] + self.mix_heads(heads)
        x = torch.cat([x_token, x[..., self.d_token:]], dim=-1)
        x_context = x[..., self.d_token:] + self.w2(F.gelu(self.w1(self.norm2(x))))
        return torch.cat([x[..., :self.d_token], x_context], dim=-1)


class DualStreamLM(nn.Module):
    r"""Decoder-only LM of :class:`DualStreamBlock` s: embeddings enter the token stream, the context stream starts at zero.

    $$ x^{(0)} = [E[\text{idx}];\ 0],\quad x^{(\ell)} = \operatorname{DualStreamBlock}_\ell(x^{(\ell-1)}),\quad
       \text{logits} = \operatorname{LN}(x^{(L)})\, W_{\text{out}} $$

    ``idx (B, T)`` int -> ``logits (B, T, vocab_size)``. See :cite:`kerce2026dualstream`.
    """

    def __init__(self, vocab_size: int, d_token: int, d_context: int, n_layers: int, n_heads: int, *,
                 mixing: str = "kronecker", d_ff: int | None = None):
        super().__init__()
        for name, value in dict(vocab_size=vocab_size, d_token=d_token, n_layers=n_layers).items():
            check_positive_int(name, value)
        self.vocab_size, self.d_context = vocab_size, d_context
        self.embed = nn.Embedding(vocab_size, d_token)
        self.blocks = nn.ModuleList(DualStreamBlock(d_token, d_context, n_heads, mixing=mixing, d_ff=d_ff)
                                    for _ in range(n_layers))
        self.final_norm = make_norm("layer", d_token + d_context)
        self.out = nn.Linear(d_token + d_context, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_token_ids("idx", idx, ndim=2, vocab_size=self.vocab_size)
        tok = self.embed(idx)
        x = torch.cat([tok, tok.new_zeros(*tok.shape[:2], self.d_context)], dim=-1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.final_norm(x))
