r"""Linear-attention token mixers: kernelised linear attention, gated linear attention, retention.

One layer, configured by what the papers change: the feature map $\phi$, the normaliser, the decay, a
per-head output norm and an output gate. With $q_t = \phi(W_Q x_t)$, $k_t = \phi(W_K x_t)/\sqrt{D}$,
$v_t = W_V x_t$ per head, the heads' outputs $o_t$ of :func:`~minilib.linear_attention.linear_attention_chunked`
are combined as

$$ y_t = W_O\big(\mathrm{swish}(W_G x_t) \odot \mathrm{Norm}(o_t)\big) $$

(gate and norm optional). Retention :cite:`sun2023retentive` is the preset ``phi = identity``, no
normaliser, fixed multi-scale decays $\gamma_h = 1 - 2^{-5-h}$, GroupNorm per head and the swish gate.
Decoding keeps only the $(D, D_v)$ state per head, whatever the length.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_positive_int, require_tensor
from minilib.attention import merge_heads, split_heads
from minilib.linear_attention.features import feature_map
from minilib.linear_attention.forms import linear_attention_chunked
from minilib.mixing import TokenMixer, register_mixer

__all__ = ["LinearAttentionCache", "LinearAttention", "Retention", "TransNormerBlock", "multiscale_decays",
           "transnormer_decays"]

DECAYS = (None, "multiscale", "gated")
HEAD_NORMS = (None, "group", "rms")


def multiscale_decays(n_heads: int) -> torch.Tensor:
    r"""RetNet's per-head decays $\gamma_h = 1 - 2^{-5-h}$, $h = 0..H-1$: head $h$ remembers about $2^{5+h}$ steps.

    ``-> (n_heads,)`` float64. :cite:`sun2023retentive`
    """
    return 1 - 2.0 ** (-5 - torch.arange(check_positive_int("n_heads", n_heads), dtype=torch.float64))


def transnormer_decays(n_heads: int, layer: int, n_layers: int) -> torch.Tensor:
    r"""TransNormerLLM's per-head, per-layer decays $\lambda_h = \exp\!\big(-\tfrac{8h}{H}(1 - \tfrac{l}{N})\big)$.

    Head $h = 0..H-1$ of layer $l = 0..N-1$; head 0 never decays, and later layers decay less.
    ``-> (n_heads,)`` float64. :cite:`qin2023transnormerllm`
    """
    H, N = check_positive_int("n_heads", n_heads), check_positive_int("n_layers", n_layers)
    if not 0 <= layer < N:
        raise ValueError(f"layer must be in 0..n_layers-1 = 0..{N - 1}, got {layer!r}")
    return torch.exp(-8 * torch.arange(H, dtype=torch.float64) / H * (1 - layer / N))


class LinearAttentionCache:
    """Decoding state of one linear-attention layer: the ``(B, H, D, Dv[+1])`` state and the positions seen."""

    def __init__(self):
        self.state: torch.Tensor | None = None
        self.length = 0


class LinearAttention(TokenMixer):
    r"""Causal multi-head linear attention ``(B, T, d_model) -> (B, T, d_model)`` (see the module docstring).

    - ``feature``: a :func:`~minilib.linear_attention.feature_map` name (``"elu+1"``, ``"relu"``, ``"identity"``);
    - ``normalize``: divide by $\sum_s \phi(q_t)\cdot\phi(k_s)$ :cite:`katharopoulos2020transformers` (only with
      ``"elu+1"``, whose features are positive, so the sum is);
    - ``decay``: ``None``, ``"multiscale"`` (fixed $\gamma_h$ of :func:`multiscale_decays`), an ``(H,)`` tensor of
      fixed decays in $(0, 1]$, or ``"gated"``
      (data-dependent $g_t = \sigma(w_h\cdot x_t + b_h)^{1/16}$ per head, as in gated linear attention :cite:`yang2024gla`);
    - ``head_norm``: ``None``, ``"group"`` (LayerNorm of each head's output, RetNet's GroupNorm) or ``"rms"``;
    - ``gate``: the swish output gate; ``chunk_size`` of the chunked form.

    The layer adds no positions of its own (decay is its sense of order); cached decoding equals the full forward.
    """

    def __init__(self, d_model: int, n_heads: int, *, feature: str = "elu+1", normalize: bool = True,
                 decay: str | torch.Tensor | None = None, head_norm: str | None = None, gate: bool = False,
                 chunk_size: int = 64):
        super().__init__()
        check_positive_int("d_model", d_model)
        if d_model % check_positive_int("n_heads", n_heads):
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        gammas = multiscale_decays(n_heads) if decay == "multiscale" else None
        if isinstance(decay, torch.Tensor):
            require_tensor("decay", decay, ndim=1, floating=True)
            if decay.shape != (n_heads,) or not bool(((decay > 0) & (decay <= 1)).all()):
                raise ValueError(f"a decay tensor must hold n_heads={n_heads} values in (0, 1], got {decay.tolist()}")
            gammas, decay = decay.detach().clone(), "fixed"
        elif decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS} or an (n_heads,) tensor, got {decay!r}")
        if normalize and feature != "elu+1":
            raise ValueError(f"normalize=True needs the strictly positive feature 'elu+1' (a sum of {feature!r} "
                             "features can be 0 or negative); pass normalize=False")
        if head_norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {HEAD_NORMS}, got {head_norm!r}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.phi = feature_map(feature)
        self.normalize, self.decay, self.head_norm = bool(normalize), decay, head_norm
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.wg = nn.Linear(d_model, d_model, bias=False) if gate else None
        self.w_decay = nn.Linear(d_model, n_heads) if decay == "gated" else None
        if gammas is not None:
            self.register_buffer("gammas", gammas.float())
        self.norm_weight = nn.Parameter(torch.ones(d_model)) if head_norm else None

    def new_cache(self) -> LinearAttentionCache:
        return LinearAttentionCache()

    def decays(self, x: torch.Tensor):
        """The ``decay=`` argument for the heads: None, the ``(H,)`` constants or ``(B, H, T)`` gates from ``x``."""
        if self.decay in ("multiscale", "fixed"):
            return self.gammas.to(x.dtype)
        if self.decay == "gated":
            return (nn.functional.logsigmoid(self.w_decay(x)) / 16).exp().transpose(1, 2)
        return None

    def forward(self, x: torch.Tensor, *, cache: LinearAttentionCache | None = None) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must have d_model={self.d_model} features, got shape {tuple(x.shape)}")
        if cache is not None and not isinstance(cache, LinearAttentionCache):
            raise TypeError(f"cache must be a LinearAttentionCache (from new_cache()) or None, got {type(cache).__name__}")
        q = self.phi(split_heads(self.wq(x), self.n_heads))
        k = self.phi(split_heads(self.wk(x), self.n_heads)) * self.head_dim ** -0.5
        v = split_heads(self.wv(x), self.n_heads)
        state = None if cache is None else cache.state
        out, state = linear_attention_chunked(q, k, v, decay=self.decays(x), normalize=self.normalize,
                                              chunk_size=self.chunk_size, state=state, return_state=True)
        if cache is not None:
            cache.state, cache.length = state, cache.length + x.shape[1]
        if self.head_norm == "group":
            out = nn.functional.layer_norm(out, (self.head_dim,))
        elif self.head_norm == "rms":
            out = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + 1e-6)
        y = merge_heads(out)
        if self.norm_weight is not None:
            y = y * self.norm_weight
        if self.wg is not None:
            y = nn.functional.silu(self.wg(x)) * y
        return self.wo(y)


class Retention(LinearAttention):
    r"""RetNet's multi-scale retention :cite:`sun2023retentive`: :class:`LinearAttention` with $\phi$ = identity, no
    normaliser, decays $\gamma_h = 1 - 2^{-5-h}$, GroupNorm per head and the swish output gate.

    $$ \mathrm{Retention}(X) = (Q K^\top \odot \mathcal{D}) V, \qquad \mathcal{D}_{ts} = \gamma^{t-s} [s \le t] $$
    """

    def __init__(self, d_model: int, n_heads: int, **overrides):
        kwargs = dict(feature="identity", normalize=False, decay="multiscale", head_norm="group", gate=True)
        super().__init__(d_model, n_heads, **{**kwargs, **overrides})


class TransNormerBlock(LinearAttention):
    r"""TransNormerLLM's attention :cite:`qin2023transnormerllm`: linear attention without the softmax normaliser,
    fixed per-head decays :func:`transnormer_decays` of its layer, an RMS norm of each head's output (their
    "simple RMS norm") in place of the denominator, and a swish output gate:

    $$ y = W_O\big(\mathrm{swish}(W_G x) \odot \mathrm{RMSNorm}((Q K^\top \odot \Lambda) V)\big),
       \qquad \Lambda_{ts} = \lambda^{t-s} [s \le t] . $$

    ``layer`` and ``n_layers`` set the decays (later layers decay less).
    """

    def __init__(self, d_model: int, n_heads: int, *, layer: int = 0, n_layers: int = 1, **overrides):
        kwargs = dict(feature="identity", normalize=False, decay=transnormer_decays(n_heads, layer, n_layers),
                      head_norm="rms", gate=True)
        super().__init__(d_model, n_heads, **{**kwargs, **overrides})


def _factory(cls):
    def factory(config, layer: int) -> LinearAttention:
        return cls(config.d_model, config.n_heads, **config.mixer_kwargs)
    return factory


register_mixer("linear_attention", _factory(LinearAttention))
register_mixer("retention", _factory(Retention))
register_mixer("transnormer", lambda config, layer: TransNormerBlock(config.d_model, config.n_heads, layer=layer,
                                                                     n_layers=config.n_layers, **config.mixer_kwargs))
