r"""Depth by repetition: one block applied many times (looped, depth-recurrent, recursive and AlgoFormer stacks).

A *looped* Transformer reuses one block's weights at every step of depth, so depth becomes a run-time knob:
more loops cost more compute but no more parameters. Every ``block`` here is any module mapping
``(B, T, d_model) -> (B, T, d_model)`` (a :class:`minilib.models.Block`, a :class:`minilib.vision.EncoderBlock`, ...).
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import check_flag, check_number, check_positive_int, require_tensor
from minilib.attention import sdpa

__all__ = ["LoopedTransformer", "UnrolledStack", "DepthRecurrent", "AlgoFormer", "recursive_forward", "group_sliced_attention"]


def _check_block(name: str, block) -> nn.Module:
    if not isinstance(block, nn.Module):
        raise TypeError(f"{name} must be an nn.Module mapping (B, T, d_model) -> (B, T, d_model), got {type(block).__name__}")
    return block


class LoopedTransformer(nn.Module):
    r"""One block applied ``n_loops`` times with tied weights, optionally re-injecting the input every loop.

    $$ h_0 = 0,\quad h_t = f(h_{t-1} + x)\ \ (t = 1..n) \qquad\text{(input injection)}; \qquad
       h_0 = x,\quad h_t = f(h_{t-1}) \ \ \text{(without)} $$

    ``x (B, T, d_model) -> h_n`` of the same shape; ``forward(x, n_loops=m)`` runs ``m`` loops instead (more
    loops at test time for larger problems). The parameters are those of ``block`` alone. See
    :cite:`yang2024looped`.
    """

    def __init__(self, block: nn.Module, n_loops: int, *, input_injection: bool = True):
        super().__init__()
        self.block = _check_block("block", block)
        self.n_loops = check_positive_int("n_loops", n_loops)
        self.input_injection = check_flag("input_injection", input_injection)

    def forward(self, x: torch.Tensor, *, n_loops: int | None = None) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        n = self.n_loops if n_loops is None else check_positive_int("n_loops", n_loops)
        h = torch.zeros_like(x) if self.input_injection else x
        for _ in range(n):
            h = self.block(h + x if self.input_injection else h)
        return h

    def unroll(self) -> "UnrolledStack":
        """The equivalent explicit stack: ``n_loops`` layers that are all this one block (weights tied)."""
        return UnrolledStack([self.block] * self.n_loops, input_injection=self.input_injection)


class UnrolledStack(nn.Module):
    """An explicit stack of layers ``layers[0], ..., layers[n-1]`` (possibly the same module), each fed the input again
    when ``input_injection``; what :meth:`LoopedTransformer.unroll` returns."""

    def __init__(self, layers, *, input_injection: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.input_injection = check_flag("input_injection", input_injection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x) if self.input_injection else x
        for layer in self.layers:
            h = layer(h + x if self.input_injection else h)
        return h


class DepthRecurrent(nn.Module):
    r"""Depth recurrence in latent space with a LayerScale-damped, identity-biased update.

    $$ h_0 = x,\qquad h_t = h_{t-1} + \gamma \odot \big(f(h_{t-1}) - h_{t-1}\big),\quad t = 1..T $$

    ``f`` is a residual block (so $f(h) - h$ is its update) and $\gamma \in \mathbb R^{d}$ starts at
    ``layerscale_init``: at initialisation each step is close to the identity, so deep unrolls train stably; the
    loss reads only $h_T$. ``x (B, T, d_model) -> h_T``; ``forward(x, n_steps=m)`` thinks for ``m`` steps.
    ``return_all=True`` returns the list $[h_1, \dots, h_T]$. See :cite:`depthrecurrent2026`.
    """

    def __init__(self, block: nn.Module, d_model: int, n_steps: int, *, layerscale_init: float = 0.1):
        super().__init__()
        self.block = _check_block("block", block)
        check_positive_int("d_model", d_model)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.gamma = nn.Parameter(torch.full((d_model,), check_number("layerscale_init", layerscale_init, positive=True)))

    def forward(self, x: torch.Tensor, *, n_steps: int | None = None, return_all: bool = False):
        require_tensor("x", x, ndim=3, floating=True)
        n = self.n_steps if n_steps is None else check_positive_int("n_steps", n_steps)
        h, states = x, []
        for _ in range(n):
            h = h + self.gamma * (self.block(h) - h)
            states.append(h)
        return states if return_all else h


class AlgoFormer(nn.Module):
    r"""AlgoFormer: a pre-transformer, a looped transformer run ``n_loops`` times, then a post-transformer.

    $$ p = \operatorname{Pre}(x),\quad h_t = \operatorname{Loop}(h_{t-1} + p)\ (h_0 = 0,\ t = 1..n),\quad
       y = \operatorname{Post}(h_n) $$

    The pre-transformer prepares the data (features), the looped one runs the iterative algorithm, the
    post-transformer reads the answer out. ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`gao2024algoformer`.
    """

    def __init__(self, pre: nn.Module, looped: nn.Module, post: nn.Module, n_loops: int):
        super().__init__()
        self.pre, self.post = _check_block("pre", pre), _check_block("post", post)
        self.loop = LoopedTransformer(looped, n_loops, input_injection=True)

    def forward(self, x: torch.Tensor, *, n_loops: int | None = None) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        return self.post(self.loop(self.pre(x), n_loops=n_loops))


def recursive_forward(blocks, x: torch.Tensor, n_recursions: int) -> torch.Tensor:
    r"""Recursive blocks: each block applied ``n_recursions`` times in a row with its own (shared) weights.

    $$ h \leftarrow f_\ell^{\,r}(h)\quad \text{for } \ell = 1..L $$

    with ``blocks`` $= [f_1, \dots, f_L]$.

    ``L`` blocks then compute like ``L * n_recursions`` layers with the parameters of ``L``.
    ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`shen2022sliced`.
    """
    require_tensor("x", x, ndim=3, floating=True)
    check_positive_int("n_recursions", n_recursions)
    if not isinstance(blocks, (list, tuple, nn.ModuleList)) or not blocks:
        raise TypeError(f"blocks must be a non-empty list of modules, got {type(blocks).__name__}")
    for block in blocks:
        for _ in range(n_recursions):
            x = block(x)
    return x


def group_sliced_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_groups: int) -> torch.Tensor:
    r"""Sliced group self-attention: the ``N`` tokens split into ``n_groups`` contiguous groups, each attending within itself.

    $$ O_g = \operatorname{softmax}(Q_g K_g^\top / \sqrt D)\, V_g,\qquad g = 1..G $$

    The score work falls from $N^2 D$ to $N^2 D / G$ multiply-adds (the group size ``N / G``; ``N`` must be a
    multiple of ``n_groups``). SReT slices the extra recursions this way to pay less for them.
    ``q, k, v (B, H, N, D) -> (B, H, N, D)``, non-causal. See :cite:`shen2022sliced`.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t, ndim=4, floating=True)
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"q, k, v must share one shape (B, H, N, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    check_positive_int("n_groups", n_groups)
    B, H, N, D = q.shape
    if N % n_groups:
        raise ValueError(f"the number of tokens N={N} must be a multiple of n_groups={n_groups}")

    def grouped(t):  # each group becomes a head of its own
        return t.reshape(B, H * n_groups, N // n_groups, D)

    return sdpa(grouped(q), grouped(k), grouped(v)).reshape(B, H, N, D)
