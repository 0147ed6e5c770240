r"""A mini RASP interpreter in NumPy: sequence operations built lazily into a dependency graph, then run.

RASP :cite:`weiss2021thinking` names what one Transformer layer can do: an element-wise ``map`` (the MLP), a
``select`` (an attention pattern: query ``q`` attends key ``k`` where ``predicate(key_k, query_q)``), an
``aggregate`` (the mean of the selected values: uniform attention) and ``selector_width`` (how many keys a query
selects). Programs are graphs of these; :func:`attention_layers` reads off how many attention layers and heads a
Transformer needs to run one (an aggregate or selector width needs its inputs computed in an earlier layer).

Typical use::

    hist = selector_width(select(tokens, tokens, EQ))
    run(hist, [3, 1, 3, 2])                 # array([2, 1, 2, 1])
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

__all__ = ["SOp", "Selector", "tokens", "indices", "map_sop", "sequence_map", "select", "aggregate",
           "selector_width", "run", "attention_layers", "EQ", "LT", "LEQ", "GT", "TRUE",
           "histogram", "double_histogram", "reverse", "sort", "dyck1"]


#: the kinds of node a program is built from
KINDS = ("tokens", "indices", "map", "aggregate", "selector_width")


class SOp:
    """A sequence operation: a node of a RASP program; :func:`run` evaluates it on an input sequence.
    Built by :func:`map_sop`, :func:`sequence_map`, :func:`aggregate` and :func:`selector_width`."""

    def __init__(self, kind: str, inputs: tuple = (), fn: Callable | None = None, name: str = ""):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.inputs, self.fn, self.name = kind, tuple(inputs), fn, name or kind

    def __repr__(self) -> str:
        return f"SOp({self.name})"


class Selector:
    """``select(keys, queries, predicate)``: a boolean ``(T_query, T_key)`` attention pattern, built lazily."""

    def __init__(self, keys: SOp, queries: SOp, predicate: Callable):
        _require("keys", keys, SOp)
        _require("queries", queries, SOp)
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
        self.keys, self.queries, self.predicate = keys, queries, predicate


#: the input tokens
tokens = SOp("tokens")
#: the positions 0..T-1
indices = SOp("indices")


def _predicate(fn: Callable) -> Callable:
    """A selector predicate on NumPy arrays (or numbers) of keys and queries, broadcast against each other."""
    @functools.wraps(fn)
    def checked(key, query):
        for name, value in (("key", key), ("query", query)):
            if not isinstance(value, (np.ndarray, np.generic, int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a NumPy array or a number, got {type(value).__name__}")
        return fn(key, query)
    return checked


@_predicate
def EQ(key, query):
    """Select keys equal to the query."""
    return key == query


@_predicate
def LT(key, query):
    """Select keys smaller than the query."""
    return key < query


@_predicate
def LEQ(key, query):
    """Select keys at most the query."""
    return key <= query


@_predicate
def GT(key, query):
    """Select keys larger than the query."""
    return key > query


@_predicate
def TRUE(key, query):
    """Select every key."""
    return np.ones(np.broadcast(key, query).shape, dtype=bool)


def _require(name, value, cls):
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


def map_sop(fn: Callable, sop: SOp, name: str = "") -> SOp:
    r"""Element-wise map (an MLP): :math:`y_t = f(x_t)`; ``fn`` acts on NumPy arrays element-wise."""
    _require("sop", sop, SOp)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return SOp("map", (sop,), fn, name)


def sequence_map(fn: Callable, a: SOp, b: SOp, name: str = "") -> SOp:
    r"""Element-wise map of two sequences (an MLP on two residual-stream features): :math:`y_t = f(a_t, b_t)`."""
    _require("a", a, SOp)
    _require("b", b, SOp)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return SOp("map", (a, b), fn, name)


def select(keys: SOp, queries: SOp, predicate: Callable) -> Selector:
    r"""The attention pattern :math:`S_{qk} = \mathrm{predicate}(\mathrm{keys}_k, \mathrm{queries}_q)`."""
    return Selector(keys, queries, predicate)


def aggregate(selector: Selector, values: SOp, name: str = "") -> SOp:
    r"""Uniform attention: :math:`y_q = \frac{1}{|\{k: S_{qk}\}|}\sum_{k: S_{qk}} v_k`, and 0 where nothing is selected."""
    _require("selector", selector, Selector)
    _require("values", values, SOp)
    return SOp("aggregate", (selector, values), None, name)


def selector_width(selector: Selector, name: str = "") -> SOp:
    r"""How many keys each query selects: :math:`y_q = |\{k : S_{qk}\}|` (one attention layer and an MLP)."""
    _require("selector", selector, Selector)
    return SOp("selector_width", (selector,), None, name)


def run(program: SOp, sequence) -> np.ndarray:
    """Evaluate ``program`` on a 1-D input ``sequence``: an array of length ``T``."""
    _require("program", program, SOp)
    x = np.asarray(sequence)
    if x.ndim != 1:
        raise ValueError(f"sequence must be 1-D, got shape {x.shape}")
    memo: dict[int, np.ndarray] = {}

    def pattern(sel: Selector) -> np.ndarray:
        return np.asarray(sel.predicate(value(sel.keys)[None, :], value(sel.queries)[:, None]), dtype=bool)

    def value(node: SOp) -> np.ndarray:
        if id(node) in memo:
            return memo[id(node)]
        if node.kind == "tokens":
            out = x
        elif node.kind == "indices":
            out = np.arange(len(x))
        elif node.kind == "map":
            out = np.asarray(node.fn(*(value(i) for i in node.inputs)))
        elif node.kind == "selector_width":
            out = pattern(node.inputs[0]).sum(-1)
        else:
            s, v = pattern(node.inputs[0]), value(node.inputs[1]).astype(float)
            width = s.sum(-1)
            out = np.where(width > 0, (s * v[None, :]).sum(-1) / np.maximum(width, 1), 0.0)
        memo[id(node)] = out
        return out

    return value(program)


def attention_layers(program: SOp) -> list[int]:
    """Heads per attention layer a Transformer needs for ``program``: ``[heads in layer 1, heads in layer 2, ...]``.

    An ``aggregate`` or ``selector_width`` sits one layer above the deepest of its inputs (keys, queries, values);
    maps run in the MLP after the layer of their inputs. :cite:`weiss2021thinking`
    """
    _require("program", program, SOp)
    depth: dict[int, int] = {}
    layer_of: dict[int, int] = {}

    def visit(node: SOp) -> int:
        if id(node) not in depth:
            sources = []
            for i in node.inputs:
                sources += [i.keys, i.queries] if isinstance(i, Selector) else [i]
            d = max((visit(s) for s in sources), default=0)
            if node.kind in ("aggregate", "selector_width"):
                d += 1
                layer_of[id(node)] = d
            depth[id(node)] = d
        return depth[id(node)]

    visit(program)
    return [sum(1 for d in layer_of.values() if d == layer) for layer in range(1, max(layer_of.values(), default=0) + 1)]


def histogram(sop: SOp = tokens) -> SOp:
    """For each token of ``sop``, how many times it occurs: ``selector_width(select(sop, sop, ==))``. 1 layer, 1 head."""
    _require("sop", sop, SOp)
    return selector_width(select(sop, sop, EQ), name="histogram")


def double_histogram(sop: SOp = tokens) -> SOp:
    """For each token of ``sop``, how many distinct tokens occur as often as it does (integer tokens, fewer than
    10^5 of them). A token's first occurrence is the one with no equal token before it; the second selector width
    counts first occurrences whose histogram equals the query's. 2 layers :cite:`weiss2021thinking`."""
    _require("sop", sop, SOp)
    hist = histogram(sop)
    key = sequence_map(lambda x, i: x + i * 1e-6, sop, indices, name="key")
    earlier_same = selector_width(select(key, key, lambda k, q: (np.round(k) == np.round(q)) & (k < q)),
                                  name="earlier_same")
    first_hist = sequence_map(lambda h, e: np.where(e == 0, h, -1), hist, earlier_same, name="first_hist")
    return selector_width(select(first_hist, hist, EQ), name="double_histogram")


