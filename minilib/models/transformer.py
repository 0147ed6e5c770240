r"""The decoder-only Transformer language model and its sampler.

``TransformerLM`` is a decoder-only language model in the nanoGPT mould, with the choices a
reader wants to compare as constructor arguments: Pre-/Post-norm, LayerNorm/RMSNorm, GELU/SwiGLU
feed-forward, and sinusoidal / learned / RoPE / ALiBi / no positions.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import require_tensor
from minilib.attention import KVCache, MultiHeadAttention
from minilib.feedforward import FeedForward
from minilib.norms import make_norm
from minilib.positional import alibi_bias, sinusoidal
from minilib.signal_propagation import deepscale_init_

POSITIONS = ("rope", "sinusoidal", "learned", "alibi", "none")
INIT_STD = 0.02  # GPT-2's initial weight scale, also the scale of the sinusoidal table added to the embeddings
INITS = ("default", "xavier", "deepscale")


class Block(nn.Module):
    r"""One Transformer layer: attention then feed-forward, each wrapped in a residual connection.

    $$ \text{Pre-norm: } x \leftarrow x + f(\operatorname{Norm}(x)) \qquad
       \text{Post-norm: } x \leftarrow \operatorname{Norm}(x + f(x)) $$

    for $f$ = attention, then $f$ = feed-forward. See :cite:`xiong2020layernorm`.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None, d_ff: int, norm: str,
                 pre_norm: bool, ffn: str, rope: bool, attn_kwargs: dict | None = None,
                 attention: type[MultiHeadAttention] = MultiHeadAttention):
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = attention(d_model, n_heads, n_kv_heads=n_kv_heads, rope=rope, **(attn_kwargs or {}))
        self.ffn = FeedForward(d_model, d_ff, kind=ffn)
        self.norm1, self.norm2 = make_norm(norm, d_model), make_norm(norm, d_model)
        # (lam, beta) of DeepScaleLM's scaled residual lam * x + beta * f; (1.0, 1.0) is the plain residual.
        self.residual_scales = (1.0, 1.0)

    def residual(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        r"""$x + f$, or DeepScaleLM's $\lambda x + \beta f$ when ``residual_scales`` is not ``(1.0, 1.0)``. See :cite:`kedia2024stable`."""
        lam, beta = self.residual_scales
        return x + update if (lam, beta) == (1.0, 1.0) else lam * x + beta * update

    def forward(self, x: torch.Tensor, *, cache: KVCache | None = None, bias: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``kv=(k, v)``: attend to another layer's keys and values instead of this layer's own (see ``kv_route_p``)."""
        def attend(h):
            return self.attn(h, causal=True, cache=cache, bias=bias, kv=kv)

        if self.pre_norm:
            x = self.residual(x, attend(self.norm1(x)))
            return self.residual(x, self.ffn(self.norm2(x)))
        x = self.norm1(self.residual(x, attend(x)))
        return self.norm2(self.residual(x, self.ffn(x)))


class TransformerLM(nn.Module):
    r"""Decoder-only Transformer language model with tied input/output embeddings.

    $$ h^{(0)} = E[\text{idx}] (+ P),\quad h^{(\ell)} = \operatorname{Block}_\ell(h^{(\ell-1)}),\quad
       \text{logits} = \operatorname{Norm}(h^{(L)})\, E^\top $$

    ``idx (B, T)`` int -> ``logits (B, T, vocab_size)``. ``pos`` is one of ``"rope"``, ``"sinusoidal"``,
    ``"learned"``, ``"alibi"``, ``"none"``; the sinusoidal table is
    scaled to the embeddings' initial RMS, 0.02. Post-norm models have no final norm (each block ends in one).
    ``init="default"`` draws every weight from $\mathcal N(0, 0.02^2)$; ``"xavier"`` then redraws the linear
    layers with variance $2/(d_\text{in} + d_\text{out})$ :cite:`glorot2010understanding`; ``"deepscale"`` applies
    :func:`minilib.signal_propagation.deepscale_init_` (moment-preserving weights, residual scaling)
    for sequences of ``max_len`` uniformly random tokens. ``attn_kwargs`` go to every
    :class:`~minilib.attention.MultiHeadAttention` (e.g. ``n_q_heads``, ``score``, ``gate``, ``rope_scaling``), or to
    ``attention``, a subclass of it with the same first arguments (e.g. ``MixtureOfHeadAttention`` with ``top_k``).

    Stochastic KV routing :cite:`stochastickv2025`: with ``kv_route_p = p > 0``, at every training forward each
    layer $\ell \ge 1$ independently, with probability $p$, attends (with its own queries) to the keys and values
    that layer $\ell - 1$ used instead of computing its own. Outside training the layers in ``share_kv_layers``
    (a set of layer indices $\ge 1$, empty by default) always do so: they keep no cache (their
    :class:`KVCache` in :meth:`new_caches` stays empty), so the cache holds only the other layers.
    See :cite:`vaswani2017attention`, :cite:`radford2019gpt2`, :cite:`kedia2024stable`.
    """

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, *, n_kv_heads: int | None = None,
                 d_ff: int | None = None, max_len: int = 1024, norm: str = "rms", pre_norm: bool = True,
                 ffn: str = "swiglu", pos: str = "rope", init: str = "default",
                 attn_kwargs: dict | None = None, kv_route_p: float = 0.0,
                 attention: type[MultiHeadAttention] = MultiHeadAttention):
        super().__init__()
        if not isinstance(kv_route_p, (int, float)) or isinstance(kv_route_p, bool) or not 0.0 <= kv_route_p <= 1.0:
            raise ValueError(f"kv_route_p must be a probability in [0, 1], got {kv_route_p!r}")
        if pos not in POSITIONS:
            raise ValueError(f"pos must be one of {POSITIONS}, got {pos!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if d_ff is None:
            d_ff = 4 * d_model if ffn == "gelu" else 8 * ((8 * d_model // 3 + 7) // 8)
        self.vocab_size, self.max_len, self.pos = vocab_size, max_len, pos
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model) if pos == "learned" else None
        if pos == "sinusoidal":
            # at unit amplitude the fixed table would swamp embeddings drawn with std INIT_STD
            table = sinusoidal(max_len, d_model)
            self.register_buffer("pos_table", table * (INIT_STD / table.pow(2).mean().sqrt()), persistent=False)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, n_kv_heads=n_kv_heads, d_ff=d_ff, norm=norm, pre_norm=pre_norm, ffn=ffn,
                  rope=pos == "rope", attn_kwargs=attn_kwargs, attention=attention) for _ in range(n_layers))
        self.n_heads = self.blocks[0].attn.n_heads if n_layers else n_heads  # query heads actually computed
        self.kv_route_p = float(kv_route_p)
        self.share_kv_layers = set()
        self.final_norm = make_norm(norm, d_model) if pre_norm else nn.Identity()
        self.apply(self._init_weights)
        if init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_normal_(module.weight)
        if init == "deepscale":
            deepscale_init_(self, seq_len=max_len, r0=1.0 / vocab_size)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def share_kv_layers(self) -> set[int]:
        """Layers that reuse the previous layer's keys and values outside training (see ``kv_route_p``)."""
        return self._share_kv_layers

    @share_kv_layers.setter
    def share_kv_layers(self, layers) -> None:
        layers = set(layers)
        if not all(isinstance(i, int) and 1 <= i < len(self.blocks) for i in layers):
            raise ValueError(f"share_kv_layers must hold layer indices in [1, {len(self.blocks) - 1}] "
                             f"(layer 0 has no previous layer), got {sorted(layers, key=repr)}")
        self._share_kv_layers = layers

    def kv_sharing(self) -> set[int]:
        """Layers that attend to the previous layer's keys/values in this forward: drawn if training with ``kv_route_p > 0``."""
        if self.training and self.kv_route_p > 0:
            draw = torch.rand(len(self.blocks) - 1) < self.kv_route_p
            return {i + 1 for i in torch.nonzero(draw).flatten().tolist()}
        return set(self.share_kv_layers)

    def new_caches(self) -> list[KVCache]:
        """One empty :class:`KVCache` per layer, for incremental decoding (those of ``share_kv_layers`` stay empty)."""
        return [KVCache() for _ in self.blocks]

    def forward(self, idx: torch.Tensor, *, caches: list[KVCache] | None = None) -> torch.Tensor:
        require_tensor("idx", idx, ndim=2)
        if idx.is_floating_point():
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        past = 0 if caches is None else caches[0].length
        T = idx.shape[1]
        if past + T > self.max_len:
            raise ValueError(f"sequence of {past + T} positions (cache {past} + idx {tuple(idx.shape)}) exceeds max_len={self.max_len}")
        positions = torch.arange(past, past + T, device=idx.device)
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
        if self.pos == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        bias = None
        if self.pos == "alibi":
            bias = alibi_bias(self.n_heads, T, past + T).to(device=x.device, dtype=x.dtype)
        shared = self.kv_sharing() if len(self.blocks) > 1 else set()
        owner = None  # the cache of the last layer that computed its own keys and values
        for i, block in enumerate(self.blocks):
            if caches is not None and caches[i].length != (0 if i in shared else past):
                raise ValueError(f"cache of layer {i} holds {caches[i].length} positions, layer 0's {past}: the caches "
                                 f"were filled with another share_kv_layers than {sorted(shared)}")
            if i in shared:
                x = block(x, kv=(owner.k, owner.v), bias=bias)
                continue
            owner = caches[i] if caches is not None else (KVCache() if shared else None)
            x = block(x, cache=owner, bias=bias)
        return self.final_norm(x) @ self.embed.weight.T

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Sample ``max_new_tokens`` tokens after ``idx (B, T)``; returns ``(B, T + max_new_tokens)``.

        With ``use_cache`` each step feeds only the newest token and attends to the cached keys
        and values of the earlier ones, $O(T)$ work per step instead of $O(T^2)$.
        ``temperature=0`` picks the most likely token.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        caches = self.new_caches() if use_cache else None
        out = idx
        logits = self(idx, caches=caches)[:, -1]
        for step in range(max_new_tokens):
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)
            out = torch.cat([out, nxt], dim=1)
            if step + 1 < max_new_tokens:
                logits = (self(nxt, caches=caches) if use_cache else self(out))[:, -1]
        self.train(was_training)
        return out


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Draw one token per row from $\operatorname{softmax}(\text{logits} / \tau)$ restricted to the ``top_k`` largest.

    ``logits (B, V) -> (B, 1)``; $\tau = 0$ means argmax.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
