r"""Block-sparse FlashAttention: only the ``(b x b)`` score tiles a block mask keeps are visited.

See :cite:`dao2022flashattention,child2019sparse`.
"""
from __future__ import annotations

import torch

from minilib._checks import check_attention_inputs, check_positive_int, default_scale, require_tensor
from minilib.flash._units import run_units
from minilib.flash.kernel import _attend, _bottom_right

__all__ = ["block_sparse_attention"]


def block_sparse_attention(q, k, v, block_mask, *, block_size=64, causal=False, scale=None):
    r"""Attention restricted to the ``(block_size x block_size)`` tiles a block mask keeps.

    $$ \mathrm{out} = \operatorname{softmax}(s\,QK^\top + \mathrm{mask})\,V,\qquad
       \mathrm{mask}_{tj} = 0 \text{ if } M_{\lfloor t/b\rfloor \lfloor j/b\rfloor} \text{ (and } j \text{ visible when causal)}, -\infty \text{ otherwise} $$

    Each query block is a work unit: its kept key blocks are gathered (heads with the same
    kept keys, or the same number of them when not causal, in one batched call) and only
    they are visited; masked blocks are never read.  ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``,
    ``block_mask`` bool ``(H or 1, ceil(T/b), ceil(S/b))`` -> ``(B, H, T, Dv)``; rows with no
    kept key give zeros.  Equals ``sdpa`` with the expanded mask.
    See :cite:`dao2022flashattention,child2019sparse`.
    """
    check_attention_inputs(q, k, v, causal=causal)
    check_positive_int("block_size", block_size)
    require_tensor("block_mask", block_mask, ndim=3)
    if block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be a bool tensor, got dtype {block_mask.dtype}")
    B, H, T, _ = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    nq, nk = -(-T // block_size), -(-S // block_size)
    if block_mask.shape[0] not in (1, H) or tuple(block_mask.shape[1:]) != (nq, nk):
        raise ValueError(f"block_mask must have shape (1 or {H}, {nq}, {nk}) for T={T}, S={S}, "
                         f"block_size={block_size}; got {tuple(block_mask.shape)}")
    scale = default_scale(q.shape[-1], scale)
    q_pos, k_pos = _bottom_right(T, S)
    group = H // Hkv
    keep = block_mask.expand(H, nq, nk).cpu().tolist()
    inner_k = max(block_size, 512)  # gathered keys are scanned in wider tiles: fewer Python steps
    out_dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    whole_blocks = None if S % block_size else tuple(x.reshape(B, Hkv * nk, -1) for x in (k, v))
    key_ids = torch.arange(nk * block_size).split(block_size)
    key_ids = key_ids[:-1] + (key_ids[-1][:S - (nk - 1) * block_size],)

    def query_block(i):
        r0, r1 = i * block_size, min(T, (i + 1) * block_size)
        out = q.new_zeros(B, H, r1 - r0, v.shape[-1], dtype=out_dtype)
        # heads whose kept keys can share one batched call: the same keys when causal (the mask
        # needs common key positions), else just the same number of keys
        batches = {}
        for h in range(H):
            cols = tuple(j for j in range(nk) if keep[h][i][j])
            if cols:
                n_keys = len(cols) * block_size - (block_size * nk - S if cols[-1] == nk - 1 else 0)
                batches.setdefault(cols if causal else n_keys, []).append((h, cols))
        for members in batches.values():
            heads = [h for h, _ in members]
            # key indices built by torch, not Python loops: workers share the GIL
            idx_t = torch.stack([torch.cat([key_ids[j] for j in cols]) for _, cols in members])
            if whole_blocks is not None:  # copy whole (block_size, D) blocks: a fast contiguous gather
                rows = torch.tensor([(h // group) * nk + j for h, cols in members for j in cols])
                kg, vg = (x.index_select(1, rows).reshape(B, len(heads), idx_t.shape[1], -1) for x in whole_blocks)
            else:
                kv_heads = torch.tensor([h // group for h in heads])[:, None]
                kg, vg = k[:, kv_heads, idx_t], v[:, kv_heads, idx_t]  # (B, len(heads), kept keys, D)
            qt = q[:, heads, r0:r1]
            if causal:
                o = _attend(qt, kg, vg, scale, q_pos[r0:r1], idx_t[0].tolist(), block_size, inner_k)[0]
            else:
                o = _attend(qt, kg, vg, scale, None, None, block_size, inner_k)[0]
            out[:, heads] = o
        return out

    return torch.cat(run_units(query_block, list(range(nq))), dim=2)

