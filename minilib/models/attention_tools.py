r"""The attention layers of a trained :class:`~minilib.models.TransformerLM`: read their maps, rescale their RoPE positions."""
from __future__ import annotations

import torch
from torch import nn

from minilib.attention import MultiHeadAttention
from minilib.models.transformer import TransformerLM
from minilib.positional import alibi_bias, check_rope_scaling

__all__ = ["set_rope_scaling", "attention_maps"]


def set_rope_scaling(model: nn.Module, scaling: tuple | None) -> None:
    """Set ``rope_scaling`` (see :func:`minilib.positional.rope_angles`) on every attention module of ``model``, in place."""
    check_rope_scaling(scaling)
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
    if not isinstance(model, TransformerLM):
        raise TypeError(f"model must be a TransformerLM, got {type(model).__name__}")
    model._require_attention("attention_maps")
    inputs = []
    hooks = [block.mixer.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for block in model.blocks]
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    T = idx.shape[1]
    positions = torch.arange(T, device=idx.device)
    bias = alibi_bias(model.n_heads, T).to(inputs[0].dtype) if model.pos == "alibi" else None
    maps, shared, owner_keys = [], model.share_kv_layers, None
    for i, (block, x) in enumerate(zip(model.blocks, inputs)):
        q, k, _ = block.mixer.project_qkv(x, positions)
        k = owner_keys if i in shared else k  # a sharing layer reads the keys of the last layer that made its own
        owner_keys = k
        maps.append(block.mixer.weights(q, k, causal=True, bias=bias))
    return torch.stack(maps)
