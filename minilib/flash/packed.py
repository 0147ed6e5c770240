r"""Padding-free packed batches (ByteTransformer): attention and a whole encoder layer on real tokens only.

Sequences of different lengths are concatenated into one ``(total, ...)`` tensor with offsets
``cu_seqlens``; position-wise work runs on the ``total`` tokens, attention per sequence.
See :cite:`zhai2023bytetransformer`.
"""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, default_scale, require_tensor
from minilib.flash._units import run_units
from minilib.flash.kernel import _attend, _bottom_right, _tiles

__all__ = ["varlen_attention", "packed_encoder_layer"]


def varlen_attention(q, k, v, cu_seqlens, *, causal=False, scale=None, block_q=None, block_k=None):
    r"""Attention over a padding-free packed batch: no token attends across sequences.

    Sequence $i$ occupies rows $[c_i, c_{i+1})$ of the packed tensors and
    $\mathrm{out}_{c_i:c_{i+1}} = \operatorname{attn}(Q_{c_i:c_{i+1}}, K_{c_i:c_{i+1}}, V_{c_i:c_{i+1}})$,
    so the work is $\sum_i L_i^2$ instead of $n\,\max_i L_i^2$ for a padded batch.
    ``q (total, H, D)``, ``k (total, Hkv, D)``, ``v (total, Hkv, Dv)``, ``cu_seqlens (n+1,)``
    integer offsets from 0 to ``total`` -> ``(total, H, Dv)``; each sequence runs in
    ``block_q x block_k`` tiles (default :func:`~minilib.flash.default_tiles` of its length).  See :cite:`zhai2023bytetransformer`.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, x, ndim=3, floating=True)
    require_tensor("cu_seqlens", cu_seqlens, ndim=1)
    if cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool:
        raise TypeError(f"cu_seqlens must be an integer tensor, got dtype {cu_seqlens.dtype}")
    total = q.shape[0]
    if k.shape[0] != total or v.shape[0] != total:
        raise ValueError(f"q, k, v must share the packed length, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total or any(a > b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to total={total}, got {bounds}")
    check_attention_inputs(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], causal=causal)
    _tiles(block_q, block_k, 1, causal)  # check explicit tiles once, before any work
    scale = default_scale(q.shape[-1], scale)

    def one_sequence(span):
        a, b = span
        qi, ki, vi = (x[a:b].transpose(0, 1)[None] for x in (q, k, v))
        q_pos, k_pos = _bottom_right(b - a, b - a) if causal else (None, None)
        return _attend(qi, ki, vi, scale, q_pos, k_pos, *_tiles(block_q, block_k, b - a, causal))[0][0].transpose(0, 1)

    # each sequence is one work unit, the longest first so the workers finish together
    spans = sorted(((a, b) for a, b in zip(bounds, bounds[1:]) if b > a), key=lambda ab: ab[0] - ab[1])
    pieces = dict(zip(spans, run_units(one_sequence, spans)))
    if not pieces:
        return q.new_zeros(0, q.shape[1], v.shape[-1], dtype=v.dtype)
    return torch.cat([pieces[span] for span in sorted(pieces)])



def packed_encoder_layer(x, cu_seqlens, layer):
    r"""One BERT-style encoder layer on a padding-free packed batch (ByteTransformer).

    With the tokens of all sequences concatenated, every position-wise part (projections,
    feed-forward, layer norms) runs on the ``total`` real tokens only, and attention runs per
    sequence through :func:`varlen_attention`.  For ``layer.norm_first = False`` (post-LN, BERT):

    $$ h = \mathrm{LN}_1\big(x + W_O\, \mathrm{attn}_{\text{per seq}}(xW_Q, xW_K, xW_V)\big),\qquad
       y = \mathrm{LN}_2\big(h + W_2\, \phi(W_1 h)\big) $$

    and the pre-LN order when ``norm_first``.  ``x (total, d_model)``, ``cu_seqlens (n+1,)``
    offsets as in :func:`varlen_attention`; ``layer`` is a ``torch.nn.TransformerEncoderLayer``
    whose weights are used (dropout must be inactive: eval mode or ``p = 0``) -> ``(total, d_model)``.
    The work is $\sum_i L_i$ tokens for the position-wise parts and $\sum_i L_i^2$ for attention,
    instead of $n \max_i L_i$ and $n \max_i L_i^2$ padded.  See :cite:`zhai2023bytetransformer`.
    """
    if not isinstance(layer, torch.nn.TransformerEncoderLayer):
        raise TypeError(f"layer must be a torch.nn.TransformerEncoderLayer, got {type(layer).__name__}")
    require_tensor("x", x, ndim=2, floating=True)
    attn = layer.self_attn
    d, H = attn.embed_dim, attn.num_heads
    if x.shape[1] != d:
        raise ValueError(f"x must be (total, d_model={d}), got {tuple(x.shape)}")
    if layer.training and any(m.p > 0 for m in layer.modules() if isinstance(m, torch.nn.Dropout)):
        raise ValueError("layer has active dropout: call layer.eval() or set dropout to 0")
    if not attn._qkv_same_embed_dim or attn.in_proj_bias is None:
        raise ValueError("layer.self_attn must use one packed in-projection with bias (the default)")
    total = x.shape[0]

    def attention_block(z):
        qkv = torch.nn.functional.linear(z, attn.in_proj_weight, attn.in_proj_bias).view(total, 3, H, d // H)
        o = varlen_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens)
        return attn.out_proj(o.reshape(total, d))

    def feed_forward(z):
        return layer.linear2(layer.activation(layer.linear1(z)))

    if layer.norm_first:
        x = x + attention_block(layer.norm1(x))
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + attention_block(x))
    return layer.norm2(x + feed_forward(x))
