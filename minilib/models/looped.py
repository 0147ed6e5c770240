r"""Chapter 08's whole-model pieces: cross-layer attention, Mix'n'Match extraction, speculative decoding with a nested
draft, continuous thought, per-layer hidden states and the ladder residual on a :class:`~minilib.models.TransformerLM`."""
from __future__ import annotations

import copy

import torch
from torch import nn

from minilib._checks import check_nonnegative_int, check_number, check_positive_int, check_token_ids, require_tensor
from minilib.attention import DepthMemory
from minilib.feedforward import FeedForward
from minilib.looped.matformer import MatFFN
from minilib.looped.shortcuts import ladder_forward
from minilib.models.transformer import TransformerLM

__all__ = ["CrossLayerLM", "hidden_states", "block_updates", "ladder_logits", "set_ffn_widths", "extract_submodel",
           "greedy_accept", "speculative_greedy", "continuous_thought", "early_exit"]


def _check_lm(name: str, model) -> TransformerLM:
    if not isinstance(model, TransformerLM):
        raise TypeError(f"{name} must be a minilib.models.TransformerLM, got {type(model).__name__}")
    return model


def _check_pre_norm(model: TransformerLM, what: str) -> None:
    if not model.config.pre_norm:
        raise ValueError(f"{what} needs a Pre-norm model (config.pre_norm=True)")


class CrossLayerLM(TransformerLM):
    r"""A :class:`TransformerLM` whose attention layers see the earlier layers' keys and values at the same positions.

    Built like :class:`TransformerLM` (Pre-norm); set ``mixer_kwargs={"depth_attention": True}`` or
    ``{"value_residual": "gated"}`` (see :class:`~minilib.attention.MultiHeadAttention`). Each forward pass creates one
    :class:`~minilib.attention.DepthMemory` and hands it to every layer; nothing is kept after the pass, so the
    decoding cache (:meth:`new_caches`) is the standard one. See :cite:`depthattention2026`, :cite:`gunasekaran2026satformer`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._require_attention("CrossLayerLM")
        _check_pre_norm(self, "CrossLayerLM")
        if self.pos == "alibi" or self.kv_route_p > 0:
            raise ValueError("CrossLayerLM supports neither pos='alibi' nor kv_route_p > 0")

    def forward(self, idx: torch.Tensor, *, caches: list | None = None) -> torch.Tensor:
        check_token_ids("idx", idx, ndim=2, vocab_size=self.vocab_size)
        if caches is not None and (not isinstance(caches, list) or len(caches) != len(self.blocks)):
            raise ValueError(f"caches must be a list of {len(self.blocks)} per-layer caches from new_caches(), got {caches!r}")
        past = 0 if caches is None else caches[0].length
        positions = torch.arange(past, past + idx.shape[1], device=idx.device)
        x = self.embed(idx)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
        if self.pos == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        depth = DepthMemory()
        for i, block in enumerate(self.blocks):
            cache = None if caches is None else caches[i]
            x = block.residual(x, block.mixer(block.norm1(x), cache=cache, depth=depth))
            x = block.residual(x, block.ffn(block.norm2(x)))
        return self.logits(x)


def _embed(model: TransformerLM, idx: torch.Tensor) -> torch.Tensor:
    check_token_ids("idx", idx, ndim=2, vocab_size=model.vocab_size)
    if model.pos not in ("rope", "none"):
        raise ValueError(f"this works on models with pos='rope' or 'none' (positions inside attention), got pos={model.pos!r}")
    return model.embed(idx)


def hidden_states(model: TransformerLM, idx: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream ``(B, T, d_model)`` after each block of ``model`` for tokens ``idx (B, T)``, ``n_layers`` tensors."""
    x, states = _embed(_check_lm("model", model), idx), []
    for block in model.blocks:
        x = block(x)
        states.append(x)
    return states


