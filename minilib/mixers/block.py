r"""The MetaFormer skeleton: one block structure, any token mixer in it, and the matrix by which a mixer mixes.

$$ x \leftarrow x + \operatorname{Mixer}(\operatorname{Norm}_1(x)), \qquad x \leftarrow x + \operatorname{MLP}(\operatorname{Norm}_2(x)) $$

MetaFormer :cite:`yu2022metaformer` argues that this structure, not attention, carries much of a Transformer's
performance; :class:`MetaFormer` stacks the block into a sequence classifier so the claim can be tested by
swapping mixers under one parameter budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from minilib._checks import check_positive_int, require_tensor
from minilib.attention import MultiHeadAttention
from minilib.feedforward import FeedForward
from minilib.mixers.fourier import dct_downsample
from minilib.mixing import MixerFactory, TokenMixer, mixer_factory
from minilib.norms import make_norm

__all__ = ["MixerConfig", "AttentionMixer", "BidirectionalMixer", "MetaFormerBlock", "MetaFormer", "mixing_matrix", "READOUTS"]

READOUTS = ("mean", "last")


@dataclass
class MixerConfig:
    """What a registered mixer factory reads (the fields of a :class:`~minilib.models.TransformerConfig` it uses),
    for a block built outside a language model."""

    d_model: int
    n_heads: int = 1
    n_kv_heads: int | None = None
    pos: str = "none"
    max_len: int = 1024
    mixer_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        check_positive_int("d_model", self.d_model)
        check_positive_int("n_heads", self.n_heads)
        check_positive_int("max_len", self.max_len)
        if not isinstance(self.mixer_kwargs, dict):
            raise TypeError(f"mixer_kwargs must be a dict of keyword arguments, got {type(self.mixer_kwargs).__name__}")


class AttentionMixer(MultiHeadAttention):
    r"""Multi-head softmax attention as a token mixer that remembers whether it is ``causal`` (``False``: every token
    sees every token, as in a ViT encoder); the other keywords go to :class:`~minilib.attention.MultiHeadAttention`."""

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = False, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        self.causal = causal

    def new_cache(self):
        return super().new_cache() if self.causal else None

    def forward(self, x: torch.Tensor, *, cache=None, **kwargs) -> torch.Tensor:
        return super().forward(x, causal=self.causal, cache=cache, **kwargs)


class BidirectionalMixer(TokenMixer):
    r"""Two causal mixers read the sequence in opposite directions and their outputs add:

    $$ y = f(x) + \operatorname{flip}\big(g(\operatorname{flip}\, x)\big), $$

    so $y_t$ sees $x_{\le t}$ through $f$ and $x_{\ge t}$ through $g$: the usual way to use a causal SSM (S4D,
    Mamba) in an encoder, which Hydra :cite:`hwang2024hydra` calls the "add" heuristic (two diagonals, where its
    quasiseparable mixer has one). ``forward`` and ``backward`` are :class:`~minilib.mixing.TokenMixer` of the same
    ``(B, T, d_model)``; ``backward=None`` reuses ``forward`` ($g = f$, one set of weights, the parameter count of
    one causal mixer). The result is not causal and has no incremental form.
    """

    causal = False

    def __init__(self, forward: TokenMixer, backward: TokenMixer | None = None):
        super().__init__()
        backward = forward if backward is None else backward
        for name, mixer in (("forward", forward), ("backward", backward)):
            if not isinstance(mixer, TokenMixer):
                raise TypeError(f"{name} must be a minilib.mixing.TokenMixer, got {type(mixer).__name__}")
        self.fwd, self.bwd = forward, backward

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        if cache is not None:
            raise ValueError("cache must be None: a bidirectional mixer reads the whole sequence (new_cache() is None)")
        return self.fwd(x) + self.bwd(x.flip(1)).flip(1)


class MetaFormerBlock(nn.Module):
    r"""Norm, token mixer, residual; norm, channel MLP, residual.

    $$ x \leftarrow x + \operatorname{Mixer}(\operatorname{Norm}_1(x)), \qquad
       x \leftarrow x + W_2\,\operatorname{GELU}(W_1 \operatorname{Norm}_2(x)) $$

    ``mixer``: a :class:`~minilib.mixing.TokenMixer`, or a registered name / factory (:mod:`minilib.mixing`) built
    as ``factory(MixerConfig(d_model, n_heads, max_len=max_len, mixer_kwargs=mixer_kwargs), layer)``, so any family's
    mixer (pooling, Fourier, an SSM...) plugs in. ``x (B, T, d_model) -> (B, T, d_model)``; ``cache`` goes to the
    mixer. See :cite:`yu2022metaformer`.
    """

    def __init__(self, mixer: TokenMixer | str | MixerFactory, d_model: int, *, d_ff: int | None = None,
                 norm: str = "layer", ffn: str = "gelu", n_heads: int = 1, max_len: int = 1024,
                 mixer_kwargs: dict | None = None, layer: int = 0):
        super().__init__()
        check_positive_int("d_model", d_model)
        if not isinstance(mixer, TokenMixer):
            config = MixerConfig(d_model, n_heads, max_len=max_len, mixer_kwargs=dict(mixer_kwargs or {}))
            mixer = mixer_factory(mixer)(config, layer)
        elif mixer_kwargs:
            raise ValueError("mixer_kwargs only apply to a mixer given by name or factory, not to a built TokenMixer")
        if not isinstance(mixer, TokenMixer):
            raise TypeError(f"mixer must be a minilib.mixing.TokenMixer (or build one), got {type(mixer).__name__}")
        self.mixer = mixer
        self.norm1, self.norm2 = make_norm(norm, d_model), make_norm(norm, d_model)
        self.mlp = FeedForward(d_model, d_ff, kind=ffn)

    def forward(self, x: torch.Tensor, *, cache=None) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        x = x + self.mixer(self.norm1(x), cache=cache)
        return x + self.mlp(self.norm2(x))


class MetaFormer(nn.Module):
    r"""A sequence classifier made of ``n_layers`` :class:`MetaFormerBlock` around the mixers ``make_mixer(layer)``.

    $$ z^{(0)} = \operatorname{embed}(\text{inputs}), \quad z^{(\ell)} = \operatorname{Block}_\ell(z^{(\ell-1)}), \quad
       \text{logits} = \operatorname{Norm}\big(\operatorname{read}(z^{(L)})\big)\, W_C + b_C $$

    ``embed`` maps the inputs to ``(B, T, d_model)`` (a :class:`~minilib.vision.PatchEmbedding`, or token and
    position embeddings); ``readout`` is ``"mean"`` over tokens or the ``"last"`` token. ``shorten={layer: k}``
    shortens the sequence to its ``k`` lowest DCT frequencies (:func:`~minilib.mixers.dct_downsample`) before
    block ``layer``, as the Fourier Transformer does :cite:`he2023fourier`. Returns ``(B, n_classes)``.
    See :cite:`yu2022metaformer`.
    """

    def __init__(self, embed: nn.Module, make_mixer: Callable[[int], TokenMixer | str], *, d_model: int,
                 n_layers: int, n_classes: int, d_ff: int | None = None, readout: str = "mean", norm: str = "layer",
                 shorten: dict[int, int] | None = None):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_layers", n_layers), ("n_classes", n_classes)):
            check_positive_int(name, value)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.shorten = dict(shorten or {})
        if not all(isinstance(i, int) and 0 <= i < n_layers for i in self.shorten):
            raise ValueError(f"shorten must map block indices in [0, {n_layers}) to lengths, got {shorten!r}")
        self.embed, self.readout = embed, readout
        self.blocks = nn.ModuleList(MetaFormerBlock(make_mixer(i), d_model, d_ff=d_ff, norm=norm, layer=i)
                                    for i in range(n_layers))
        self.final_norm = make_norm(norm, d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        z = self.embed(inputs)
        for i, block in enumerate(self.blocks):
            if i in self.shorten:
                z = dct_downsample(z, min(self.shorten[i], z.shape[1]))
            z = block(z)
        z = z.mean(dim=1) if self.readout == "mean" else z[:, -1]
        return self.head(self.final_norm(z))


def mixing_matrix(mixer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, reduce: str = "diagonal") -> torch.Tensor:
    r"""The ``(L, L)`` matrix by which ``mixer`` mixes the tokens of one input ``x (L, C)``, from its Jacobian.

    $$ M_{ts} = \frac1C \sum_c \frac{\partial y_{t,c}}{\partial x_{s,c}} \quad (\texttt{"diagonal"}), \qquad
       M_{ts} = \frac{1}{\sqrt C}\Big\lVert \frac{\partial y_t}{\partial x_s} \Big\rVert_F \quad (\texttt{"norm"}) $$

    For a mixer that is linear in the tokens and acts on each channel alike, $y = M x$, ``"diagonal"`` returns $M$
    itself (pooling: the averaging matrix minus $I$; a convolution: its Toeplitz matrix); for a conditionally linear
    one (attention, AFF, NiNformer) the matrix it applies at this input, plus the derivative of its input-dependent
    weights. ``mixer`` maps ``(1, L, C)`` to ``(1, L, C)``.
    """
    require_tensor("x", x, ndim=2, floating=True)
    if reduce not in ("diagonal", "norm"):
        raise ValueError(f"reduce must be 'diagonal' or 'norm', got {reduce!r}")
    L, C = x.shape
    jac = torch.autograd.functional.jacobian(lambda inp: mixer(inp[None])[0], x.detach())  # (L, C, L, C)
    if reduce == "norm":
        return jac.pow(2).sum(dim=(1, 3)).sqrt() / C ** 0.5
    return torch.diagonal(jac, dim1=1, dim2=3).mean(-1)
