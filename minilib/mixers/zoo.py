r"""The MetaFormer comparison: every mixer in the same skeleton, one parameter budget, three small tasks.

- ``digits``: scikit-learn's 8x8 digits cut into 2x2 patches, 16 tokens on a 4x4 grid, 10 classes;
- ``bigrams``: which of four bigrams occurs most often in a random sequence of 4 token ids: it needs each token
  to see its neighbour, in order (local mixing);
- ``recall``: tokens that each hold a (key, value) pair, then a query key; the class is the value bound to the
  query, read at the last token. It needs content-based retrieval, which a fixed mixing matrix lacks.

:func:`build_classifier` makes a :class:`~minilib.mixers.MetaFormer` around one of :data:`ZOO`; its channel
MLP's width is set by :func:`matched_d_ff` so every model holds about the same number of parameters as the
attention model. :func:`train_classifier` trains it with :func:`minilib.models.train`-style AdamW and returns the
test accuracy. See :cite:`yu2022metaformer`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_positive_int, check_token_ids
from minilib.data import LISTOPS_TOKENS, digits_split, labelled_batches, lra_listops
from minilib.experiments import count_parameters
from minilib.mixers.block import AttentionMixer, BidirectionalMixer, MetaFormer
from minilib.mixers.fourier import AFFMixer, FourierMixer
from minilib.mixers.local import DepthwiseConvMixer, FFNifiedAttention, IdentityMixer, PoNetMixer, PoolMixer
from minilib.mixers.mlp import NiNformerMixer, TokenMLPMixer
from minilib.mixing import TokenMixer
from minilib.ssm import MambaMixer, S4DMixer
from minilib.vision import PatchEmbedding

__all__ = ["TASKS", "EXTRA_TASKS", "BIGRAMS", "Task", "TokenEmbedding", "ZOO", "make_task", "build_classifier", "matched_d_ff", "train_classifier"]


TASKS = ("digits", "bigrams", "recall")
#: Tasks outside the MetaFormer comparison, for single mixers: mini-ListOps (PoNet's long-range claim).
EXTRA_TASKS = ("listops",)


@dataclass
class Task:
    """A sequence-classification task: train/test tensors, how to embed them, and where the classifier reads."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    seq_len: int
    n_classes: int
    readout: str
    vocab_size: int | None = None  # token tasks; None for images
    grid: tuple[int, int] | None = None

    def embedding(self, d_model: int) -> nn.Module:
        if self.vocab_size is None:
            return PatchEmbedding(8, 2, d_model)
        return TokenEmbedding(self.vocab_size, self.seq_len, d_model)


class TokenEmbedding(nn.Module):
    """Token plus learned position embeddings: ``idx (B, L)`` -> ``(B, L, d_model)``."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("d_model", d_model)):
            check_positive_int(name, value)
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_token_ids("idx", idx, ndim=2, vocab_size=self.tok.num_embeddings)
        if idx.shape[1] > self.pos.shape[0]:
            raise ValueError(f"idx {tuple(idx.shape)} is longer than seq_len={self.pos.shape[0]}")
        return self.tok(idx) + self.pos[: idx.shape[1]]


#: The compared token mixers: name -> ``mixer(d_model, task)``, every one non-causal, as in an encoder; chapter 06's
#: SSMs (S4D, Mamba, ``expand=1``) read the sequence both ways, one set of weights for both directions, through
#: :class:`~minilib.mixers.BidirectionalMixer`.
ZOO: dict[str, Callable[[int, Task], TokenMixer]] = {
    "identity": lambda d, task: IdentityMixer(causal=False),
    "pool": lambda d, task: PoolMixer(3, causal=False, grid=task.grid),
    "fourier": lambda d, task: FourierMixer(),
    "aff": lambda d, task: AFFMixer(d, hidden=d // 4, causal=False),
    "ponet": lambda d, task: PoNetMixer(d, segment=4, causal=False),
    "token_mlp": lambda d, task: TokenMLPMixer(task.seq_len, causal=False),
    "dwconv": lambda d, task: DepthwiseConvMixer(d, 3, causal=False),
    "ffnified": lambda d, task: FFNifiedAttention(d, 7, causal=False),
    "ninformer": lambda d, task: NiNformerMixer(d, task.seq_len, causal=False),
    "s4d": lambda d, task: BidirectionalMixer(S4DMixer(d, expand=1)),
    "mamba": lambda d, task: BidirectionalMixer(MambaMixer(d, expand=1)),
    "attention": lambda d, task: AttentionMixer(d, 2),
}


BIGRAMS = ((0, 1), (1, 2), (2, 3), (3, 0))


def _bigrams(n: int, *, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences over 4 token ids; the class is the bigram of :data:`BIGRAMS` seen most often (ties redrawn)."""
    xs, ys, have = [], [], 0
    while have < n:
        x = torch.randint(0, 4, (2 * n, seq_len), generator=generator)
        counts = torch.stack([((x[:, :-1] == a) & (x[:, 1:] == b)).sum(1) for a, b in BIGRAMS], 1)
        top = counts.topk(2, dim=1).values
        keep = top[:, 0] > top[:, 1]
        xs.append(x[keep])
        ys.append(counts[keep].argmax(1))
        have += int(keep.sum())
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _recall(n: int, *, n_pairs: int, n_keys: int, n_values: int, generator: torch.Generator):
    """``n_pairs`` (key, value) tokens, id ``key * n_values + value`` with distinct keys, then a query token
    ``n_keys * n_values + key``; the class is the queried key's value."""
    keys = torch.rand(n, n_keys, generator=generator).argsort(1)[:, :n_pairs]
    values = torch.randint(0, n_values, (n, n_pairs), generator=generator)
    pick = torch.randint(0, n_pairs, (n, 1), generator=generator)
    x = torch.cat([keys * n_values + values, n_keys * n_values + keys.gather(1, pick)], dim=1)
    return x, values.gather(1, pick)[:, 0]


