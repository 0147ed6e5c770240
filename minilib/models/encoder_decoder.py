r"""The original Transformer: a Post-LN encoder-decoder with cross-attention and shared embeddings.

Activations are ``(batch, time, d_model)``. See :cite:`vaswani2017attention`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from minilib._checks import check_divisible, check_positive_int, check_token_ids
from minilib.attention import KVCache, MultiHeadAttention
from minilib.feedforward import FeedForward
from minilib.norms import make_norm
from minilib.positional import sinusoidal

__all__ = ["EncoderLayer", "DecoderLayer", "EncoderDecoderTransformer"]


class EncoderLayer(nn.Module):
    r"""Post-LN encoder layer: bidirectional self-attention, then feed-forward.

    $$ x \leftarrow \operatorname{LN}(x + \operatorname{SelfAttn}(x)),\qquad
       x \leftarrow \operatorname{LN}(x + \operatorname{FFN}(x)) $$

    ``x (B, S, d_model) -> (B, S, d_model)``. See :cite:`vaswani2017attention`.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None):
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

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None):
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
        sizes = dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                     n_decoder_layers=n_decoder_layers, max_len=max_len)
        for name, value in sizes.items():
            check_positive_int(name, value)
        check_divisible("d_model", d_model, "n_heads", n_heads)
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
        check_token_ids("src", src, ndim=2, vocab_size=self.vocab_size)
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x)
        return x

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, *, caches: list[KVCache] | None = None) -> torch.Tensor:
        """``tgt (B, T)`` int, ``memory (B, S, d_model)`` -> logits ``(B, T, vocab_size)``; with ``caches`` ``tgt`` continues them."""
        check_token_ids("tgt", tgt, ndim=2, vocab_size=self.vocab_size)
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
