r"""Pre-LN, Pre-RMSNorm and Pre-CRMSNorm Transformers compute the same function.

A Pre-LN block only ever reads the residual stream through a LayerNorm, and LayerNorm ignores the
mean of its input. So the mean of the stream is dead weight: remove it once (centre the embedding,
the position table and every matrix that writes to the stream) and every LayerNorm sees an input
that is already zero-mean, where it equals an RMSNorm. Its bias $\beta$ moves into the next linear
layer. A zero-mean $d$-vector is fixed by $d-1$ of its coordinates, so the stream can even be
stored in $d-1$ numbers (Pre-CRMSNorm). :func:`to_pre_rmsnorm` and :func:`to_pre_crmsnorm` do these
rewrites on a trained :class:`~minilib.models.TransformerLM`; the logits do not change.
See :cite:`jiang2023prermsnorm`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from minilib.models.transformer import TransformerLM
from minilib.attention import MultiHeadAttention
from minilib.norms import CRMSNorm, LayerNorm, RMSNorm

__all__ = ["ConvertedLM", "to_pre_rmsnorm", "to_pre_crmsnorm"]


class ConvertedLM(TransformerLM):
    r"""A :class:`~minilib.models.TransformerLM` with an untied output head, the result of a conversion.

    $$ h^{(0)} = E[\text{idx}] (+ P),\quad h^{(\ell)} = \operatorname{Block}_\ell(h^{(\ell-1)}),\quad
       \text{logits} = W_\text{head}\, \operatorname{Norm}(h^{(L)}) + b_\text{head} $$

    ``ConvertedLM(lm)`` copies ``lm`` (weights, dtype, device) and starts the head at $W_\text{head} = E$,
    $b_\text{head} = 0$, so it computes the same logits; :func:`to_pre_rmsnorm` / :func:`to_pre_crmsnorm` then
    rewrite its layers, after which ``config`` describes the source model rather than the rewritten norms. The
    residual stream has ``d_stream`` coordinates ($d$, or $d-1$ for CRMSNorm). ``idx (B, T)`` ->
    ``logits (B, T, vocab)``, by :meth:`TransformerLM.forward`. See :cite:`jiang2023prermsnorm`.
    """

    def __init__(self, lm: TransformerLM):
        if not isinstance(lm, TransformerLM) or isinstance(lm, ConvertedLM):
            raise TypeError(f"lm must be a TransformerLM not yet converted, got {type(lm).__name__}")
        weight = lm.embed.weight.detach()
        with torch.random.fork_rng(devices=[]):  # the fresh weights are overwritten: leave the caller's RNG alone
            super().__init__(lm.config)
        self.to(device=weight.device, dtype=weight.dtype)
        self.load_state_dict(lm.state_dict())
        for mine, theirs in zip(self.blocks, lm.blocks):
            mine.residual_scales = theirs.residual_scales
        self.kv_route_p, self.share_kv_layers = lm.kv_route_p, lm.share_kv_layers
        self.head = nn.Linear(weight.shape[1], weight.shape[0]).to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.zero_()

    @property
    def d_stream(self) -> int:
        return self.embed.weight.shape[1]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        r"""The untied head: $W_\text{head} \operatorname{Norm}(h) + b_\text{head}$, ``h (B, T, d_stream) -> (B, T, V)``."""
        return self.head(self.final_norm(h))


def _centre_rows_(weight: torch.Tensor) -> None:
    """Subtract from each row its mean over the last (model) dimension: embedding-like tables."""
    weight.sub_(weight.mean(dim=-1, keepdim=True))


def _centre_output_(linear: nn.Linear) -> None:
    """Make every output of ``linear`` zero-mean over its output coordinates: $W \\leftarrow (I - \\tfrac1d 11^\\top) W$."""
    linear.weight.sub_(linear.weight.mean(dim=0, keepdim=True))
    if linear.bias is not None:
        linear.bias.sub_(linear.bias.mean())


def _with_bias(linear: nn.Linear, extra: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` whose bias is its old bias (or 0) plus ``extra``."""
    new = nn.Linear(linear.in_features, linear.out_features, bias=True).to(linear.weight.dtype)
    new.weight.copy_(linear.weight)
    new.bias.copy_(extra if linear.bias is None else linear.bias + extra)
    return new


def _readers(block) -> list[tuple[nn.Module, str, nn.Module]]:
    """(norm, attribute name, owner) of every linear layer reading each of the block's two norms."""
    attn, ffn = block.mixer, block.ffn
    first = [(attn, "wq"), (attn, "wk"), (attn, "wv")] + ([(attn, "wg")] if attn.wg is not None else [])
    second = [(ffn, "w1")] + ([(ffn, "w3")] if ffn.w3 is not None else [])
    return [(block.norm1, name, owner) for owner, name in first] + [(block.norm2, name, owner) for owner, name in second]


