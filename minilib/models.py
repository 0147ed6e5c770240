r"""Whole models composed from the families, and a small training loop.

``TransformerLM`` is a decoder-only language model in the nanoGPT mould, with the choices a
reader wants to compare as constructor arguments: Pre-/Post-norm, LayerNorm/RMSNorm, GELU/SwiGLU
feed-forward, and sinusoidal / learned / RoPE / ALiBi / no positions.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from minilib._checks import require_tensor
from minilib.attention import KVCache, MultiHeadAttention
from minilib.norms import LayerNorm, RMSNorm
from minilib.positional import alibi_bias, sinusoidal
from minilib.signal_propagation import deepscale_init_

POSITIONS = ("rope", "sinusoidal", "learned", "alibi", "none")
INIT_STD = 0.02  # GPT-2's initial weight scale, also the scale of the sinusoidal table added to the embeddings
INITS = ("default", "xavier", "deepscale")


def make_norm(kind: str, d: int) -> nn.Module:
    """``"rms"`` -> :class:`RMSNorm`, ``"layer"`` -> :class:`LayerNorm`."""
    if kind == "rms":
        return RMSNorm(d)
    if kind == "layer":
        return LayerNorm(d)
    raise ValueError(f"norm must be 'rms' or 'layer', got {kind!r}")


class FeedForward(nn.Module):
    r"""Position-wise feed-forward network.

    $$ \text{GELU: } W_2\, \operatorname{gelu}(W_1 x) \qquad
       \text{SwiGLU: } W_2\, \big(\operatorname{silu}(W_1 x) \odot W_3 x\big) $$

    ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`vaswani2017attention`, :cite:`shazeer2020glu`.
    """

    def __init__(self, d_model: int, d_ff: int, *, kind: str = "swiglu"):
        super().__init__()
        if kind not in ("gelu", "swiglu"):
            raise ValueError(f"ffn must be 'gelu' or 'swiglu', got {kind!r}")
        self.kind = kind
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False) if kind == "swiglu" else None
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.w1(x)) if self.w3 is None else F.silu(self.w1(x)) * self.w3(x)
        return self.w2(hidden)


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


def lm_loss(model: nn.Module, batch) -> torch.Tensor:
    r"""Mean next-token cross-entropy $-\frac1{BT}\sum \log p(y_{bt} \mid x_{b,\le t})$ in nats; targets ``-100`` are ignored."""
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


def train(model: nn.Module, batches: Iterable, *, steps: int, lr: float, weight_decay: float = 0.1,
          warmup_steps: int = 0, grad_clip: float | None = 1.0,
          loss_fn: Callable[[nn.Module, object], torch.Tensor] = lm_loss, progress: bool = True) -> list[float]:
    r"""Train with AdamW, linear warm-up then cosine decay to 10% of ``lr``; returns the loss of every step.

    ``batches`` yields whatever ``loss_fn(model, batch)`` takes (default: ``(x, y)`` for :func:`lm_loss`).
    See :cite:`loshchilov2019adamw`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_frac = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * progress_frac)).item())

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses, batch_iter = [], iter(batches)
    bar = tqdm(range(steps), disable=not progress, desc="train")
    for _ in bar:
        loss = loss_fn(model, next(batch_iter))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, n_batches: int, loss_fn=lm_loss) -> float:
    """Mean of ``loss_fn`` over ``n_batches`` batches, in eval mode."""
    was_training = model.training
    model.eval()
    it = iter(batches)
    total = sum(loss_fn(model, next(it)).item() for _ in range(n_batches)) / n_batches
    model.train(was_training)
    return total


def set_rope_scaling(model: nn.Module, scaling: tuple | None) -> None:
    """Set ``rope_scaling`` (see :func:`minilib.positional.rope_angles`) on every attention module of ``model``, in place."""
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not any(m.rope for m in modules):
        raise ValueError("set_rope_scaling needs a model whose attention uses RoPE (pos='rope')")
    for module in modules:
        module.rope_scaling = scaling


@torch.no_grad()
def attention_maps(model: TransformerLM, idx: torch.Tensor) -> torch.Tensor:
    r"""Causal attention weights of every layer and head of ``model`` on ``idx (B, T)``.

    Returns ``(n_layers, B, H, T, T)``; row ``t`` of head ``h`` in layer ``l`` is, for the default
    softmax scoring, $\operatorname{softmax}_s(q_t \cdot k_s / \sqrt{D} + b_{ts})$ over $s \le t$ (each
    module's own ``score`` otherwise), recomputed from the input each attention layer receives (with the
    keys of the layer below in the layers of ``share_kv_layers``).
    """
    inputs = []
    hooks = [block.attn.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for block in model.blocks]
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    T = idx.shape[1]
    positions = torch.arange(T, device=idx.device)
    bias = alibi_bias(model.n_heads, T).to(inputs[0].dtype) if model.pos == "alibi" else None
    maps, shared, owner_keys = [], getattr(model, "share_kv_layers", set()), None
    for i, (block, x) in enumerate(zip(model.blocks, inputs)):
        q, k, _ = block.attn.project_qkv(x, positions)
        k = owner_keys if i in shared else k  # a sharing layer reads the keys of the last layer that made its own
        owner_keys = k
        maps.append(block.attn.weights(q, k, causal=True, bias=bias))
    return torch.stack(maps)
