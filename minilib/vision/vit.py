r"""Vision Transformers: an image cut into patches is a sequence of tokens :cite:`dosovitskiy2021image`.

$$ z^{(0)} = \operatorname{patchify}(x)\, W_E + b_E + P, \qquad z^{(\ell)} = \operatorname{Block}_\ell(z^{(\ell-1)}),
   \qquad \text{logits} = \Big(\tfrac1N \textstyle\sum_{n} \operatorname{LN}(z^{(L)})_n\Big) W_C + b_C $$

``images (B, C, H, W)`` (or ``(B, H, W)``, one channel) -> ``logits (B, n_classes)``, with $N = (H/p)(W/p)$ patch
tokens of $C p^2$ pixels each. The blocks are pre-LayerNorm encoder layers built from
:class:`~minilib.attention.MultiHeadAttention` (non-causal) or any token mixer registered in :mod:`minilib.mixing`,
:class:`~minilib.norms.LayerNorm` and a GELU :class:`~minilib.feedforward.FeedForward`. The classifier reads the
mean of the tokens (global average pooling) or a class token; positions $P$ are learned, fixed 2-D sinusoids, or none.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.attention import MultiHeadAttention
from minilib.feedforward import FeedForward
from minilib.mixing import MixerFactory, mixer_factory
from minilib.norms import LayerNorm
from minilib.positional import sinusoidal

__all__ = ["patchify", "sincos_positions_2d", "PatchEmbedding", "EncoderBlock", "VisionTransformer", "seq_pool", "PoolHead",
           "attention_rollout"]


def _as_channels_first(images: torch.Tensor) -> torch.Tensor:
    require_tensor("images", images, ndim=(3, 4), floating=True)
    return images[:, None] if images.ndim == 3 else images


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    r"""Cut images into non-overlapping ``patch x patch`` squares, row by row.

    $$ \operatorname{patchify}(x)_{i (W/p) + j} = \operatorname{vec}\big(x[:,\ ip : (i+1)p,\ jp : (j+1)p]\big)
       \in \mathbb R^{C p^2}, \quad \text{flattened in } (C, p, p) \text{ order} $$

    ``images (B, C, H, W)`` or ``(B, H, W)`` -> ``(B, (H/p)(W/p), C p^2)``; ``H`` and ``W`` must be multiples of
    ``patch``. See :cite:`dosovitskiy2021image`.
    """
    check_positive_int("patch", patch)
    x = _as_channels_first(images)
    B, C, H, W = x.shape
    if H % patch or W % patch:
        raise ValueError(f"patch ({patch}) must divide the image height and width, got images {tuple(images.shape)}")
    grid = x.reshape(B, C, H // patch, patch, W // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(B, (H // patch) * (W // patch), C * patch * patch)


def sincos_positions_2d(grid: tuple[int, int], d_model: int) -> torch.Tensor:
    r"""Fixed 2-D sinusoidal positions: the first half of the channels encodes the row, the second the column.

    $$ P_{iW + j} = \big[\operatorname{sinusoidal}(i)_{0:d/2},\ \operatorname{sinusoidal}(j)_{0:d/2}\big] $$

    with :func:`minilib.positional.sinusoidal` at width $d/2$; ``grid = (H, W)`` tokens row by row ->
    ``(H W, d_model)``; ``d_model`` must be even. See :cite:`vaswani2017attention`, :cite:`dosovitskiy2021image`.
    """
    if not (isinstance(grid, tuple) and len(grid) == 2):
        raise TypeError(f"grid must be a (rows, columns) tuple, got {grid!r}")
    rows, cols = (check_positive_int(name, v) for name, v in (("grid rows", grid[0]), ("grid columns", grid[1])))
    check_positive_int("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"d_model must be even for 2-D sinusoidal positions (half rows, half columns), got {d_model}")
    half = d_model // 2
    row_table, col_table = sinusoidal(rows, half), sinusoidal(cols, half)
    return torch.cat([row_table.repeat_interleave(cols, dim=0), col_table.repeat(rows, 1)], dim=1)


class PatchEmbedding(nn.Module):
    r"""Patches to tokens: a linear map of each patch plus a position per patch.

    $$ z_n = \operatorname{patchify}(x)_n W_E + b_E + P_n $$

    ``images (B, C, H, W)`` or ``(B, H, W)`` -> ``(B, N, d_model)``, ``N = (H/p)(W/p)``, tokens row by row over the
    ``grid = (H/p, W/p)``. ``image_size`` is ``(H, W)`` or one int for square images. ``pos="learned"``: ``P`` is a
    parameter starting as $\mathcal N(0, 0.02^2)$; ``"sincos"``: the fixed :func:`sincos_positions_2d` (a buffer);
    ``"none"``: $P = 0$ (``self.pos`` is ``None``). See :cite:`dosovitskiy2021image`.
    """

    POSITIONS = ("learned", "sincos", "none")  #: the position kinds

    def __init__(self, image_size: int | tuple[int, int], patch: int, d_model: int, *, channels: int = 1,
                 pos: str = "learned"):
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        for name, value in (("image height", height), ("image width", width), ("patch", patch),
                            ("d_model", d_model), ("channels", channels)):
            check_positive_int(name, value)
        if height % patch or width % patch:
            raise ValueError(f"patch ({patch}) must divide the image size, got {height}x{width}")
        if pos not in self.POSITIONS:
            raise ValueError(f"pos must be one of {self.POSITIONS}, got {pos!r}")
        self.image_size, self.patch, self.channels = (height, width), patch, channels
        self.n_patches = (height // patch) * (width // patch)
        self.proj = nn.Linear(channels * patch * patch, d_model)
        self.grid = (height // patch, width // patch)
        if pos == "learned":
            self.pos = nn.Parameter(0.02 * torch.randn(self.n_patches, d_model))
        elif pos == "sincos":
            self.register_buffer("pos", sincos_positions_2d(self.grid, d_model))
        else:
            self.pos = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_channels_first(images)
        if x.shape[1:] != (self.channels, *self.image_size):
            raise ValueError(f"images must be (B, {self.channels}, {self.image_size[0]}, {self.image_size[1]})"
                             f"{' or (B, H, W)' if self.channels == 1 else ''}, got {tuple(images.shape)}")
        z = self.proj(patchify(x, self.patch))
        return z if self.pos is None else z + self.pos


class EncoderBlock(nn.Module):
    r"""Pre-LayerNorm encoder layer: every token attends to every token, then a feed-forward network.

    $$ z \leftarrow z + \operatorname{MHA}(\operatorname{LN}_1(z)), \qquad z \leftarrow z + \operatorname{FFN}(\operatorname{LN}_2(z)) $$

    ``z (B, N, d_model) -> (B, N, d_model)``. ``mixer``, a module ``(B, N, d_model) -> (B, N, d_model)`` (window,
    channel, cascaded-group... attention of this package, or a registered token mixer), replaces the default
    :class:`~minilib.attention.MultiHeadAttention` (``n_heads`` is then unused). See :cite:`dosovitskiy2021image`, :cite:`xiong2020layernorm`.
    """

    def __init__(self, d_model: int, n_heads: int, *, d_ff: int, mixer: nn.Module | None = None):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("d_ff", d_ff)
        if mixer is not None and not isinstance(mixer, nn.Module):
            raise TypeError(f"mixer must be an nn.Module mapping (B, N, d_model) to itself, got {type(mixer).__name__}")
        self.norm1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads) if mixer is None else mixer
        self.norm2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, kind="gelu")

    def attention_weights(self, z: torch.Tensor) -> torch.Tensor:
        """The weights ``(B, H, N, N)`` this block's attention gives the tokens of ``z (B, N, d_model)``."""
        q, k, _ = self.attn.project_qkv(self.norm1(z), torch.arange(z.shape[1], device=z.device))
        return self.attn.weights(q, k, causal=False)

    def forward(self, z: torch.Tensor, *, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias`` (broadcastable to ``(B, H, N, N)``) is added to the attention logits (multi-head attention only)."""
        h = self.norm1(z)
        if isinstance(self.attn, MultiHeadAttention):
            z = z + self.attn(h, causal=False, bias=bias)
        elif bias is not None:
            raise ValueError(f"bias is only taken by multi-head attention, not by mixer {type(self.attn).__name__}")
        else:
            z = z + self.attn(h)
        return z + self.ffn(self.norm2(z))


class VisionTransformer(nn.Module):
    r"""ViT classifier: patch embedding, ``n_layers`` pre-LN encoder blocks, final LayerNorm, pooling, linear head.

    $$ \text{logits} = \operatorname{pool}\big(\operatorname{LN}(z^{(L)})\big) W_C + b_C, \qquad
       \operatorname{pool} = \tfrac1N \textstyle\sum_n z_n \ (\texttt{"mean"}) \text{ or } z_{\text{cls}} \ (\texttt{"cls"}) $$

    ``images (B, C, H, W)`` or ``(B, H, W)`` -> ``logits (B, n_classes)``; with ``return_attention=True`` also the
    list of each block's attention weights ``(B, H, N, N)`` (``N + 1`` tokens with a class token; attention mixer
    only). ``d_ff`` defaults to ``4 * d_model``. ``pos``: ``"learned"``, ``"sincos"`` (:func:`sincos_positions_2d`)
    or ``"none"`` (the ablation of :cite:`wu2021cvt`). ``pool="cls"`` prepends a learned class token and reads it.

    ``mixer`` is any token mixer registered in :mod:`minilib.mixing` (a name or a factory), built once per block as
    ``factory(config, layer)`` with ``config.d_model``, ``n_heads``, ``n_kv_heads = n_heads``, ``n_layers``,
    ``max_len`` (the token count), ``pos = "none"`` and ``mixer_kwargs``. Attention runs without a mask; chapter 7's
    mixers are bidirectional with ``mixer_kwargs={"causal": False}``; a mixer with only a causal form (linear
    attention, state space models) reads the patches in raster order. See :cite:`dosovitskiy2021image`.
    """

    POOLS = ("mean", "cls")  #: how the classifier reads the tokens

    def __init__(self, image_size: int | tuple[int, int], patch: int, d_model: int, n_layers: int, n_heads: int, *,
                 n_classes: int, d_ff: int | None = None, channels: int = 1, mixer: str | MixerFactory = "attention",
                 mixer_kwargs: dict | None = None, pos: str = "learned", pool: str = "mean"):
        super().__init__()
        check_positive_int("n_layers", n_layers)
        check_positive_int("n_classes", n_classes)
        if pool not in self.POOLS:
            raise ValueError(f"pool must be one of {self.POOLS}, got {pool!r}")
        if mixer_kwargs is not None and not isinstance(mixer_kwargs, dict):
            raise TypeError(f"mixer_kwargs must be a dict, got {type(mixer_kwargs).__name__}")
        self.embed = PatchEmbedding(image_size, patch, d_model, channels=channels, pos=pos)
        self.pool = pool
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d_model)) if pool == "cls" else None
        build = mixer_factory(mixer)
        config = SimpleNamespace(d_model=d_model, n_heads=n_heads, n_kv_heads=n_heads, n_layers=n_layers, pos="none",
                                 max_len=self.embed.n_patches + (pool == "cls"), mixer_kwargs=dict(mixer_kwargs or {}))
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff=4 * d_model if d_ff is None else d_ff,
                                                 mixer=build(config, layer)) for layer in range(n_layers))
        self.final_norm = LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, images: torch.Tensor, *, return_attention: bool = False):
        z = self.embed(images)
        if self.cls is not None:
            z = torch.cat([self.cls.expand(z.shape[0], 1, -1), z], dim=1)
        if return_attention and not all(isinstance(b.attn, MultiHeadAttention) for b in self.blocks):
            raise ValueError(f"return_attention needs the attention mixer, got {type(self.blocks[0].attn).__name__}")
        maps = []
        for block in self.blocks:
            if return_attention:
                maps.append(block.attention_weights(z))
            z = block(z)
        z = self.final_norm(z)
        logits = self.head(z[:, 0] if self.cls is not None else z.mean(dim=1))
        return (logits, maps) if return_attention else logits


def seq_pool(z: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    r"""Sequence pooling: an attention-weighted average of the tokens instead of a class token :cite:`hassani2021escaping`.

    $$ \operatorname{SeqPool}(z) = \operatorname{softmax}_n(s)^\top z, \qquad s = z\, w \in \mathbb R^{N} $$

    ``z (B, N, d)``, ``scores (B, N)`` (or ``(B, N, 1)``) -> ``(B, d)``.
    """
    require_tensor("z", z, ndim=3, floating=True)
    require_tensor("scores", scores, ndim=(2, 3), floating=True)
    s = scores[..., 0] if scores.ndim == 3 else scores
    if s.shape != z.shape[:2]:
        raise ValueError(f"scores must be (B, N) = {tuple(z.shape[:2])} for z {tuple(z.shape)}, got {tuple(scores.shape)}")
    return torch.einsum("bn,bnd->bd", torch.softmax(s, dim=1), z)


class PoolHead(nn.Module):
    r"""The classifier every model of this package ends with: LayerNorm, pool the tokens, linear map to logits.

    $$ \text{logits} = \operatorname{pool}(\operatorname{LN}(z))\, W_C + b_C $$

    ``z (B, N, d_model) -> (B, n_classes)``; ``pool="mean"`` averages the tokens, ``"seq"`` is :func:`seq_pool`
    with learned scores $s = \operatorname{LN}(z) w$, ``"first"``/``"last"`` read one (class) token.
    """

    POOLS = ("mean", "seq", "first", "last")  #: the pooling rules

    def __init__(self, d_model: int, n_classes: int, *, pool: str = "mean"):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_classes", n_classes)
        if pool not in self.POOLS:
            raise ValueError(f"pool must be one of {self.POOLS}, got {pool!r}")
        self.pool, self.norm, self.head = pool, LayerNorm(d_model), nn.Linear(d_model, n_classes)
        self.score = nn.Linear(d_model, 1) if pool == "seq" else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.norm(z)
        pooled = {"mean": lambda: z.mean(dim=1), "seq": lambda: seq_pool(z, self.score(z)),
                  "first": lambda: z[:, 0], "last": lambda: z[:, -1]}[self.pool]()
        return self.head(pooled)


def attention_rollout(maps: list[torch.Tensor], *, residual: float = 0.5) -> torch.Tensor:
    r"""Attention rollout: how much each input token feeds each output token through all the layers.

    $$ \tilde A_\ell = \operatorname{rownorm}\big(r I + (1 - r)\, \bar A_\ell\big), \qquad R = \tilde A_L \cdots \tilde A_1 $$

    ``maps``: one ``(B, H, N, N)`` attention tensor per layer (first layer first), averaged over the heads
    ($\bar A_\ell$); ``residual`` $= r$ weighs the identity that stands for the residual path. ``-> (B, N, N)``, each
    row summing to 1. Mean pooling reads ``R.mean(1)``. See :cite:`abnar2020quantifying`.
    """
    if not isinstance(maps, (list, tuple)) or not maps:
        raise TypeError(f"maps must be a non-empty list of (B, H, N, N) attention tensors, got {type(maps).__name__}")
    residual = check_number("residual", residual, low=0.0, high=1.0)
    out = None
    for i, m in enumerate(maps):
        require_tensor(f"maps[{i}]", m, ndim=4, floating=True)
        if m.shape[-1] != m.shape[-2] or (out is not None and m.shape[::3] != (out.shape[0], out.shape[-1])):
            raise ValueError(f"maps must all be (B, H, N, N) with one B and N, got maps[{i}] {tuple(m.shape)}")
        a = residual * torch.eye(m.shape[-1], dtype=m.dtype, device=m.device) + (1 - residual) * m.mean(dim=1)
        a = a / a.sum(dim=-1, keepdim=True)
        out = a if out is None else a @ out
    return out
