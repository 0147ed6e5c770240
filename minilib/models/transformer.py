r"""The decoder-only Transformer language model and its sampler.

``TransformerLM`` is a decoder-only language model in the nanoGPT mould. The choices a reader wants to
compare are fields of its :class:`TransformerConfig` (a small dataclass, like nanoGPT's ``GPTConfig``):
Pre-/Post-norm, LayerNorm/RMSNorm, GELU/SwiGLU feed-forward, sinusoidal / learned / RoPE / ALiBi / no
positions, and the token mixer of every block (attention by default; any :class:`~minilib.mixing.TokenMixer`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from minilib._checks import check_divisible, check_nonnegative_int, check_number, check_positive_int, check_token_ids, require_tensor
from minilib.attention import MultiHeadAttention
from minilib.feedforward import FFNFactory, ffn_factory
from minilib.mixing import MixerFactory, TokenMixer, mixer_factory
from minilib.norms import NORMS, make_norm
from minilib.positional import alibi_bias, sinusoidal
from minilib.signal_propagation import deepscale_init_

__all__ = ["TransformerConfig", "Block", "TransformerLM", "sample_next"]

POSITIONS = ("rope", "sinusoidal", "learned", "alibi", "none")
INIT_STD = 0.02  # GPT-2's initial weight scale, also the scale of the sinusoidal table added to the embeddings
INITS = ("default", "xavier", "deepscale")


@dataclass
class TransformerConfig:
    r"""Everything that fixes the architecture of a :class:`TransformerLM`, checked when it is made.

    Sizes: ``vocab_size`` $V$, ``d_model`` $d$, ``n_layers`` $L$, ``n_heads`` $H$ (the head size is $d / H$),
    ``n_kv_heads`` (default: one per query head; fewer is GQA/MQA), ``d_ff`` (default
    :func:`~minilib.feedforward.default_d_ff`), ``max_len`` (longest sequence). Choices: ``norm``
    (``"rms"``, ``"layer"``), ``pre_norm``, ``ffn`` (the feed-forward network of every block: a name registered with
    :func:`minilib.feedforward.register_ffn`, ``"swiglu"``, ``"gelu"``, ..., or a factory, built as
    ``factory(config, layer)`` and reading ``ffn_kwargs``), ``pos`` (``"rope"``,
    ``"sinusoidal"``, ``"learned"``, ``"alibi"``, ``"none"``), ``init`` (``"default"``, ``"xavier"``,
    ``"deepscale"``). ``mixer`` names the token mixer of every block, a name registered with
    :func:`minilib.mixing.register_mixer` (``"attention"``, ``"moh"``, ...) or a factory; each block builds
    ``factory(config, layer)``, which reads what it needs, e.g. ``mixer_kwargs`` (for attention: ``n_q_heads``,
    ``score``, ``gate``, ``rope_scaling``, ...). ``kv_route_p``: see :class:`TransformerLM`.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_len: int = 1024
    norm: str = "rms"
    pre_norm: bool = True
    ffn: str | FFNFactory = "swiglu"
    ffn_kwargs: dict = field(default_factory=dict)
    pos: str = "rope"
    init: str = "default"
    mixer: str | MixerFactory = "attention"
    mixer_kwargs: dict = field(default_factory=dict)
    kv_route_p: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_len"):
            check_positive_int(name, getattr(self, name))
        check_divisible("d_model", self.d_model, "n_heads", self.n_heads)
        for name in ("n_kv_heads", "d_ff"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        for name, allowed in (("norm", NORMS), ("pos", POSITIONS), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.pre_norm, bool):
            raise TypeError(f"pre_norm must be a bool, got {self.pre_norm!r}")
        mixer_factory(self.mixer)  # an unknown name fails here, naming the registered ones
        ffn_factory(self.ffn)
        for name in ("mixer_kwargs", "ffn_kwargs"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a dict of keyword arguments, got {type(getattr(self, name)).__name__}")
            setattr(self, name, dict(getattr(self, name)))
        p = self.kv_route_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"kv_route_p must be a probability in [0, 1], got {p!r}")
        self.kv_route_p = float(p)


class Block(nn.Module):
    r"""One Transformer layer: a token mixer then a feed-forward network, each in a residual connection.

    $$ \text{Pre-norm: } x \leftarrow x + f(\operatorname{Norm}(x)) \qquad
       \text{Post-norm: } x \leftarrow \operatorname{Norm}(x + f(x)) $$

    for $f$ = the mixer (``mixer``, attention by default), then $f$ = feed-forward (``ffn``). Layer ``layer`` of
    a model with ``config`` (a :class:`TransformerConfig`). ``x (B, T, d_model) -> (B, T, d_model)``; with a
    ``cache`` from the mixer's ``new_cache()``, ``x`` holds only the positions after those in it.
    See :cite:`xiong2020layernorm`.
    """

    def __init__(self, config: TransformerConfig, layer: int = 0):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        check_nonnegative_int("layer", layer)
        self.pre_norm = config.pre_norm
        self.mixer = mixer_factory(config.mixer)(config, layer)
        if not isinstance(self.mixer, TokenMixer):
            raise TypeError(f"the mixer factory {config.mixer!r} must return a minilib.mixing.TokenMixer, "
                            f"got {type(self.mixer).__name__}")
        if not self.mixer.causal:
            raise ValueError(f"a language model needs a causal mixer; {type(self.mixer).__name__} has causal=False")
        self.ffn = ffn_factory(config.ffn)(config, layer)
        if not isinstance(self.ffn, nn.Module):
            raise TypeError(f"the ffn factory {config.ffn!r} must return an nn.Module, got {type(self.ffn).__name__}")
        self.norm1, self.norm2 = make_norm(config.norm, config.d_model), make_norm(config.norm, config.d_model)
        # (lam, beta) of DeepScaleLM's scaled residual lam * x + beta * f; (1.0, 1.0) is the plain residual.
        self.residual_scales = (1.0, 1.0)
        self.register_load_state_dict_pre_hook(_rename_attn_keys)

    def residual(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        r"""$x + f$, or DeepScaleLM's $\lambda x + \beta f$ when ``residual_scales`` is not ``(1.0, 1.0)``. See :cite:`kedia2024stable`."""
        lam, beta = self.residual_scales
        return x + update if (lam, beta) == (1.0, 1.0) else lam * x + beta * update

    def forward(self, x: torch.Tensor, *, cache=None, bias: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attention mixers only: ``bias`` is added to the scores (ALiBi); ``kv=(k, v)`` replaces this layer's own
        keys and values by another layer's (see ``kv_route_p``)."""
        attention_only = {name: value for name, value in (("bias", bias), ("kv", kv)) if value is not None}

        def mix(h):
            return self.mixer(h, cache=cache, **attention_only)

        if self.pre_norm:
            x = self.residual(x, mix(self.norm1(x)))
            return self.residual(x, self.ffn(self.norm2(x)))
        x = self.norm1(self.residual(x, mix(x)))
        return self.norm2(self.residual(x, self.ffn(x)))


def _rename_attn_keys(module, state_dict, prefix, *args) -> None:
    """Load state dicts saved before ``Block.attn`` became ``Block.mixer`` (keys ``blocks.N.attn.*``)."""
    old = prefix + "attn."
    for key in [key for key in state_dict if key.startswith(old)]:
        state_dict[prefix + "mixer." + key[len(old):]] = state_dict.pop(key)


class TransformerLM(nn.Module):
    r"""Decoder-only Transformer language model with tied input/output embeddings.

    $$ h^{(0)} = E[\text{idx}] (+ P),\quad h^{(\ell)} = \operatorname{Block}_\ell(h^{(\ell-1)}),\quad
       \text{logits} = \operatorname{Norm}(h^{(L)})\, E^\top $$

    ``idx (B, T)`` int -> ``logits (B, T, vocab_size)``. ``pos`` is one of ``"rope"``, ``"sinusoidal"``,
    ``"learned"``, ``"alibi"``, ``"none"``; the sinusoidal table is
    scaled to the embeddings' initial RMS, 0.02. Post-norm models have no final norm (each block ends in one).
    ``init="default"`` draws every weight from $\mathcal N(0, 0.02^2)$; ``"xavier"`` then redraws the linear
    layers with variance $2/(d_\text{in} + d_\text{out})$ :cite:`glorot2010understanding`; both leave a mixer whose
    ``owns_init`` is set (Mamba) as it was built; ``"deepscale"`` applies
    :func:`minilib.signal_propagation.deepscale_init_` (moment-preserving weights, residual scaling)
    for sequences of ``max_len`` uniformly random tokens.

    Built as ``TransformerLM(config)`` from a :class:`TransformerConfig`, or from its fields,
    ``TransformerLM(vocab_size, d_model, n_layers, n_heads, **options)``; ``model.config`` holds it.
    Every block's token mixer comes from ``config.mixer`` (see :mod:`minilib.mixing`); ALiBi and the KV
    sharing below need attention mixers, and fail with a clear error for others; ``pos="rope"`` is applied
    inside attention, so another mixer reads ``config.pos`` itself (or ignores it).

    Stochastic KV routing :cite:`stochastickv2025`: with ``kv_route_p = p > 0``, at every training forward each
    layer $\ell \ge 1$ independently, with probability $p$, attends (with its own queries) to the keys and values
    that layer $\ell - 1$ used instead of computing its own. Outside training the layers in ``share_kv_layers``
    (a set of layer indices $\ge 1$, empty by default) always do so: they keep no cache (their
    :class:`~minilib.attention.KVCache` in :meth:`new_caches` stays empty), so the cache holds only the other layers.
    See :cite:`vaswani2017attention`, :cite:`radford2019gpt2`, :cite:`kedia2024stable`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], TransformerConfig):
            if kwargs:
                raise TypeError(f"pass either a TransformerConfig or its fields, not both (got {sorted(kwargs)}); "
                                "dataclasses.replace(config, ...) changes fields")
            config = args[0]
        elif len(args) > 4:
            raise TypeError(f"TransformerLM takes at most 4 positional sizes (vocab_size, d_model, n_layers, n_heads), "
                            f"got {len(args)}; pass the other fields by keyword")
        else:
            config = TransformerConfig(*args, **kwargs)
        self.config = config
        self.vocab_size, self.max_len, self.pos = config.vocab_size, config.max_len, config.pos
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = nn.Embedding(config.max_len, config.d_model) if config.pos == "learned" else None
        if config.pos == "sinusoidal":
            # at unit amplitude the fixed table would swamp embeddings drawn with std INIT_STD
            table = sinusoidal(config.max_len, config.d_model)
            self.register_buffer("pos_table", table * (INIT_STD / table.pow(2).mean().sqrt()), persistent=False)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.n_heads = self.blocks[0].mixer.n_heads if self.is_attention() else config.n_heads  # query heads computed
        if config.pos == "alibi":
            self._require_attention("pos='alibi' (a bias on the attention scores)")
        if config.kv_route_p > 0:
            self._require_attention("kv_route_p > 0 (layers sharing keys and values)")
        self.kv_route_p = config.kv_route_p
        self.share_kv_layers = set()
        self.final_norm = make_norm(config.norm, config.d_model) if config.pre_norm else nn.Identity()
        owned = self._modules_owning_init()
        self.apply(lambda module: None if id(module) in owned else self._init_weights(module))
        if config.init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Linear) and id(module) not in owned:
                    nn.init.xavier_normal_(module.weight)
        if config.init == "deepscale":
            deepscale_init_(self, seq_len=config.max_len, r0=1.0 / config.vocab_size)

    def _modules_owning_init(self) -> set[int]:
        """``id`` of every module inside a mixer that keeps its own initialisation (``TokenMixer.owns_init``)."""
        return {id(inner) for mixer in self.modules() if isinstance(mixer, TokenMixer) and mixer.owns_init
                for inner in mixer.modules()}

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def is_attention(self) -> bool:
        """Whether every block's mixer is a :class:`~minilib.attention.MultiHeadAttention` (ALiBi, KV sharing, maps)."""
        return all(isinstance(block.mixer, MultiHeadAttention) for block in self.blocks)

    def _require_attention(self, what: str) -> None:
        if not self.is_attention():
            mixers = sorted({type(block.mixer).__name__ for block in self.blocks})
            raise ValueError(f"{what} needs attention mixers (MultiHeadAttention); this model's mixers are {mixers}")

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
        if layers:
            self._require_attention("share_kv_layers")
        self._share_kv_layers = layers

    def kv_sharing(self) -> set[int]:
        """Layers that attend to the previous layer's keys/values in this forward: drawn if training with ``kv_route_p > 0``."""
        if self.training and self.kv_route_p > 0:
            draw = torch.rand(len(self.blocks) - 1) < self.kv_route_p
            return {i + 1 for i in torch.nonzero(draw).flatten().tolist()}
        return set(self.share_kv_layers)

    def aux_loss(self) -> torch.Tensor:
        """Sum of the auxiliary losses the blocks' FFNs left in their ``aux_loss`` attribute at the last forward
        (a mixture of experts' load-balancing and z-losses, :class:`minilib.moe.MoE`); 0 when none has one."""
        losses = [block.ffn.aux_loss for block in self.blocks if getattr(block.ffn, "aux_loss", None) is not None]
        return sum(losses) if losses else torch.zeros((), device=self.embed.weight.device)

    def new_caches(self) -> list | None:
        """One empty decoding cache per layer, from its mixer's ``new_cache()`` (a :class:`~minilib.attention.KVCache` for attention;
        those of ``share_kv_layers`` stay empty); ``None`` when some mixer has no incremental form."""
        caches = [block.mixer.new_cache() for block in self.blocks]
        return None if any(cache is None for cache in caches) else caches

    def forward(self, idx: torch.Tensor, *, caches: list | None = None) -> torch.Tensor:
        """``idx (B, T)`` int -> ``logits (B, T, vocab_size)``. With ``caches`` (from :meth:`new_caches`, updated in
        place) ``idx`` holds only the tokens after those already in them."""
        check_token_ids("idx", idx, ndim=2, vocab_size=self.vocab_size)
        if caches is not None and (not isinstance(caches, (list, tuple)) or len(caches) != len(self.blocks)):
            raise ValueError(f"caches must be a list of {len(self.blocks)} per-layer caches from new_caches(), got {caches!r}")
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
            owner = caches[i] if caches is not None else (block.mixer.new_cache() if shared else None)
            x = block(x, cache=owner, bias=bias)
        return self.logits(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        r"""The output head on the last block's stream ``h (B, T, d_model)``: $\operatorname{Norm}(h)\, E^\top$, ``(B, T, V)``."""
        return self.final_norm(h) @ self.embed.weight.T

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Sample ``max_new_tokens`` tokens after ``idx (B, T)``; returns ``(B, T + max_new_tokens)``.

        With ``use_cache`` each step feeds only the newest token and attends to the cached keys
        and values of the earlier ones (or updates its mixers' states), $O(T)$ work per step instead of $O(T^2)$;
        a model whose mixers have no incremental form (:meth:`new_caches` is ``None``) recomputes the
        whole prefix every step instead. ``temperature=0`` picks the most likely token.
        """
        check_nonnegative_int("max_new_tokens", max_new_tokens)
        was_training = self.training
        self.eval()
        caches = self.new_caches() if use_cache else None
        out = idx
        logits = self(idx, caches=caches)[:, -1]
        for step in range(max_new_tokens):
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)
            out = torch.cat([out, nxt], dim=1)
            if step + 1 < max_new_tokens:
                logits = (self(out) if caches is None else self(nxt, caches=caches))[:, -1]
        self.train(was_training)
        return out


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Draw one token per row from $\operatorname{softmax}(\text{logits} / \tau)$ restricted to the ``top_k`` largest.

    ``logits (B, V) -> (B, 1)`` float; $\tau = 0$ means argmax; ``top_k`` a positive int or None (all tokens).
    """
    require_tensor("logits", logits, ndim=2, floating=True)
    if check_number("temperature", temperature) < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if not torch.isfinite(logits).any(dim=-1).all():
        raise ValueError(f"logits must have a finite entry in every row (a row of -inf/NaN has no token to draw), "
                         f"shape {tuple(logits.shape)}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
