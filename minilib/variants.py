r"""Four variations on the Transformer block, each built from the core pieces.

- :class:`EncoderDecoderTransformer`: the original Post-LN encoder-decoder with cross-attention.
- :class:`MinimalTransformer`: the block with its MLP, key matrix, value and output projections
  removable one flag at a time, as a sequence classifier.
- :class:`GatedResidual` and :class:`GatedTransformerLM`: GRU-type gates in place of residual sums (GTrXL).
- :class:`DualStreamBlock` and :class:`DualStreamLM`: the residual stream split into a token stream
  written by attention and a context stream written by the feed-forward network.

Activations are ``(batch, time, d_model)``; attention tensors ``(batch, heads, time, head_dim)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import require_tensor
from minilib.attention import KVCache, MultiHeadAttention, merge_heads, sdpa, split_heads
from minilib.models import FeedForward, make_norm
from minilib.positional import rope, sinusoidal


def _require_tokens(name: str, idx) -> None:
    require_tensor(name, idx, ndim=2)
    if idx.is_floating_point():
        raise TypeError(f"{name} must hold integer token ids, got dtype {idx.dtype}")


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_heads(d: int, n_heads: int, what: str = "d_model") -> None:
    if d % n_heads != 0:
        raise ValueError(f"{what} ({d}) must be divisible by n_heads ({n_heads})")


# ---------------------------------------------------------------------------------------------
# 1. Encoder-decoder (Vaswani et al. 2017)
# ---------------------------------------------------------------------------------------------

class EncoderLayer(nn.Module):
    r"""Post-LN encoder layer: bidirectional self-attention, then feed-forward.

    $$ x \leftarrow \operatorname{LN}(x + \operatorname{SelfAttn}(x)),\qquad
       x \leftarrow \operatorname{LN}(x + \operatorname{FFN}(x)) $$

    ``x (B, S, d_model) -> (B, S, d_model)``. See :cite:`vaswani2017attention`.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff, kind="gelu")
        self.norm1, self.norm2 = make_norm("layer", d_model), make_norm("layer", d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, causal=False))
        return self.norm2(x + self.ffn(x))


