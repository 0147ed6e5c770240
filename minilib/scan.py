r"""Inclusive prefix scans with any associative operator, in log depth.

Given elements $x_0, \dots, x_{L-1}$ and an associative $\oplus$, the inclusive scan is

$$ s_t = x_0 \oplus x_1 \oplus \dots \oplus x_t, \qquad t = 0, \dots, L-1. $$

A loop needs $L-1$ dependent steps; because $\oplus$ is associative the brackets can be moved so
that many combines run at once (Blelloch, "Prefix sums and their applications", 1990). Two classic schedules:

- Hillis-Steele: round $r$ sets $s_t \leftarrow s_{t-2^r} \oplus s_t$ for all $t \ge 2^r$;
  $\lceil\log_2 L\rceil$ rounds (depth), $O(L \log L)$ combines (work).
- Blelloch (work-efficient): combine neighbouring pairs, scan the half-length sequence of pair
  sums recursively, then fill in the even positions; $2\lceil\log_2 L\rceil$ rounds, at most
  $2L$ combines. Written here in its recursive odd/even form.

Linear recurrences $h_t = a_t h_{t-1} + b_t$ (the state-space scans of chapter 06, gated linear
attention, Aaren's attention-as-RNN) are scans over the pairs $(a_t, b_t)$ with
$(a, b) \oplus (a', b') = (a a', a' b + b')$.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["associative_scan", "ScanCounter", "SCAN_METHODS"]

SCAN_METHODS = ("blelloch", "hillis_steele", "sequential")


@dataclass
class ScanCounter:
    """Counts what a scan did: ``work`` = element combines, ``depth`` = dependent rounds of ``combine``.

    One call of ``combine`` on slices of length ``m`` adds ``m`` to ``work`` and one to ``depth``
    (every combine inside that call is independent of the others, so a parallel machine does them
    in one step).
    """

    work: int = 0
    depth: int = 0

    def add(self, length: int) -> None:
        self.work += length
        self.depth += 1


def _narrow(xs, dim, start, length):
    return tuple(x.narrow(d, start, length) for x, d in zip(xs, dim))


def _every_other(xs, dim, start):
    return tuple(x.narrow(d, start, x.shape[d] - start)[(slice(None),) * d + (slice(None, None, 2),)]
                 for x, d in zip(xs, dim))


def _cat(parts, dim):
    return tuple(torch.cat(p, dim=d) for p, d in zip(zip(*parts), dim))


def _interleave(evens, odds, dim):
    """``evens`` at positions 0, 2, 4, ... and ``odds`` at 1, 3, ...; ``evens`` may be one longer."""
    out = []
    for e, o, d in zip(evens, odds, dim):
        n = o.shape[d]
        woven = torch.stack([e.narrow(d, 0, n), o], dim=d + 1).flatten(d, d + 1)
        out.append(torch.cat([woven, e.narrow(d, n, e.shape[d] - n)], dim=d))
    return tuple(out)


class _Combine:
    """Wraps the user's operator: packs/unpacks single tensors, checks the result, counts the work."""

    def __init__(self, combine, single, dim, counter):
        self.combine, self.single, self.dim, self.counter = combine, single, dim, counter

    def __call__(self, a, b):
        out = self.combine(a[0], b[0]) if self.single else self.combine(a, b)
        out = (out,) if self.single else tuple(out)
        if len(out) != len(a) or any(o.shape != x.shape for o, x in zip(out, b)):
            raise ValueError(f"combine must return {len(a)} tensor(s) shaped like its inputs "
                             f"{[tuple(x.shape) for x in b]}, got {[tuple(o.shape) for o in out]}")
        if self.counter is not None:
            self.counter.add(b[0].shape[self.dim[0]])
        return out


def _hillis_steele(op, xs, dim, L):
    offset = 1
    while offset < L:
        moved = op(_narrow(xs, dim, 0, L - offset), _narrow(xs, dim, offset, L - offset))
        xs = _cat([_narrow(xs, dim, 0, offset), moved], dim)
        offset *= 2
    return xs


def _blelloch(op, xs, dim, L):
    if L < 2:
        return xs
    n_odd, n_even = L // 2, (L + 1) // 2
    evens, odds = _every_other(xs, dim, 0), _every_other(xs, dim, 1)
    pair_sums = op(_narrow(evens, dim, 0, n_odd), odds)  # x_{2i} (+) x_{2i+1}
    odd_prefix = _blelloch(op, pair_sums, dim, n_odd)  # s_{2i+1}
    if n_even > 1:
        rest = op(_narrow(odd_prefix, dim, 0, n_even - 1), _narrow(evens, dim, 1, n_even - 1))  # s_{2i+2}
        evens = _cat([_narrow(evens, dim, 0, 1), rest], dim)
    return _interleave(evens, odd_prefix, dim)


def _sequential(op, xs, dim, L):
    out = [_narrow(xs, dim, 0, 1)]
    for t in range(1, L):
        out.append(op(out[-1], _narrow(xs, dim, t, 1)))
    return _cat(out, dim)


_METHODS = {"blelloch": _blelloch, "hillis_steele": _hillis_steele, "sequential": _sequential}


def associative_scan(combine: Callable, elems, *, dim: int, method: str = "blelloch",
                     counter: ScanCounter | None = None):
    r"""Inclusive scan $s_t = x_0 \oplus \dots \oplus x_t$ along ``dim`` for an associative ``combine``.

    ``elems`` is one tensor or a tuple of tensors that all have the same length ``L`` along ``dim``
    (a negative ``dim`` counts from each tensor's own end, so a matrix and a vector element can
    travel together). ``combine(a, b)`` receives two elements of the same structure, ``a`` earlier
    in the sequence than ``b``, each tensor holding a slice of ``m`` positions along ``dim``, and
    returns the element $a \oplus b$ with the same shapes; it need not be commutative. Returns the
    scan with the structure and shapes of ``elems``.

    ``method``: ``"blelloch"`` (work-efficient, at most $2L$ combines in $2\lceil\log_2 L\rceil$
    rounds; the default), ``"hillis_steele"`` ($\lceil\log_2 L\rceil$ rounds, $O(L\log L)$ work)
    or ``"sequential"`` (the loop, $L-1$ rounds). A ``ScanCounter`` passed as ``counter`` records
    the work and depth.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {SCAN_METHODS}, got {method!r}")
    if not callable(combine):
        raise TypeError(f"combine must be callable, got {type(combine).__name__}")
    single = isinstance(elems, torch.Tensor)
    xs = (elems,) if single else tuple(elems) if isinstance(elems, (tuple, list)) else None
    if not xs or not all(isinstance(x, torch.Tensor) for x in xs):
        raise TypeError(f"elems must be a tensor or a non-empty tuple of tensors, got {type(elems).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if any(not -x.ndim <= dim < x.ndim for x in xs):
        raise ValueError(f"dim={dim} is out of range for elems of shapes {[tuple(x.shape) for x in xs]}")
    dims = tuple(dim % x.ndim for x in xs)
    lengths = {x.shape[d] for x, d in zip(xs, dims)}
    if len(lengths) != 1:
        raise ValueError(f"every tensor in elems must have the same length along dim={dim}, "
                         f"got shapes {[tuple(x.shape) for x in xs]}")
    L = lengths.pop()
    out = xs if L == 0 else _METHODS[method](_Combine(combine, single, dims, counter), xs, dims, L)
    return out[0] if single else tuple(out)
