r"""The Transformer block reduced to a minimum: MLP, key matrix, value and output projections removable one flag at a time.

A sequence classifier over ``(batch, time, d_in)`` inputs. See :cite:`bermeitinger2024minimum`.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_divisible, check_positive_int, default_scale, require_tensor
from minilib.attention import merge_heads, sdpa, split_heads
from minilib.feedforward import FeedForward
from minilib.norms import make_norm

__all__ = ["MinimalAttention", "MinimalBlock", "MinimalTransformer"]


SIMILARITIES = ("qk", "collapsed", "symmetric")


class MinimalAttention(nn.Module):
    r"""Multi-head self-attention whose similarity and value path can be reduced.

    $$ s^h_{ts} = \frac{x_t^\top A_h\, x_s}{\sqrt{D}},\qquad
       o_t = \Big[\textstyle\sum_s \operatorname{softmax}_s(s^h_{ts})\, v^h_s\Big]_{h=1..H} W_O $$

    ``similarity``: ``"qk"`` $A_h = W_Q^h W_K^{h\top}$ ($2d^2$ parameters in all);
    ``"collapsed"`` one free $d\times d$ matrix $A_h$ per head ($H d^2$); ``"symmetric"``
    $A_h = A_h^\top$ from its upper triangle ($H\,d(d+1)/2$), so $s_{ts} = s_{st}$.
    ``value_out=False`` sets $W_V = W_O = I$: head $h$ averages its own $D = d/H$ channels
    of $x$ (saves $2d^2$). ``x (B, T, d) -> (B, T, d)``, not causal. See :cite:`bermeitinger2024minimum`.
    """

    def __init__(self, d_model: int, n_heads: int, *, similarity: str = "qk", value_out: bool = True):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        check_positive_int("d_model", d_model)
        check_positive_int("n_heads", n_heads)
        check_divisible("d_model", d_model, "n_heads", n_heads)
        self.d, self.n_heads, self.head_dim, self.similarity = d_model, n_heads, d_model // n_heads, similarity
        if similarity == "qk":
            self.wq = nn.Linear(d_model, d_model, bias=False)
            self.wk = nn.Linear(d_model, d_model, bias=False)
        elif similarity == "collapsed":
            self.a = nn.Parameter(torch.randn(n_heads, d_model, d_model) * d_model ** -0.5)
        else:
            rows, cols = torch.triu_indices(d_model, d_model)
            self.register_buffer("rows", rows, persistent=False)
            self.register_buffer("cols", cols, persistent=False)
            self.a_upper = nn.Parameter(torch.randn(n_heads, rows.numel()) * d_model ** -0.5)
        self.wv = nn.Linear(d_model, d_model, bias=False) if value_out else None
        self.wo = nn.Linear(d_model, d_model, bias=False) if value_out else None

    def similarity_matrices(self) -> torch.Tensor:
        r"""The bilinear forms $A_h$ of the scores, ``(H, d, d)``."""
        if self.similarity == "qk":
            wq = self.wq.weight.view(self.n_heads, self.head_dim, self.d)
            wk = self.wk.weight.view(self.n_heads, self.head_dim, self.d)
            return wq.transpose(1, 2) @ wk
        if self.similarity == "collapsed":
            return self.a
        upper = self.a_upper.new_zeros(self.n_heads, self.d, self.d)
        upper[:, self.rows, self.cols] = self.a_upper
        return upper + upper.transpose(1, 2) - torch.diag_embed(upper.diagonal(dim1=1, dim2=2))

    def _queries_keys(self, x: torch.Tensor):
        require_tensor("x", x, ndim=3, floating=True)
        if x.shape[-1] != self.d:
            raise ValueError(f"x must have d_model={self.d} channels, got shape {tuple(x.shape)}")
        if self.similarity == "qk":
            return split_heads(self.wq(x), self.n_heads), split_heads(self.wk(x), self.n_heads)
        keys = x[:, None].expand(-1, self.n_heads, -1, -1)
        return torch.einsum("btc,hcd->bhtd", x, self.similarity_matrices()), keys

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        r"""Pre-softmax scores $s^h_{ts}$, ``x (B, T, d) -> (B, H, T, T)``."""
        q, k = self._queries_keys(x)
        return default_scale(self.head_dim, None) * q @ k.transpose(-2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self._queries_keys(x)
        v = split_heads(x if self.wv is None else self.wv(x), self.n_heads)
        # the queries of the collapsed forms are d wide, so the 1/sqrt(D) of a head is given explicitly
        out = merge_heads(sdpa(q, k, v, scale=default_scale(self.head_dim, None)))
        return out if self.wo is None else self.wo(out)


class MinimalBlock(nn.Module):
    r"""Pre-LN block with removable parts: $x \leftarrow x + \operatorname{Attn}(\operatorname{LN}(x))$, then, if ``mlp``,
    $x \leftarrow x + \operatorname{FFN}(\operatorname{LN}(x))$.

    ``x (B, T, d) -> (B, T, d)``. See :cite:`bermeitinger2024minimum`.
    """

    def __init__(self, d_model: int, n_heads: int, *, d_ff: int | None = None, mlp: bool = True, similarity: str = "qk",
                 value_out: bool = True):
        super().__init__()
        check_positive_int("d_model", d_model)
        self.norm1 = make_norm("layer", d_model)
        self.attn = MinimalAttention(d_model, n_heads, similarity=similarity, value_out=value_out)
        self.norm2 = make_norm("layer", d_model) if mlp else None
        self.ffn = FeedForward(d_model, d_ff, kind="gelu") if mlp else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x if self.ffn is None else x + self.ffn(self.norm2(x))


class MinimalTransformer(nn.Module):
    r"""Sequence classifier built from :class:`MinimalBlock` s, with the ablation flags of Bermeitinger et al.

    $$ h^{(0)} = X W_{\text{in}} + b_{\text{in}} + P,\quad h^{(\ell)} = \operatorname{Block}_\ell(h^{(\ell-1)}),\quad
       \text{logits} = \operatorname{vec}\big(\operatorname{LN}(h^{(L)})\big)\, W_{\text{cls}} + b_{\text{cls}} $$

    ``x (B, T, d_in)`` float -> ``logits (B, n_classes)``, ``T = seq_len`` (e.g. the 8 pixel rows of
    an 8x8 digit). Flags: ``mlp`` (keep the feed-forward), ``similarity`` (``"qk"``, ``"collapsed"``,
    ``"symmetric"``), ``value_out`` (keep $W_V$, $W_O$). Parameters per layer, $d$ = ``d_model``,
    $f$ = ``d_ff``: LN $2d$; similarity $2d^2$ / $Hd^2$ / $Hd(d+1)/2$; values $2d^2$ or 0;
    MLP $2df + 2d$ or 0. The classifier reads all ``T`` positions (a mean over positions would
    lose which row holds which pixels once $W_V = I$). See :cite:`bermeitinger2024minimum`.
    """

    def __init__(self, d_in: int, n_classes: int, seq_len: int, d_model: int, n_layers: int, n_heads: int, *,
                 d_ff: int | None = None, mlp: bool = True, similarity: str = "qk", value_out: bool = True):
        super().__init__()
        for name, value in dict(d_in=d_in, n_classes=n_classes, seq_len=seq_len, d_model=d_model, n_layers=n_layers,
                                n_heads=n_heads).items():
            check_positive_int(name, value)
        self.seq_len, self.d_in = seq_len, d_in
        self.embed = nn.Linear(d_in, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
        self.blocks = nn.ModuleList(
            MinimalBlock(d_model, n_heads, d_ff=d_ff, mlp=mlp, similarity=similarity, value_out=value_out)
            for _ in range(n_layers))
        self.norm = make_norm("layer", d_model)
        self.head = nn.Linear(seq_len * d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        if x.shape[1:] != (self.seq_len, self.d_in):
            raise ValueError(f"x must have shape (B, {self.seq_len}, {self.d_in}), got {tuple(x.shape)}")
        h = self.embed(x) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).flatten(1))
