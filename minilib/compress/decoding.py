r"""Draft-and-verify (speculative) decoding: a cheap model drafts, the large model checks all drafts in one pass.

Models are callables ``logits_fn(ids (1, T) long) -> logits (1, T, V)`` (e.g. a
:class:`~minilib.models.TransformerLM` in eval mode), so this family needs no model class.
"""
from __future__ import annotations

from typing import Callable

import torch

from minilib._checks import check_flag, check_nonnegative_int, check_positive_int, require_tensor

__all__ = ["speculative_accept", "draft_verify_generate"]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def speculative_accept(p: torch.Tensor, q: torch.Tensor, token: int, u: float) -> tuple[bool, torch.Tensor]:
    r"""The acceptance rule that keeps the target distribution: accept a draft ``token`` $x \sim q$ with probability $\min(1, p_x/q_x)$.

    $$ \text{accept if } u < \frac{p(x)}{q(x)}, \qquad \text{else resample from } \;
       r(y) = \frac{\max(0,\ p(y) - q(y))}{\sum_z \max(0,\ p(z) - q(z))} $$

    ``p, q (V,)`` target and draft probabilities, ``u`` uniform in $[0, 1)$. Returns ``(accepted, r)``: on
    acceptance ``r`` is ``p`` itself (unused), on rejection the residual distribution. The token that comes out
    is then distributed exactly as $p$. See :cite:`lim2025hybrid`.
    """
    require_tensor("p", p, ndim=1, floating=True)
    require_tensor("q", q, ndim=1, floating=True)
    if p.shape != q.shape:
        raise ValueError(f"p {tuple(p.shape)} and q {tuple(q.shape)} must have the same shape")
    if not 0 <= check_nonnegative_int("token", token) < p.shape[0]:
        raise ValueError(f"token must be in [0, V={p.shape[0]}), got {token}")
    if q[token] > 0 and u < p[token] / q[token]:
        return True, p
    residual = (p - q).clamp_min(0)
    total = residual.sum()
    return False, residual / total if total > 0 else p


def _pick(logits: torch.Tensor, greedy: bool, generator) -> int:
    if greedy:
        return int(logits.argmax())
    return int(torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=generator))


@torch.no_grad()
def draft_verify_generate(target: LogitsFn, draft: LogitsFn, prompt: torch.Tensor, n_new: int, *, k: int = 4,
                          greedy: bool = True, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    r"""Generate ``n_new`` tokens after ``prompt`` with draft-and-verify decoding.

    Each round the draft proposes ``k`` tokens one by one; the target scores prompt + drafts in **one** forward
    pass and keeps the drafts up to the first it disagrees with, which it replaces by its own token (or, when all
    ``k`` pass, adds one more of its own). Greedy: a draft passes if it equals the target's argmax, so the output
    is exactly the target's greedy decoding. Sampled (``greedy=False``): :func:`speculative_accept` with
    temperature 1, so every token is distributed as the target's sampling would give. Each round costs one
    target pass and yields between 1 and $k+1$ tokens.
    ``prompt (T0,)`` long -> ``(ids (T0 + n_new,), stats)`` with ``stats = dict(target_calls, draft_calls,
    drafted, accepted)``. No caching: every call reruns the whole prefix (the count of passes is the point).
    See :cite:`lim2025hybrid`.
    """
    require_tensor("prompt", prompt, ndim=1)
    if prompt.is_floating_point() or prompt.numel() == 0:
        raise ValueError(f"prompt must be a non-empty 1-d tensor of token ids, got dtype {prompt.dtype}, shape {tuple(prompt.shape)}")
    check_nonnegative_int("n_new", n_new)
    check_positive_int("k", k)
    check_flag("greedy", greedy)
    for name, fn in (("target", target), ("draft", draft)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable (ids (1, T) -> logits (1, T, V)), got {type(fn).__name__}")
    ids = prompt.tolist()
    goal = len(ids) + n_new
    stats = dict(target_calls=0, draft_calls=0, drafted=0, accepted=0)
    while len(ids) < goal:
        steps = min(k, goal - len(ids) - 1)
        proposal, draft_probs = [], []
        for _ in range(steps):
            logits = draft(torch.tensor([ids + proposal]))[0, -1]
            stats["draft_calls"] += 1
            proposal.append(_pick(logits, greedy, generator))
            draft_probs.append(torch.softmax(logits.double(), -1))
        target_logits = target(torch.tensor([ids + proposal]))[0, len(ids) - 1:]
        stats["target_calls"] += 1
        stats["drafted"] += steps
        for i, token in enumerate(proposal):
            if greedy:
                ok, fallback = token == int(target_logits[i].argmax()), None
            else:
                u = float(torch.rand((), generator=generator, dtype=torch.float64))
                ok, fallback = speculative_accept(torch.softmax(target_logits[i].double(), -1), draft_probs[i], token, u)
            if not ok:
                ids.append(int(target_logits[i].argmax()) if greedy
                           else int(torch.multinomial(fallback, 1, generator=generator)))
                break
            ids.append(token)
            stats["accepted"] += 1
        else:
            ids.append(_pick(target_logits[len(proposal)], greedy, generator))
    return torch.tensor(ids, dtype=prompt.dtype), stats