def reverse(sop: SOp = tokens) -> SOp:
    """``sop`` reversed: ``length - i - 1`` via a selector width, then aggregate from that position."""
    _require("sop", sop, SOp)
    length = selector_width(select(sop, sop, TRUE), name="length")
    opposite = sequence_map(lambda i, n: n - i - 1, indices, length, name="opposite")
    return aggregate(select(indices, opposite, EQ), sop, name="reverse")


def sort(sop: SOp = tokens) -> SOp:
    """``sop`` in increasing order (ties kept in input order): each token's target position is the number of
    smaller keys, keys made distinct by adding ``i * 1e-6`` (inputs of integer tokens, fewer than 10^5 of them)."""
    _require("sop", sop, SOp)
    key = sequence_map(lambda x, i: x + i * 1e-6, sop, indices, name="key")
    target = selector_width(select(key, key, LT), name="target")
    return aggregate(select(target, indices, EQ), sop, name="sort")


def dyck1(sop: SOp = tokens) -> SOp:
    """Dyck-1 over ``sop`` with 1 = "(" and 0 = ")": 1 where the prefix up to ``t`` is balanced, else 0.

    The fraction of opens minus closes in each prefix (one uniform causal head), then whether any prefix went
    negative (a second layer). :cite:`weiss2021thinking`
    """
    _require("sop", sop, SOp)
    prefix = select(indices, indices, LEQ)
    balance = aggregate(prefix, map_sop(lambda x: 2.0 * x - 1.0, sop), name="balance")
    went_negative = aggregate(prefix, map_sop(lambda b: (b < -1e-9).astype(float), balance), name="went_negative")
    return sequence_map(lambda b, neg: ((np.abs(b) < 1e-9) & (neg == 0)).astype(int), balance, went_negative,
                        name="dyck1")
