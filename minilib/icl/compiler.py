r"""Compile RASP programs (:mod:`minilib.icl.rasp`) into the weights of a Transformer, in the spirit of Tracr
:cite:`lindner2023tracr` at a small scope.

The residual stream of ``T + 1`` positions (a ``BOS`` position, then the input) holds named blocks: ``one`` (1
everywhere), ``bos`` (1 at ``BOS`` only), and one one-hot block per sequence operation over its finite value set
(tokens from ``vocab``, indices ``0..max_len-1``, a map's image of its inputs' values, a selector width's
``0..max_len``). Layers alternate attention and MLP sublayers; each node of the program is placed in the earliest
sublayer of its kind after all its inputs:

* ``map`` / ``sequence_map``: an MLP with one hidden unit per input value (pair),
  :math:`h_{ab} = \mathrm{ReLU}(x_a + x_b - 1)`, writing the one-hot of :math:`f(a, b)`;
* ``aggregate`` (categorical: each query's selected keys share one value): one head with the bilinear score
  :math:`x_q^\top W_{QK} x_k = \beta\,[\mathrm{predicate}(k, q)]` (``BOS`` scores :math:`\beta/2`, so a query that
  selects nothing reads the empty ``BOS`` value) and :math:`W_{OV}` copying the value block to the output block;
* ``selector_width``: a head where ``BOS`` scores :math:`\beta` like every selected key, so its weight is
  :math:`1/(w+1)`; :math:`W_{OV}` copies the ``bos`` flag into a scratch dimension and an MLP of step functions
  (two ReLUs per threshold between :math:`1/(w+1)` and :math:`1/(w+2)`) writes the one-hot of :math:`w`
  (a large negative weight on ``bos`` keeps it silent at ``BOS``, whose blocks stay empty).

Every head is :math:`\mathrm{softmax}(X W_{QK} X^\top) X W_{OV}` with no causal mask (RASP attends everywhere);
with :math:`\beta = 60` in float64 the unselected keys get weight below :math:`e^{-60}`, and the output is read
as the argmax of the program's block. Numerical aggregates (means of numbers, as in Dyck-1) are out of scope.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from minilib._checks import check_number, check_positive_int
from minilib.icl.rasp import SOp, Selector

__all__ = ["CompiledProgram", "compile_program"]


@dataclass
class _Head:
    """One attention head: bilinear scores ``w_qk (D, D)`` and value-output map ``w_ov (D, D)`` over the stream."""

    name: str
    w_qk: torch.Tensor
    w_ov: torch.Tensor


@dataclass
class _MLP:
    r"""One MLP: :math:`\mathrm{ReLU}(x W_1 + b_1) W_2`, ``w1 (D, H)``, ``b1 (H,)``, ``w2 (H, D)``."""

    name: str
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor


@dataclass
class _Layer:
    """One block: its attention heads (summed into the stream), then its MLPs (each reads the stream after the
    heads; they write disjoint blocks, so they are one wide MLP)."""

    heads: list[_Head] = field(default_factory=list)
    mlps: list[_MLP] = field(default_factory=list)


class CompiledProgram:
    """A RASP program as Transformer weights: :meth:`embed` a sequence, :meth:`forward` the residual stream through
    the layers, :meth:`run` both and decode the output block. Built by :func:`compile_program`."""

    def __init__(self, program: SOp, vocab: np.ndarray, max_len: int, layout: dict[str, slice],
                 values: dict[int, np.ndarray], layers: list[_Layer], block_of: dict[int, str]):
        self.program, self.vocab, self.max_len = program, vocab, max_len
        self.layout, self.values, self.layers, self._block_of = layout, values, layers, block_of
        self.width = max(s.stop for s in layout.values())

    def embed(self, sequence) -> torch.Tensor:
        """``sequence (T,)`` of vocabulary items -> the residual stream ``(T + 1, D)``: BOS, then the input."""
        x = np.asarray(sequence)
        if x.ndim != 1 or not 1 <= len(x) <= self.max_len:
            raise ValueError(f"sequence must be 1-D of length 1..max_len={self.max_len}, got shape {x.shape}")
        unknown = ~np.isin(x, self.vocab)
        if unknown.any():
            raise ValueError(f"sequence holds items outside the vocab {self.vocab.tolist()}: {x[unknown].tolist()}")
        stream = torch.zeros(len(x) + 1, self.width, dtype=torch.float64)
        stream[:, self.layout["one"]] = 1.0
        stream[0, self.layout["bos"]] = 1.0
        rows = torch.arange(1, len(x) + 1)
        if "tokens" in self.layout:
            stream[rows, self.layout["tokens"].start + torch.as_tensor(np.searchsorted(self.vocab, x))] = 1.0
        if "indices" in self.layout:
            stream[rows, self.layout["indices"].start + torch.arange(len(x))] = 1.0
        return stream

    def forward(self, stream: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Run the layers on ``stream (T + 1, D)``; returns the final stream and, per layer, each head's
        attention pattern ``(T + 1, T + 1)`` by name."""
        patterns = []
        for layer in self.layers:
            update, seen = torch.zeros_like(stream), {}
            for head in layer.heads:
                attn = torch.softmax(stream @ head.w_qk @ stream.T, dim=-1)
                update = update + attn @ stream @ head.w_ov
                seen[head.name] = attn
            stream = stream + update
            update = torch.zeros_like(stream)
            for mlp in layer.mlps:
                update = update + torch.relu(stream @ mlp.w1 + mlp.b1) @ mlp.w2
            stream = stream + update
            patterns.append(seen)
        return stream, patterns

    def block(self, stream: torch.Tensor, sop: SOp | None = None) -> torch.Tensor:
        """The one-hot block ``(T, n_values)`` of ``sop`` (default: the program) at the input positions of ``stream``."""
        node = self.program if sop is None else sop
        if id(node) not in self._block_of:
            raise ValueError(f"sop {node!r} is not part of the compiled program")
        return stream[1:, self.layout[self._block_of[id(node)]]]

    def decode(self, stream: torch.Tensor, sop: SOp | None = None) -> np.ndarray:
        """The value of ``sop`` (default: the program) at each input position: the argmax of its one-hot block."""
        node = self.program if sop is None else sop
        index = self.block(stream, node).argmax(-1).numpy()
        return self.values[id(node)][index]

    def run(self, sequence) -> np.ndarray:
        """``decode(forward(embed(sequence)))``: what :func:`minilib.icl.rasp.run` returns, computed by the weights."""
        stream, _ = self.forward(self.embed(sequence))
        return self.decode(stream)