def early_exit(model: TransformerLM, idx: torch.Tensor, threshold: float, *, shortcuts=None,
               halting=None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-token early exit on confidence: a token leaves the stack after the first layer whose read-out is sure enough.

    After layer $\ell < L$ each token still running reads logits $z_\ell = \operatorname{head}(h_\ell A_\ell)$
    ($A_\ell$ = ``shortcuts[l]`` from :func:`~minilib.looped.fit_linear_shortcuts`, or the identity: the logit lens) and
    exits when $\max_v \operatorname{softmax}(z_\ell)_v > \tau$; its logits are $z_\ell$ and its state is copied
    unchanged through the remaining layers (the later tokens still attend to it), so a real implementation skips its
    block work. With ``halting`` (a list of ``n_layers - 1`` learned halting units, each mapping the states
    ``(B, T, d_model)`` to halting probabilities ``(B, T)``) a token exits when $\operatorname{halt}_\ell(h_\ell) > \tau$
    instead. Tokens that never exit get the full model's logits; ``threshold=1.0`` (a probability never exceeds 1)
    is exactly ``model(idx)``.

    ``idx (B, T)`` -> ``(logits (B, T, V), exit_layer (B, T))`` with exit layers in $1..L$; the block work done is
    ``exit_layer.sum()`` of $B T L$ token-layers. See :cite:`yomdin2024jump`, :cite:`bae2025relaxed`.
    """
    x = _embed(_check_lm("model", model), idx)
    check_number("threshold", threshold, low=0.0, high=1.0)
    n_layers, d = len(model.blocks), x.shape[-1]
    if shortcuts is not None:
        if not isinstance(shortcuts, (list, tuple)) or len(shortcuts) != n_layers - 1:
            raise ValueError(f"shortcuts must be a list of n_layers - 1 = {n_layers - 1} maps (d_model, d_model), got {shortcuts!r:.80}")
        for i, a in enumerate(shortcuts):
            require_tensor(f"shortcuts[{i}]", a, ndim=2, floating=True)
            if a.shape != (d, d):
                raise ValueError(f"shortcuts[{i}] must be ({d}, {d}), got {tuple(a.shape)}")
    if halting is not None and (not isinstance(halting, (list, tuple)) or len(halting) != n_layers - 1
                                or not all(callable(h) for h in halting)):
        raise ValueError(f"halting must be a list of n_layers - 1 = {n_layers - 1} callables (B, T, d_model) -> (B, T), got {halting!r:.80}")
    done = torch.zeros(idx.shape, dtype=torch.bool, device=idx.device)
    exit_layer = torch.full(idx.shape, n_layers, dtype=torch.long, device=idx.device)
    exit_logits = None
    for layer, block in enumerate(model.blocks):
        x = torch.where(done[..., None], x, block(x))
        if layer == n_layers - 1:
            break
        z = model.logits(x if shortcuts is None else x @ shortcuts[layer])
        score = torch.softmax(z.float(), dim=-1).amax(-1) if halting is None else halting[layer](x)
        leave = ~done & (score > threshold)
        exit_logits = z if exit_logits is None else torch.where(leave[..., None], z, exit_logits)
        exit_layer = torch.where(leave, layer + 1, exit_layer)
        done = done | leave
    final = model.logits(x)
    return (final if exit_logits is None else torch.where(done[..., None], exit_logits, final)), exit_layer


def block_updates(model: TransformerLM) -> list:
    r"""The residual branches of a Pre-norm model, in order: $h \mapsto \operatorname{Mix}(\operatorname{Norm}_1 h)$,
    $h \mapsto \operatorname{FFN}(\operatorname{Norm}_2 h)$ for each block (what :func:`~minilib.looped.ladder_forward` runs)."""
    _check_pre_norm(_check_lm("model", model), "block_updates")
    updates = []
    for block in model.blocks:
        updates += [lambda h, b=block: b.mixer(b.norm1(h)), lambda h, b=block: b.ffn(b.norm2(h))]
    return updates


def ladder_logits(model: TransformerLM, idx: torch.Tensor, *, offset: int = 1) -> torch.Tensor:
    """Logits of ``model`` run with the ladder residual (:func:`~minilib.looped.ladder_forward`); ``offset=0`` is ``model(idx)``.
    See :cite:`zhang2025ladder`."""
    x = _embed(_check_lm("model", model), idx)
    return model.logits(ladder_forward(block_updates(model), x, offset=offset))


def _matffns(model: TransformerLM) -> list[MatFFN]:
    ffns = [block.ffn for block in _check_lm("model", model).blocks]
    if not all(isinstance(f, MatFFN) for f in ffns):
        raise ValueError("the model's blocks must use MatFFN feed-forward networks (TransformerConfig(ffn='matformer'))")
    return ffns


def _per_layer(widths, n_layers: int) -> list[int]:
    widths = [widths] * n_layers if isinstance(widths, int) and not isinstance(widths, bool) else widths
    if not isinstance(widths, (list, tuple)) or len(widths) != n_layers:
        raise ValueError(f"widths must be one int or a list of {n_layers} ints (one per layer), got {widths!r}")
    return list(widths)


def set_ffn_widths(model: TransformerLM, widths) -> None:
    """Run every MatFFN of ``model`` at its width in ``widths`` (one int for all layers, or one per layer: Mix'n'Match)."""
    ffns = _matffns(model)
    for ffn, m in zip(ffns, _per_layer(widths, len(ffns))):
        ffn.width = ffn.check_width(m, "widths")


def extract_submodel(model: TransformerLM, widths) -> TransformerLM:
    r"""A standalone copy of a MatFormer model whose layer $\ell$ keeps the first ``widths[l]`` FFN units (Mix'n'Match):
    its FFNs are plain :class:`~minilib.feedforward.FeedForward` of those widths, fewer parameters, no retraining.
    See :cite:`devvrit2023matformer`."""
    ffns = _matffns(model)
    widths = _per_layer(widths, len(ffns))
    small = copy.deepcopy(model)
    for block, ffn, m in zip(small.blocks, ffns, widths):
        block.ffn = ffn.extract(ffn.check_width(m, "widths"))
    return small


def greedy_accept(draft_tokens: torch.Tensor, target_tokens: torch.Tensor) -> tuple[int, int]:
    r"""Greedy speculative acceptance: keep the draft while it agrees with the verifier's argmax, then take the verifier's.

    ``draft_tokens (k,)`` proposed after the prefix; ``target_tokens (k + 1,)`` the verifier's argmax after the prefix
    and after each draft token. Returns ``(n_accepted, next_token)``: the longest agreeing prefix and the verifier's
    token that follows it (its correction, or a bonus token when all ``k`` agree). See :cite:`leviathan2023fast`.
    """
    require_tensor("draft_tokens", draft_tokens, ndim=1)
    require_tensor("target_tokens", target_tokens, ndim=1)
    k = draft_tokens.shape[0]
    if target_tokens.shape[0] != k + 1:
        raise ValueError(f"target_tokens must hold k + 1 = {k + 1} tokens for {k} draft tokens, got {tuple(target_tokens.shape)}")
    disagree = (draft_tokens != target_tokens[:k]).nonzero()
    n = int(disagree[0]) if len(disagree) else k
    return n, int(target_tokens[n])


@torch.no_grad()
def speculative_greedy(target: TransformerLM, draft: TransformerLM, idx: torch.Tensor, max_new_tokens: int, *,
                       k: int = 4) -> tuple[torch.Tensor, dict]:
    r"""Greedy decoding of ``target`` sped up by a ``draft`` model proposing ``k`` tokens per verifier call.

    Each round: the draft proposes $k$ tokens greedily, the target scores prefix + draft in one forward, and
    :func:`greedy_accept` keeps the agreeing prefix plus one target token. The output equals ``target``'s own greedy
    decoding exactly. ``idx (1, T)``; returns ``(1, T + max_new_tokens)`` and ``{"verifier_calls", "accepted"}``
    (accepted draft tokens in all). See :cite:`leviathan2023fast`, :cite:`devvrit2023matformer`.
    """
    _check_lm("target", target), _check_lm("draft", draft)
    check_token_ids("idx", idx, ndim=2, vocab_size=target.vocab_size)
    if idx.shape[0] != 1:
        raise ValueError(f"idx must be one sequence (1, T), got {tuple(idx.shape)}")
    check_nonnegative_int("max_new_tokens", max_new_tokens)
    check_positive_int("k", k)
    out, calls, accepted = idx, 0, 0
    while out.shape[1] < idx.shape[1] + max_new_tokens:
        proposal = draft.generate(out, k, temperature=0)[0, out.shape[1]:]
        verified = target(torch.cat([out, proposal[None]], dim=1))[0, out.shape[1] - 1:].argmax(-1)
        n, nxt = greedy_accept(proposal, verified)
        calls, accepted = calls + 1, accepted + n
        out = torch.cat([out, proposal[None, :n], torch.tensor([[nxt]], device=out.device)], dim=1)
    return out[:, :idx.shape[1] + max_new_tokens], {"verifier_calls": calls, "accepted": accepted}


def continuous_thought(model: TransformerLM, idx: torch.Tensor, n_thoughts: int) -> torch.Tensor:
    r"""Chain of continuous thought: append the last position's final hidden state as the next input embedding, ``n_thoughts`` times.

    $$ e_{T+c+1} = h^{(L)}_{T+c}\quad (c = 0..k-1), \qquad \text{logits} = \operatorname{Norm}(h^{(L)}_{T+k})\,E^\top $$

    ``idx (B, T)`` -> the logits ``(B, V)`` read after the last thought (``n_thoughts=0``: ``model(idx)[:, -1]``).
    Differentiable (train it through the thoughts). See :cite:`hao2024coconut`, :cite:`zhu2025superposition`.
    """
    x = _embed(_check_lm("model", model), idx)
    check_nonnegative_int("n_thoughts", n_thoughts)
    for step in range(n_thoughts + 1):
        h = x
        for block in model.blocks:
            h = block(h)
        if step < n_thoughts:
            x = torch.cat([x, h[:, -1:]], dim=1)
    return model.logits(h[:, -1])
