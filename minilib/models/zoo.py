r"""Chapter 13's zoo: every causal token mixer of the book in one :class:`~minilib.models.TransformerLM` skeleton.

:data:`ZOO_ROWS` names each compared model by the :class:`~minilib.models.TransformerConfig` fields that make
it differ from the softmax-attention baseline (a row per mixer, per head layout, per feed-forward: a later
chapter adds its row with one line); :data:`EXCLUDED` says why a registered mixer has no row.
:func:`zoo_model` builds a row at given sizes, :func:`matched_d_ff` widens or narrows its feed-forward until it
holds the baseline's parameter count. Three measurements every row gets:

- :func:`decoding_state_bytes`: the bytes a model's decoding caches hold (a KV cache grows with the context,
  a recurrent state does not);
- :func:`mqar_accuracy`: the share of multi-query associative-recall answers predicted exactly
  :cite:`arora2023zoology`.

How each row mixes its tokens is read with :func:`minilib.mixers.mixing_matrix`.
"""
from __future__ import annotations

import torch

from minilib._checks import check_positive_int, require_tensor
from minilib.experiments import count_parameters
from minilib.looped import LoopedTransformer
from minilib.models.transformer import TransformerConfig, TransformerLM

__all__ = ["ZOO_ROWS", "EXCLUDED", "LOOP_ONE_BLOCK", "zoo_config", "zoo_model", "matched_d_ff", "decoding_state_bytes",
           "mqar_accuracy"]

#: The one row key that is not a :class:`~minilib.models.TransformerConfig` field: ``True`` makes the model one
#: attention block applied ``n_layers`` times with tied weights (chapter 08's looped model, no input injection).
LOOP_ONE_BLOCK = "loop_one_block"

#: Each compared model: row name -> the :class:`~minilib.models.TransformerConfig` fields it sets on top of the
#: shared sizes (softmax attention with one key/value head per query head is ``{}``; an FFN row such as ``"moe"``
#: keeps attention and swaps the feed-forward), or :data:`LOOP_ONE_BLOCK`.
ZOO_ROWS: dict[str, dict] = {
    "attention": {},
    "gqa": {"n_kv_heads": 2},
    "mqa": {"n_kv_heads": 1},
    "moh": {"mixer": "moh", "mixer_kwargs": {"top_k": 2}},
    "sliding_window": {"mixer": "sliding_window", "mixer_kwargs": {"window": 16}},
    "linear_attention": {"mixer": "linear_attention"},
    "retention": {"mixer": "retention"},
    "transnormer": {"mixer": "transnormer"},
    "s4d": {"mixer": "s4d"},
    "mamba": {"mixer": "mamba"},
    "h3": {"mixer": "h3"},
    "hyena": {"mixer": "hyena"},
    "dwconv": {"mixer": "dwconv"},
    "pool": {"mixer": "pool"},
    "ponet": {"mixer": "ponet"},
    "ffnified": {"mixer": "ffnified"},
    "identity": {"mixer": "identity"},
    "dmc": {"mixer": "dmc", "mixer_kwargs": {"rate": 4}},
    "rodimus": {"mixer": "rodimus"},
    "moe": {"ffn": "moe", "ffn_kwargs": {"n_experts": 4, "top_k": 1}},
    "looped": {LOOP_ONE_BLOCK: True},
    "combiner": {"mixer": "combiner", "mixer_kwargs": {"block_size": 8}},
    "moa": {"mixer": "moa", "mixer_kwargs": {"n_experts": 2}},
    "lmu": {"mixer": "lmu"},
    "lsa": {"mixer": "lsa"},
}

#: Registered mixers without a row, and why: no causal form, or weights indexed by position up to ``max_len`` (their
#: parameters grow with the longest context and nothing is learnt for positions past the training length).
EXCLUDED: dict[str, str] = {
    "fourier": "not causal: every FFT output reads every token",
    "dct": "not causal: every DCT coefficient sums every token",
    "aff": "filter weights indexed by frequency up to max_len",
    "token_mlp": "a max_len x max_len weight matrix per layer",
    "ninformer": "a max_len x max_len weight matrix per layer",
    "hyena2d": "not causal: a 2-D filter over an image grid, anchored at opposite corners in its two orders",
}