def _sources(node: SOp) -> list[SOp]:
    out = []
    for i in node.inputs:
        out += [i.keys, i.queries] if isinstance(i, Selector) else [i]
    return out


def _scores(selector: Selector, key_values: np.ndarray, query_values: np.ndarray) -> np.ndarray:
    """``[predicate(k, q)]`` for every value pair: ``(|queries|, |keys|)``."""
    return np.asarray(selector.predicate(key_values[None, :], query_values[:, None]), dtype=bool)


def compile_program(program: SOp, vocab, max_len: int, *, beta: float = 60.0) -> CompiledProgram:
    r"""Compile ``program`` for inputs over ``vocab`` (a 1-D collection of numbers) of length up to ``max_len``.

    Supports ``tokens``, ``indices``, ``map_sop`` / ``sequence_map`` (categorical), ``aggregate`` of categorical
    values (each query's selection shares one value, as in reverse and sort) and ``selector_width``;
    ``beta`` is the attention sharpness :math:`\beta`. :cite:`lindner2023tracr,weiss2021thinking`
    """
    if not isinstance(program, SOp):
        raise TypeError(f"program must be a SOp, got {type(program).__name__}")
    vocab = np.unique(np.asarray(vocab))
    if vocab.ndim != 1 or vocab.size == 0 or not np.issubdtype(vocab.dtype, np.number):
        raise ValueError(f"vocab must be a non-empty 1-D collection of numbers, got {vocab!r}")
    check_positive_int("max_len", max_len)
    check_number("beta", beta, positive=True)

    values: dict[int, np.ndarray] = {}
    slot: dict[int, int] = {}      # sublayer: 2l = attention of layer l, 2l + 1 = its MLP; inputs at -1
    order: list[SOp] = []

    def visit(node: SOp) -> None:
        if id(node) in slot:
            return
        for s in _sources(node):
            visit(s)
        deepest = max((slot[id(s)] for s in _sources(node)), default=-1)
        if node.kind == "tokens":
            values[id(node)], slot[id(node)] = vocab, -1
        elif node.kind == "indices":
            values[id(node)], slot[id(node)] = np.arange(max_len), -1
        elif node.kind == "map":
            grids = np.meshgrid(*(values[id(i)] for i in node.inputs), indexing="ij")
            values[id(node)] = np.unique(np.asarray(node.fn(*grids)))
            slot[id(node)] = deepest + 1 if deepest % 2 == 0 else deepest + 2    # the next MLP
        elif node.kind == "aggregate":
            values[id(node)] = values[id(node.inputs[1])]
            slot[id(node)] = deepest + 1 if deepest % 2 else deepest + 2         # the next attention
        else:  # selector_width: attention, then its decoding MLP
            values[id(node)] = np.arange(max_len + 1)
            slot[id(node)] = (deepest + 1 if deepest % 2 else deepest + 2) + 1
        order.append(node)

    visit(program)
    layout: dict[str, slice] = {"one": slice(0, 1), "bos": slice(1, 2)}
    block_of: dict[int, str] = {}
    width = 2
    for node in order:
        name = node.name if node.kind in ("tokens", "indices") else f"{node.name}#{len(block_of)}"
        block_of[id(node)] = name
        layout[name] = slice(width, width + len(values[id(node)]))
        width += len(values[id(node)])
        if node.kind == "selector_width":
            layout[name + ":scratch"] = slice(width, width + 1)
            width += 1

    n_layers = (max(slot.values()) + 2) // 2
    layers = [_Layer() for _ in range(max(n_layers, 1))]
    zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731

    def one_hot_index(node: SOp, items: np.ndarray) -> np.ndarray:
        return layout[block_of[id(node)]].start + np.searchsorted(values[id(node)], items)

    for node in order:
        name, s = block_of[id(node)], slot[id(node)]
        if node.kind in ("tokens", "indices"):
            continue
        if node.kind == "map":
            ins = [values[id(i)] for i in node.inputs]
            grids = np.meshgrid(*ins, indexing="ij")
            out = np.asarray(node.fn(*grids)).ravel()
            combos = [g.ravel() for g in grids]
            hidden = len(out)
            w1, b1, w2 = zeros(width, hidden), zeros(hidden), zeros(hidden, width)
            for i, combo in zip(node.inputs, combos):
                w1[one_hot_index(i, combo), np.arange(hidden)] = 1.0
            b1[:] = 1.0 - len(node.inputs)
            w2[np.arange(hidden), one_hot_index(node, out)] = 1.0
            layers[s // 2].mlps.append(_MLP(name, w1, b1, w2))
            continue
        selector = node.inputs[0]
        keys, queries = selector.keys, selector.queries
        w_qk, w_ov = zeros(width, width), zeros(width, width)
        q_rows = one_hot_index(queries, values[id(queries)])
        k_cols = one_hot_index(keys, values[id(keys)])
        w_qk[np.ix_(q_rows, k_cols)] = torch.as_tensor(beta * _scores(selector, values[id(keys)], values[id(queries)]),
                                                       dtype=torch.float64)
        if node.kind == "aggregate":
            w_qk[layout["one"].start, layout["bos"].start] = beta / 2
            source = node.inputs[1]
            w_ov[one_hot_index(source, values[id(source)]), one_hot_index(node, values[id(source)])] = 1.0
            layers[s // 2].heads.append(_Head(name, w_qk, w_ov))
            continue
        w_qk[layout["one"].start, layout["bos"].start] = beta
        scratch = layout[name + ":scratch"].start
        w_ov[layout["bos"].start, scratch] = 1.0
        layers[s // 2].heads.append(_Head(name, w_qk, w_ov))
        # bos weight s = 1/(w+1); g_k = [s > t_k] = [w <= k] for t_k between 1/(k+1) and 1/(k+2); onehot(w) = g_w - g_{w-1}
        widths = values[id(node)]
        thresholds = (1.0 / (widths[:-1] + 1) + 1.0 / (widths[:-1] + 2)) / 2
        slope = 4.0 * (max_len + 2) ** 2      # each ramp is narrower than half the gap between neighbouring 1/(w+1)
        k = len(thresholds)
        w1, b1, w2 = zeros(width, 2 * k), zeros(2 * k), zeros(2 * k, width)
        w1[scratch, :] = slope
        w1[layout["bos"].start, :] = -2 * slope - 2   # silent at BOS: its block stays empty, so no query matches it
        b1[:k] = torch.as_tensor(-slope * thresholds + 0.5)
        b1[k:] = torch.as_tensor(-slope * thresholds - 0.5)
        out = one_hot_index(node, widths)
        steps = [(np.arange(k), 1.0), (np.arange(k) + k, -1.0)]   # g_k = relu(a + .5) - relu(a - .5)
        for units, sign in steps:
            w2[units, out[:-1]] += sign               # + g_w for value w ...
            w2[units, out[1:]] -= sign                # ... - g_{w-1} for value w + 1
        b_last = zeros(width)
        b_last[out[-1]] = 1.0                          # g_{max_len} = 1: the last value gets 1 - g_{max_len - 1}
        w1_const = torch.cat([w1, zeros(width, 1)], 1)
        w1_const[layout["one"].start, -1] = 1.0
        w1_const[layout["bos"].start, -1] = -1.0
        layers[s // 2].mlps.append(_MLP(name, w1_const, torch.cat([b1, zeros(1)]),
                                               torch.cat([w2, b_last[None]], 0)))
    return CompiledProgram(program, vocab, max_len, layout, values, layers, block_of)
