r"""Pruning: unstructured masks (magnitude, activation-aware), N:M semi-structured masks, sublayer redundancy.

A mask is a bool tensor of the weight's shape, ``True`` where the weight is kept; apply it as ``w * mask``.
:func:`ast_train` trains a model under 2:4 masks that it re-selects at every step.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_number, check_positive_int, require_tensor
from minilib.compress.quant import quantized_weights

__all__ = ["magnitude_mask", "wanda_mask", "nm_mask", "ast_train", "sublayer_redundancy", "prune_output_aware"]


def _check_sparsity(sparsity) -> float:
    return check_number("sparsity", sparsity, low=0.0, high=1.0)


def _keep_largest(score: torch.Tensor, n_drop: int) -> torch.Tensor:
    """Mask of ``score (rows, cols)`` dropping the ``n_drop`` smallest entries of every row (ties: lower index kept)."""
    mask = torch.ones_like(score, dtype=torch.bool)
    if n_drop:
        order = torch.sort(score, dim=-1, stable=True, descending=True).indices
        mask.scatter_(-1, order[..., score.shape[-1] - n_drop:], False)
    return mask


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    r"""Unstructured magnitude pruning: drop the $\lfloor s\,n \rfloor$ entries of smallest $|w|$ in the whole tensor.

    ``w`` any shape -> bool mask of the same shape. See :cite:`zafrir2021prune`.
    """
    require_tensor("w", w, floating=True)
    sparsity = _check_sparsity(sparsity)
    flat = w.detach().abs().reshape(1, -1)
    return _keep_largest(flat, int(sparsity * flat.shape[1])).reshape(w.shape)


def wanda_mask(w: torch.Tensor, input_norms: torch.Tensor, sparsity: float) -> torch.Tensor:
    r"""Activation-aware (Wanda-style) pruning: score $S_{ij} = |W_{ij}|\,\lVert X_{:,j}\rVert_2$, dropped per output row.

    ``w (out, in)``, ``input_norms (in,)`` the norm of each input feature over calibration tokens -> bool mask
    ``(out, in)`` keeping the ``in - floor(s * in)`` largest scores of every row. See :cite:`sun2024wanda`.
    """
    require_tensor("w", w, ndim=2, floating=True)
    require_tensor("input_norms", input_norms, ndim=1, floating=True)
    if input_norms.shape[0] != w.shape[1]:
        raise ValueError(f"input_norms must have w's in={w.shape[1]} entries, got shape {tuple(input_norms.shape)}")
    sparsity = _check_sparsity(sparsity)
    score = w.detach().abs() * input_norms.detach()[None, :]
    return _keep_largest(score, int(sparsity * w.shape[1]))


def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4, *, score: torch.Tensor | None = None) -> torch.Tensor:
    r"""N:M semi-structured mask: in every run of ``m`` consecutive entries of the last dimension keep the ``n`` largest.

    $$ \text{mask}_{g} = \operatorname{top}_n\big(\{\,|w_{g,1}|, \dots, |w_{g,m}|\,\}\big) \quad \text{for each group } g $$

    ``score`` (same shape as ``w``) replaces $|w|$ as the ranking (e.g. Wanda's). ``w (..., in)`` with ``in``
    divisible by ``m`` -> bool mask, exactly ``n`` kept per group (2:4 is what sparse tensor cores run).
    See :cite:`huang2024pruning`.
    """
    require_tensor("w", w, floating=True)
    check_positive_int("n", n)
    check_positive_int("m", m)
    if n > m:
        raise ValueError(f"n must be at most m, got n={n}, m={m}")
    if w.ndim < 1 or w.shape[-1] % m:
        raise ValueError(f"the last dimension of w {tuple(w.shape)} must be divisible by m={m}")
    ranking = w.detach().abs() if score is None else score.detach()
    if ranking.shape != w.shape:
        raise ValueError(f"score must have w's shape {tuple(w.shape)}, got {tuple(ranking.shape)}")
    return _keep_largest(ranking.reshape(-1, m), m - n).reshape(w.shape)


def _masked_ste(n: int, m: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``w -> w * nm_mask(w)`` in the forward pass, the gradient passed straight through to every entry of ``w``."""
    def masked(w: torch.Tensor) -> torch.Tensor:
        return w + (w.masked_fill(~nm_mask(w, n, m), 0.0) - w).detach()
    return masked


def ast_train(student: nn.Module, teacher: nn.Module | None, batches: Iterator, *, steps: int,
              optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3, n: int = 2, m: int = 4,
              distill: float = 0.5, decay: float = 2e-4, temperature: float = 1.0,
              layer_types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> list[float]:
    r"""Adaptive sparse training: train ``student`` with N:M-masked weights, the masks re-selected at every step.

    At each step every weight $W$ of the ``layer_types`` modules is used as $W \odot M(W)$, $M$ = :func:`nm_mask`
    of the *current* dense weight, so a pruned weight that grows back re-enters the mask. The gradient reaches all
    of $W$ (straight-through) plus a decay $\lambda W \odot (1 - M)$ that pulls pruned weights towards zero, and the
    loss mixes the labels with distillation from the dense ``teacher``:
    $$ \mathcal L = (1 - lpha)\,\mathrm{CE}(z_s, y) + lpha\,	au^2\,\mathrm{KL}ig(\operatorname{softmax}(z_t/	au)
       \,ig\|\, \operatorname{softmax}(z_s/	au)ig). $$
    ``batches`` yields ``(x, y)``; ``student(x)``, ``teacher(x)`` give logits ``(..., V)`` and ``y`` is ``(...)``
    (``-100`` ignored). ``optimizer`` defaults to AdamW(``lr``, no weight decay) over ``student``'s parameters.
    ``teacher=None`` or ``distill=0`` trains on the labels alone. At the end the final masks are applied in place,
    so the returned model is N:M sparse. Returns the loss of every step. A compact form of the paper's trainer,
    whose decay and distillation weight are annealed :cite:`huang2024pruning`.
    """
    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module or None, got {type(teacher).__name__}")
    check_positive_int("steps", steps)
    check_positive_int("n", n)
    if check_positive_int("m", m) < n:
        raise ValueError(f"n must be at most m, got n={n}, m={m}")
    distill = check_number("distill", distill, low=0.0, high=1.0)
    decay = check_number("decay", decay, low=0.0)
    temperature = check_number("temperature", temperature, positive=True)
    lr = check_number("lr", lr, positive=True)
    layers = [mod for mod in student.modules() if isinstance(mod, layer_types)]
    for mod in layers:
        if mod.weight.shape[-1] % m:
            raise ValueError(f"every {layer_types} weight needs an input size divisible by m={m}, "
                             f"got {tuple(mod.weight.shape)}")
    opt = optimizer if optimizer is not None else torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    if teacher is not None:
        teacher.eval()
    losses = []
    student.train()
    for _ in range(steps):
        x, y = next(batches)
        with quantized_weights(student, _masked_ste(n, m), layer_types=layer_types):
            logits = student(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
            if teacher is not None and distill > 0:
                with torch.no_grad():
                    target = F.log_softmax(teacher(x).reshape(-1, logits.shape[-1]) / temperature, dim=-1)
                kl = F.kl_div(F.log_softmax(logits.reshape(-1, logits.shape[-1]) / temperature, dim=-1), target,
                              log_target=True, reduction="batchmean")
                loss = (1 - distill) * loss + distill * temperature ** 2 * kl
            opt.zero_grad()
            loss.backward()
        with torch.no_grad():
            for mod in layers:
                if mod.weight.grad is not None and decay:
                    mod.weight.grad.add_(decay * mod.weight * ~nm_mask(mod.weight, n, m))
        opt.step()
        losses.append(loss.item())
    student.eval()
    with torch.no_grad():
        for mod in layers:
            mod.weight.mul_(nm_mask(mod.weight, n, m))
    return losses


def sublayer_redundancy(x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    r"""Redundancy of a (sub)layer: one minus the mean cosine similarity of its input and output hidden states.

    $$ r = 1 - \frac{1}{BT}\sum_{b,t} \frac{\langle x^{\text{in}}_{bt},\, x^{\text{out}}_{bt}\rangle}
                                          {\lVert x^{\text{in}}_{bt}\rVert\,\lVert x^{\text{out}}_{bt}\rVert} $$

    ``x_in, x_out (..., d_model)`` (the residual stream before and after the sublayer) -> 0-d tensor. A score
    near 0 means the sublayer barely changes the stream and is a candidate to drop. See :cite:`he2024matters`.
    """
    require_tensor("x_in", x_in, floating=True)
    require_tensor("x_out", x_out, floating=True)
    if x_in.shape != x_out.shape:
        raise ValueError(f"x_in {tuple(x_in.shape)} and x_out {tuple(x_out.shape)} must have the same shape")
    return 1 - torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1).mean()


def prune_output_aware(hidden: torch.Tensor, w_out: torch.Tensor, n_keep: int, *, reconstruct: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Structured pruning of hidden units by their contribution to the output, then least-squares reconstruction.

    With calibration activations $H$ (``hidden (n, m)``) feeding ``w_out (d, m)``, unit $j$ adds $H_{:,j} W_{:,j}^\top$
    to the output, of norm $\lVert H_{:,j}\rVert\,\lVert W_{:,j}\rVert$; the ``n_keep`` units with the largest such
    norm stay. The next layer is then refitted to the dense output, no retraining:
    $$ W'_S = \arg\min_X \lVert H W^\top - H_S X^\top \rVert_F^2 \quad (\text{least squares}). $$
    Returns ``(keep (n_keep,) sorted unit indices, w_new (d, n_keep))``; ``reconstruct=False`` gives
    ``w_out[:, keep]``. One-shot scoring: a simplification of the paper's greedy depth-2 search
    :cite:`li2024greedy`.
    """
    require_tensor("hidden", hidden, ndim=2, floating=True)
    require_tensor("w_out", w_out, ndim=2, floating=True)
    if hidden.shape[1] != w_out.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and w_out {tuple(w_out.shape)} must share the unit count m")
    if not 1 <= check_positive_int("n_keep", n_keep) <= hidden.shape[1]:
        raise ValueError(f"n_keep must be in [1, m={hidden.shape[1]}], got {n_keep}")
    if not isinstance(reconstruct, bool):
        raise TypeError(f"reconstruct must be True or False, got {reconstruct!r}")
    hidden, w_out = hidden.detach(), w_out.detach()
    score = hidden.norm(dim=0) * w_out.norm(dim=0)
    keep = torch.sort(torch.topk(score, n_keep).indices).values
    if not reconstruct:
        return keep, w_out[:, keep].clone()
    target = (hidden @ w_out.T).double()
    solution = torch.linalg.lstsq(hidden[:, keep].double(), target, driver="gelsd").solution
    return keep, solution.T.to(w_out.dtype)