def zoo_config(row: str, *, vocab_size: int, d_model: int, n_layers: int, n_heads: int, max_len: int,
               d_ff: int | None = None) -> TransformerConfig:
    """The :class:`~minilib.models.TransformerConfig` of ``row``: the shared sizes, then ``ZOO_ROWS[row]``."""
    if row not in ZOO_ROWS:
        raise ValueError(f"row must be one of {sorted(ZOO_ROWS)}, got {row!r}")
    fields = dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, max_len=max_len, d_ff=d_ff)
    row_fields = {k: v for k, v in ZOO_ROWS[row].items() if k != LOOP_ONE_BLOCK}
    return TransformerConfig(**{**fields, **row_fields})


def zoo_model(row: str, **sizes) -> TransformerLM:
    """A fresh :class:`~minilib.models.TransformerLM` of ``row`` (``sizes``: the keywords of :func:`zoo_config`); a
    :data:`LOOP_ONE_BLOCK` row's blocks are its first block ``n_layers`` times
    (:meth:`~minilib.looped.LoopedTransformer.unroll`), so it holds one block's parameters and a cache per pass."""
    model = TransformerLM(zoo_config(row, **sizes))
    if ZOO_ROWS[row].get(LOOP_ONE_BLOCK):
        looped = LoopedTransformer(model.blocks[0], len(model.blocks), input_injection=False)
        model.blocks = looped.unroll().layers
    return model


def matched_d_ff(row: str, target: int, **sizes) -> int:
    r"""The feed-forward width at which ``zoo_model(row, d_ff=..., **sizes)`` holds closest to ``target`` parameters.

    The count is affine in ``d_ff`` (a SwiGLU block holds $3 d\,d_{ff}$ per layer), so two builds fix it.
    """
    check_positive_int("target", target)
    p1, p2 = (count_parameters(zoo_model(row, d_ff=f, **sizes)) for f in (1, 2))
    return max(1, round(1 + (target - p1) / (p2 - p1)))


def _tensor_bytes(obj, seen: set) -> int:
    if isinstance(obj, torch.Tensor):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(_tensor_bytes(o, seen) for o in obj.values())
    if hasattr(obj, "__dict__"):
        return sum(_tensor_bytes(o, seen) for o in vars(obj).values())
    return 0


def decoding_state_bytes(caches) -> int:
    r"""Bytes held by the tensors of decoding caches (from :meth:`~minilib.models.TransformerLM.new_caches`, after
    some tokens were fed): every tensor reachable from each cache's attributes, counted once.

    For softmax attention this is :func:`~minilib.attention.kv_cache_bytes` at the context length (it grows
    linearly); a linear-attention or SSM cache holds a state of fixed size.
    """
    if caches is None:
        raise ValueError("caches is None: the model has no incremental decoding form (it recomputes the context)")
    if not isinstance(caches, (list, tuple)):
        raise TypeError(f"caches must be the list from new_caches(), got {type(caches).__name__}")
    seen: set = set()
    return sum(_tensor_bytes(cache, seen) for cache in caches)


def mqar_accuracy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    r"""Share of the answer positions whose most likely token is the answer:
    $\frac{1}{|M|}\sum_{(b,t) \in M} [\arg\max_v \text{logits}_{btv} = \text{targets}_{bt}]$.

    ``logits (B, T, V)``, ``targets (B, T)`` int, ``mask (B, T)`` bool (the query positions of
    :func:`minilib.data.associative_recall`); positions outside the mask do not count.
    """
    require_tensor("logits", logits, ndim=3, floating=True)
    require_tensor("targets", targets, ndim=2)
    require_tensor("mask", mask, ndim=2)
    if targets.shape != logits.shape[:2] or mask.shape != logits.shape[:2]:
        raise ValueError(f"targets {tuple(targets.shape)} and mask {tuple(mask.shape)} must be (B, T) = "
                         f"{tuple(logits.shape[:2])} of logits {tuple(logits.shape)}")
    if mask.dtype != torch.bool or not mask.any():
        raise ValueError(f"mask must be a bool tensor with at least one True, got dtype {mask.dtype}")
    return (logits.argmax(-1) == targets)[mask].double().mean().item()