class DecoderLayer(nn.Module):
    r"""Post-LN decoder layer: causal self-attention, cross-attention to the encoder, feed-forward.

    $$ y \leftarrow \operatorname{LN}(y + \operatorname{SelfAttn}_{\text{causal}}(y)),\quad
       y \leftarrow \operatorname{LN}(y + \operatorname{CrossAttn}(y, M)),\quad
       y \leftarrow \operatorname{LN}(y + \operatorname{FFN}(y)) $$

    ``y (B, T, d_model)``, ``memory (B, S, d_model) -> (B, T, d_model)``; with a :class:`KVCache`
    ``y`` holds only the newest positions. See :cite:`vaswani2017attention`.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn = MultiHeadAttention(d_model, n_heads)
        self.ffn = FeedForward(d_model, d_ff, kind="gelu")
        self.norm1, self.norm2, self.norm3 = (make_norm("layer", d_model) for _ in range(3))

    def forward(self, y: torch.Tensor, memory: torch.Tensor, *, cache: KVCache | None = None) -> torch.Tensor:
        y = self.norm1(y + self.self_attn(y, causal=True, cache=cache))
        y = self.norm2(y + self.cross_attn(y, memory=memory))
        return self.norm3(y + self.ffn(y))


class EncoderDecoderTransformer(nn.Module):
    r"""The original Transformer: Post-LN encoder and decoder, sinusoidal positions, shared embeddings.

    $$ M = \operatorname{Enc}\big(\sqrt{d}\,E[\text{src}] + P\big),\qquad
       \text{logits} = \operatorname{Dec}\big(\sqrt{d}\,E[\text{tgt}] + P,\ M\big)\, E^\top $$

    ``src (B, S)``, ``tgt (B, T)`` int -> ``logits (B, T, vocab_size)``; the decoder is causal, the
    encoder and cross-attention are not. One embedding matrix serves source, target and output,
    as in the paper. The feed-forward uses GELU where the paper used ReLU. See :cite:`vaswani2017attention`.
    """

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, *, d_ff: int | None = None,
                 n_decoder_layers: int | None = None, max_len: int = 512):
        super().__init__()
        n_decoder_layers = n_layers if n_decoder_layers is None else n_decoder_layers
        d_ff = 4 * d_model if d_ff is None else d_ff
        _check_positive(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff,
                        n_decoder_layers=n_decoder_layers, max_len=max_len)
        _check_heads(d_model, n_heads)
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.register_buffer("pos_table", sinusoidal(max_len, d_model), persistent=False)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff) for _ in range(n_decoder_layers))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)

    def _embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = idx.shape[1]
        if start + T > self.max_len:
            raise ValueError(f"sequence of {start + T} positions (idx {tuple(idx.shape)}, offset {start}) exceeds max_len={self.max_len}")
        x = self.embed(idx) * math.sqrt(self.d_model)
        return x + self.pos_table[start:start + T].to(x.dtype)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """``src (B, S)`` int -> memory ``(B, S, d_model)``."""
        _require_tokens("src", src)
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x)
        return x

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, *, caches: list[KVCache] | None = None) -> torch.Tensor:
        """``tgt (B, T)`` int, ``memory (B, S, d_model)`` -> logits ``(B, T, vocab_size)``; with ``caches`` ``tgt`` continues them."""
        _require_tokens("tgt", tgt)
        if tgt.shape[0] != memory.shape[0]:
            raise ValueError(f"tgt and memory must share the batch size, got tgt {tuple(tgt.shape)}, memory {tuple(memory.shape)}")
        y = self._embed(tgt, 0 if caches is None else caches[0].length)
        for i, layer in enumerate(self.decoder):
            y = layer(y, memory, cache=None if caches is None else caches[i])
        return y @ self.embed.weight.T

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt, self.encode(src))

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, n_steps: int, *, bos_id: int) -> torch.Tensor:
        r"""Most likely output, one token at a time: $y_t = \arg\max_v p(v \mid y_{<t}, \text{src})$, $y_0$ = ``bos_id``.

        Encodes ``src (B, S)`` once, then feeds only the newest token through the decoder with a
        :class:`KVCache` per layer. Returns ``(B, n_steps)`` without the BOS token.
        """
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if not 0 <= bos_id < self.vocab_size:
            raise ValueError(f"bos_id must be in [0, {self.vocab_size}), got {bos_id}")
        was_training = self.training
        self.eval()
        memory = self.encode(src)
        caches = [KVCache() for _ in self.decoder]
        token = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        out = []
        for _ in range(n_steps):
            token = self.decode(token, memory, caches=caches)[:, -1].argmax(dim=-1, keepdim=True)
            out.append(token)
        self.train(was_training)
        return torch.cat(out, dim=1) if out else token[:, :0]


# ---------------------------------------------------------------------------------------------
# 2. Reducing the Transformer architecture to a minimum (Bermeitinger et al. 2024)
# ---------------------------------------------------------------------------------------------

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
        _check_heads(d_model, n_heads)
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
        return self.head_dim ** -0.5 * q @ k.transpose(-2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self._queries_keys(x)
        v = split_heads(x if self.wv is None else self.wv(x), self.n_heads)
        out = merge_heads(sdpa(q, k, v, scale=self.head_dim ** -0.5))
        return out if self.wo is None else self.wo(out)


class MinimalBlock(nn.Module):
    r"""Pre-LN block with removable parts: $x \leftarrow x + \operatorname{Attn}(\operatorname{LN}(x))$, then, if ``mlp``,
    $x \leftarrow x + \operatorname{FFN}(\operatorname{LN}(x))$.

    ``x (B, T, d) -> (B, T, d)``. See :cite:`bermeitinger2024minimum`.
    """

    def __init__(self, d_model: int, n_heads: int, *, d_ff: int, mlp: bool, similarity: str, value_out: bool):
        super().__init__()
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
        d_ff = 4 * d_model if d_ff is None else d_ff
        _check_positive(d_in=d_in, n_classes=n_classes, seq_len=seq_len, d_model=d_model, n_layers=n_layers,
                        n_heads=n_heads, d_ff=d_ff)
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


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# 3. GTrXL gating (Parisotto et al. 2020)
# ---------------------------------------------------------------------------------------------

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
        _check_positive(d_model=d_model)
        self.d = d_model
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

    def __init__(self, d_model: int, n_heads: int, *, d_ff: int, gate_bias: float):
        super().__init__()
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
        d_ff = 4 * d_model if d_ff is None else d_ff
        _check_positive(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff)
        _check_heads(d_model, n_heads)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(GatedBlock(d_model, n_heads, d_ff=d_ff, gate_bias=gate_bias) for _ in range(n_layers))
        self.final_norm = make_norm("layer", d_model)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _require_tokens("idx", idx)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) @ self.embed.weight.T


# ---------------------------------------------------------------------------------------------
# 4. Dual-stream Transformer (Kerce & Fox)
# ---------------------------------------------------------------------------------------------

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
        _check_positive(d_token=d_token, d_context=d_context, n_heads=n_heads, d_ff=d_ff)
        _check_heads(d_token, n_heads, "d_token")
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
        _check_positive(vocab_size=vocab_size, n_layers=n_layers)
        self.d_context = d_context
        self.embed = nn.Embedding(vocab_size, d_token)
        self.blocks = nn.ModuleList(DualStreamBlock(d_token, d_context, n_heads, mixing=mixing, d_ff=d_ff)
                                    for _ in range(n_layers))
        self.final_norm = make_norm("layer", d_token + d_context)
        self.out = nn.Linear(d_token + d_context, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _require_tokens("idx", idx)
        tok = self.embed(idx)
        x = torch.cat([tok, tok.new_zeros(*tok.shape[:2], self.d_context)], dim=-1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.final_norm(x))