def make_task(name: str, *, seed: int = 0, n_train: int = 4000, n_test: int = 1000) -> Task:
    """``"digits"`` (1 437 train / 360 test images, 16 patch tokens), ``"bigrams"`` (length 24, 4 classes) or
    ``"recall"`` (8 pairs of 16 keys and 8 values, length 9, 8 classes) or ``"listops"`` (mini-ListOps, length 64,
    10 classes, :func:`~minilib.data.lra_listops`), drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    if name == "digits":
        train, test = digits_split(n_test=360, seed=seed)
        return Task(name, train, test, seq_len=16, n_classes=10, readout="mean", grid=(4, 4))
    if name == "bigrams":
        train, test = (_bigrams(n, seq_len=24, generator=g) for n in (n_train, n_test))
        return Task(name, train, test, seq_len=24, n_classes=4, readout="mean", vocab_size=4)
    if name == "recall":
        train, test = (_recall(n, n_pairs=8, n_keys=16, n_values=8, generator=g) for n in (n_train, n_test))
        return Task(name, train, test, seq_len=9, n_classes=8, readout="last", vocab_size=16 * 8 + 16)
    if name == "listops":
        train, test = (lra_listops(n, seq_len=64, generator=g) for n in (n_train, n_test))
        train, test = ((b.inputs, b.targets[:, -1]) for b in (train, test))
        return Task(name, train, test, seq_len=64, n_classes=10, readout="last", vocab_size=len(LISTOPS_TOKENS))
    raise ValueError(f"name must be one of {TASKS + EXTRA_TASKS}, got {name!r}")


def build_classifier(mixer: str, task: Task, *, d_model: int = 32, n_layers: int = 2, d_ff: int = 64,
                     shorten: dict[int, int] | None = None) -> MetaFormer:
    """A :class:`~minilib.mixers.MetaFormer` for ``task`` with the mixer ``ZOO[mixer]`` in every block
    (``shorten``: see :class:`~minilib.mixers.MetaFormer`)."""
    if mixer not in ZOO:
        raise ValueError(f"mixer must be one of {sorted(ZOO)}, got {mixer!r}")
    return MetaFormer(task.embedding(d_model), lambda layer: ZOO[mixer](d_model, task), d_model=d_model,
                      n_layers=n_layers, n_classes=task.n_classes, d_ff=d_ff, readout=task.readout, shorten=shorten)


def matched_d_ff(mixer: str, task: Task, target: int, *, d_model: int = 32, n_layers: int = 2) -> int:
    """The channel-MLP width at which ``build_classifier(mixer, ...)`` holds closest to ``target`` parameters
    (the count is affine in ``d_ff``, so two builds fix it)."""
    check_positive_int("target", target)
    p1, p2 = (count_parameters(build_classifier(mixer, task, d_model=d_model, n_layers=n_layers, d_ff=f))
              for f in (1, 2))
    return max(1, round(1 + (target - p1) / (p2 - p1)))


def train_classifier(model: nn.Module, task: Task, *, steps: int, lr: float = 3e-3, batch_size: int = 64,
                     seed: int = 0) -> float:
    """Train with AdamW (weight decay 0.01, cosine decay to 10 % of ``lr``) on batches of ``task.train``;
    return the accuracy on ``task.test``."""
    check_positive_int("steps", steps)
    g = torch.Generator().manual_seed(seed)
    batches = labelled_batches(*task.train, batch_size=batch_size, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.1 * lr)
    model.train()
    for _ in range(steps):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        x, y = task.test
        return (model(x).argmax(-1) == y).double().mean().item()
