r"""Training a model: the next-token loss, a small AdamW loop with warm-up and cosine decay, evaluation."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from minilib._checks import check_nonnegative_int, check_number, check_positive_int, require_tensor

__all__ = ["lm_loss", "train", "evaluate"]


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def lm_loss(model: nn.Module, batch) -> torch.Tensor:
    r"""Mean next-token cross-entropy $-\frac1{BT}\sum \log p(y_{bt} \mid x_{b,\le t})$ in nats; targets ``-100`` are ignored."""
    x, y = batch
    logits = model(x)
    require_tensor("targets", y)
    if y.shape != logits.shape[:-1]:
        raise ValueError(f"batch targets must have the shape of the inputs' logits without the vocabulary, "
                         f"{tuple(logits.shape[:-1])}, got targets {tuple(y.shape)}")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


def train(model: nn.Module, batches: Iterable, *, steps: int, lr: float, weight_decay: float = 0.1,
          warmup_steps: int = 0, grad_clip: float | None = 1.0,
          loss_fn: Callable[[nn.Module, object], torch.Tensor] = lm_loss, progress: bool = True) -> list[float]:
    r"""Train with AdamW, linear warm-up then cosine decay to 10% of ``lr``; returns the loss of every step.

    ``batches`` yields whatever ``loss_fn(model, batch)`` takes (default: ``(x, y)`` for :func:`lm_loss`). A model
    with an ``aux_loss()`` method (:meth:`~minilib.models.TransformerLM.aux_loss`: mixture-of-experts balancing) has
    it added to the loss it minimises; the returned losses are ``loss_fn``'s alone. Matrices are weight-decayed,
    vectors and parameters marked ``_no_weight_decay = True`` (an SSM's $A$) are not.
    See :cite:`loshchilov2019adamw`.
    """
    _require_module(model)
    check_positive_int("steps", steps)
    check_number("lr", lr, positive=True)
    check_nonnegative_int("warmup_steps", warmup_steps)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2 and not getattr(p, "_no_weight_decay", False)]
    no_decay = [p for p in model.parameters() if p.requires_grad and (p.ndim < 2 or getattr(p, "_no_weight_decay", False))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_frac = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * progress_frac)).item())

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses, batch_iter = [], iter(batches)
    bar = tqdm(range(steps), disable=not progress, desc="train")
    for _ in bar:
        loss = loss_fn(model, next(batch_iter))
        aux = model.aux_loss() if callable(getattr(model, "aux_loss", None)) else 0.0
        opt.zero_grad(set_to_none=True)
        (loss + aux).backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, n_batches: int, loss_fn=lm_loss) -> float:
    """Mean of ``loss_fn`` over ``n_batches`` batches, in eval mode."""
    check_positive_int("n_batches", n_batches)
    was_training = model.training
    model.eval()
    it = iter(batches)
    total = sum(loss_fn(model, next(it)).item() for _ in range(n_batches)) / n_batches
    model.train(was_training)
    return total
