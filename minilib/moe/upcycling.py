r"""Upcycling: initialise a mixture of experts from trained dense models.

Given the state dicts of $n$ dense :class:`~minilib.models.TransformerLM` s of the same architecture (FFN
``"swiglu"``, ``"gelu"``, ...), :func:`upcycle` returns a state dict for the same architecture with
``ffn="moe"``: expert $e$ of every layer is a copy of model $e \bmod n$'s FFN, every other weight (embeddings,
attention, norms) is the mean over the models, and the router starts at zero, so every token weighs its
``top_k`` experts equally. Upcycling one model into identical experts therefore computes exactly the dense
model's function at the start (:cite:`zhang2024bam`; BAM also upcycles attention into experts, not built here).
"""
from __future__ import annotations

import re

import torch

from minilib._checks import check_positive_int

__all__ = ["upcycle"]

_FFN_KEY = re.compile(r"^(blocks\.\d+\.ffn)\.(.+)$")


def upcycle(state_dicts: list[dict], n_experts: int) -> dict:
    """State dict of an MoE model (``ffn="moe"`` with ``n_experts`` experts) built from dense models' state dicts.
    See the module docstring and :cite:`zhang2024bam`."""
    if not isinstance(state_dicts, (list, tuple)) or not state_dicts or not all(isinstance(s, dict) for s in state_dicts):
        raise TypeError("state_dicts must be a non-empty list of state dicts")
    check_positive_int("n_experts", n_experts)
    keys = list(state_dicts[0])
    if any(list(s) != keys for s in state_dicts):
        raise ValueError("state_dicts must come from models of one architecture (the same keys)")
    out, layers = {}, {}
    for key in keys:
        match = _FFN_KEY.match(key)
        if match:
            prefix, rest = match.groups()
            layers.setdefault(prefix, state_dicts[0][key])
            for e in range(n_experts):
                out[f"{prefix}.experts.{e}.{rest}"] = state_dicts[e % len(state_dicts)][key].clone()
        else:
            out[key] = torch.stack([s[key] for s in state_dicts]).to(torch.float64).mean(0).to(state_dicts[0][key].dtype) \
                if state_dicts[0][key].is_floating_point() else state_dicts[0][key].clone()
    if not layers:
        raise ValueError("state_dicts hold no 'blocks.<i>.ffn.' weights to upcycle")
    for prefix, weight in layers.items():
        d_model = state_dicts[0][f"{prefix}.w1.weight"].shape[1]
        out[f"{prefix}.router.weight"] = weight.new_zeros(n_experts, d_model)
    return out
