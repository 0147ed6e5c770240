r"""Upcycling: initialise a mixture of experts from trained dense models.

Given the state dicts of $n$ dense :class:`~minilib.models.TransformerLM` s of the same architecture (FFN
``"swiglu"``, ``"gelu"``, ...), :func:`upcycle` returns a state dict for the same architecture with
``ffn="moe"``: expert $e$ of every layer is a copy of model $e \bmod n$'s FFN, every other weight (embeddings,
attention, norms) is the mean over the models, and the router starts at zero, so every token weighs its
``top_k`` experts equally. Upcycling one model into identical experts therefore computes exactly the dense
model's function at the start.

With ``attention=True`` (BAM :cite:`zhang2024bam`) the attention layers are upcycled too: the result is for the same
architecture with ``mixer="moa"`` (:class:`~minilib.moe.MixtureOfAttention`), attention expert $e$ of every layer
is model $e \bmod n$'s attention (``n_attention_experts``, default ``n_experts``) and its router starts at zero, so
every token mixes the experts equally. Without it, the models' attention weights are averaged.
"""
from __future__ import annotations

import re

import torch

from minilib._checks import check_flag, check_positive_int

__all__ = ["upcycle"]

_FFN_KEY = re.compile(r"^(blocks\.\d+\.ffn)\.(.+)$")
_ATTENTION_KEY = re.compile(r"^(blocks\.\d+\.mixer)\.(.+)$")


def upcycle(state_dicts: list[dict], n_experts: int, *, attention: bool = False,
            n_attention_experts: int | None = None) -> dict:
    """State dict of an MoE model (``ffn="moe"`` with ``n_experts`` experts; with ``attention=True`` also
    ``mixer="moa"`` with ``n_attention_experts`` experts) built from dense models' state dicts.
    See the module docstring and :cite:`zhang2024bam`."""
    if not isinstance(state_dicts, (list, tuple)) or not state_dicts or not all(isinstance(s, dict) for s in state_dicts):
        raise TypeError("state_dicts must be a non-empty list of state dicts")
    check_positive_int("n_experts", n_experts)
    check_flag("attention", attention)
    n_attention_experts = n_experts if n_attention_experts is None else \
        check_positive_int("n_attention_experts", n_attention_experts)
    keys = list(state_dicts[0])
    if any(list(s) != keys for s in state_dicts):
        raise ValueError("state_dicts must come from models of one architecture (the same keys)")
    out, layers, mixers = {}, {}, {}
    for key in keys:
        ffn, mixer = _FFN_KEY.match(key), _ATTENTION_KEY.match(key) if attention else None
        if ffn or mixer:
            prefix, rest = (ffn or mixer).groups()
            (layers if ffn else mixers).setdefault(prefix, state_dicts[0][key])
            for e in range(n_experts if ffn else n_attention_experts):
                out[f"{prefix}.experts.{e}.{rest}"] = state_dicts[e % len(state_dicts)][key].clone()
        else:
            out[key] = torch.stack([s[key] for s in state_dicts]).to(torch.float64).mean(0).to(state_dicts[0][key].dtype) \
                if state_dicts[0][key].is_floating_point() else state_dicts[0][key].clone()
    if not layers:
        raise ValueError("state_dicts hold no 'blocks.<i>.ffn.' weights to upcycle")
    if attention and not mixers:
        raise ValueError("attention=True but state_dicts hold no 'blocks.<i>.mixer.' weights to upcycle")
    for prefix, weight in layers.items():
        d_model = state_dicts[0][f"{prefix}.w1.weight"].shape[1]
        out[f"{prefix}.router.weight"] = weight.new_zeros(n_experts, d_model)
    for prefix, weight in mixers.items():
        if f"{prefix}.wq.weight" not in state_dicts[0]:
            raise ValueError(f"attention=True needs attention mixers ({prefix}.wq.weight); the state_dicts have other mixers")
        d_model = state_dicts[0][f"{prefix}.wq.weight"].shape[1]
        out[f"{prefix}.router.weight"] = weight.new_zeros(n_attention_experts, d_model)
    return out