@torch.no_grad()
def to_pre_rmsnorm(model: TransformerLM) -> ConvertedLM:
    r"""Convert a Pre-LN :class:`~minilib.models.TransformerLM` into an equivalent Pre-RMSNorm model.

    1. Zero-mean residual stream: centre the rows of $E$ and of an additive position table, and
       the outputs of every matrix writing to the stream, $W_O \leftarrow (I - \tfrac1d\mathbf 1\mathbf 1^\top) W_O$
       (same for $W_2$). LayerNorm ignores the mean, so no LayerNorm output changes.
    2. On zero-mean input $\operatorname{LN}(x) = \gamma \odot x/\operatorname{RMS}(x) + \beta
       = \operatorname{RMSNorm}_\gamma(x) + \beta$ (same $\epsilon$), and the next linear layer absorbs
       $\beta$: $W(\,\cdot + \beta) + b = W\,\cdot + (W\beta + b)$.
    3. The output head keeps the original, uncentred $E$ (untied), with bias $E\beta_\text{final}$.

    Returns a :class:`ConvertedLM`; ``model`` is not modified. See :cite:`jiang2023prermsnorm`.
    """
    if not isinstance(model, TransformerLM):
        raise TypeError(f"model must be a TransformerLM, got {type(model).__name__}")
    if not all(b.pre_norm and isinstance(b.norm1, LayerNorm) for b in model.blocks) or not isinstance(model.final_norm, LayerNorm):
        raise ValueError("model must be a Pre-LN TransformerLM (norm='layer', pre_norm=True)")
    if any(b.residual_scales != (1.0, 1.0) for b in model.blocks):
        raise ValueError("model must use plain residuals (residual_scales == (1.0, 1.0))")
    if not all(type(b.mixer) is MultiHeadAttention for b in model.blocks):
        # other mixers (MoH's routers, ...) read the norm through layers the rewrite does not know
        raise ValueError(f"model must use MultiHeadAttention mixers, got {type(model.blocks[0].mixer).__name__}")
    out = ConvertedLM(model)
    _centre_rows_(out.embed.weight)
    if out.pos_embed is not None:
        _centre_rows_(out.pos_embed.weight)
    if out.pos == "sinusoidal":
        out.pos_table = out.pos_table - out.pos_table.mean(dim=-1, keepdim=True)

    def rms_like(ln: LayerNorm) -> RMSNorm:
        rms = RMSNorm(ln.d, eps=ln.eps).to(ln.weight.dtype)
        rms.weight.copy_(ln.weight)
        return rms

    def ln_bias(ln: LayerNorm) -> torch.Tensor:
        return torch.zeros_like(ln.weight) if ln.bias is None else ln.bias

    for block in out.blocks:
        _centre_output_(block.mixer.wo)
        _centre_output_(block.ffn.w2)
        for norm, name, owner in _readers(block):
            linear = getattr(owner, name)
            setattr(owner, name, _with_bias(linear, linear.weight @ ln_bias(norm)))
        block.norm1, block.norm2 = rms_like(block.norm1), rms_like(block.norm2)
    out.head.bias.copy_(out.head.weight @ ln_bias(out.final_norm))
    out.final_norm = rms_like(out.final_norm)
    return out


@torch.no_grad()
def to_pre_crmsnorm(model: TransformerLM | ConvertedLM) -> ConvertedLM:
    r"""Convert a Pre-LN or Pre-RMSNorm model into the equivalent Pre-CRMSNorm model with a $(d-1)$-wide stream.

    The zero-mean stream $x = M z$, $M = \begin{bmatrix} I_{d-1} \\ -\mathbf 1^\top \end{bmatrix}$, is stored as
    $z = x_{1:d-1}$. Writers keep their first $d-1$ output rows ($E$, $P$, $W_O$, $W_2$); each
    RMSNorm with gain $\gamma$ becomes :class:`~minilib.norms.CRMSNorm` and every reader absorbs gain and
    expansion, $W \leftarrow W \operatorname{diag}(\gamma)\, M$, i.e.
    $W'_{:,j} = \gamma_j W_{:,j} - \gamma_d W_{:,d}$. Returns a new :class:`ConvertedLM`.
    See :cite:`jiang2023prermsnorm`.
    """
    if isinstance(model, TransformerLM) and not isinstance(model, ConvertedLM):
        model = to_pre_rmsnorm(model)
    if not isinstance(model, ConvertedLM) or not isinstance(model.final_norm, RMSNorm):
        raise TypeError(f"model must be a Pre-LN TransformerLM or the output of to_pre_rmsnorm, got {type(model).__name__}")
    out = copy.deepcopy(model)
    d = out.d_stream

    def keep_rows(table: nn.Embedding) -> nn.Embedding:
        new = nn.Embedding(table.num_embeddings, d - 1).to(table.weight.dtype)
        new.weight.copy_(table.weight[:, : d - 1])
        return new

    def keep_outputs(linear: nn.Linear) -> nn.Linear:
        new = nn.Linear(linear.in_features, d - 1, bias=linear.bias is not None).to(linear.weight.dtype)
        new.weight.copy_(linear.weight[: d - 1])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[: d - 1])
        return new

    def compress_input(linear: nn.Linear, gain: torch.Tensor) -> nn.Linear:
        scaled = linear.weight * gain
        new = nn.Linear(d - 1, linear.out_features, bias=linear.bias is not None).to(linear.weight.dtype)
        new.weight.copy_(scaled[:, : d - 1] - scaled[:, d - 1 :])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
        return new

    def crms_like(rms: RMSNorm) -> CRMSNorm:
        return CRMSNorm(d, eps=rms.eps)

    out.embed = keep_rows(out.embed)
    if out.pos_embed is not None:
        out.pos_embed = keep_rows(out.pos_embed)
    if out.pos == "sinusoidal":
        out.pos_table = out.pos_table[:, : d - 1]
    for block in out.blocks:
        block.mixer.wo = keep_outputs(block.mixer.wo)
        block.ffn.w2 = keep_outputs(block.ffn.w2)
        for norm, name, owner in _readers(block):
            setattr(owner, name, compress_input(getattr(owner, name), norm.weight))
        block.norm1, block.norm2 = crms_like(block.norm1), crms_like(block.norm2)
    out.head = compress_input(out.head, out.final_norm.weight)
    out.final_norm = crms_like(out.final_norm)
    return out
