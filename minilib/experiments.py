"""What chapters and benchmarks share: timing calls side by side, counting parameters, finding the committed
benchmark results, checking a number the prose states, recording a claim.

A chapter reads the results that ``benchmarks/<name>.py`` saved through :func:`load_results`, never
through the working directory, so a notebook runs wherever minilib is installed from the repository.
A chapter states the outcome of each paper it implements with :func:`claim`; the book's paper index is
generated from those calls (``tools/paper_index.py``). A number its prose states can be checked with
:func:`stated`, exactly as tight as the digits written.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from minilib._checks import check_nonnegative_int, check_number, check_positive_int

__all__ = ["RESULTS_DIR", "CLAIM_STATUSES", "results_path", "load_results", "best_time", "best_times", "stated",
           "about", "count_parameters", "claim"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
#: What :func:`claim` may record, with the value its ``evidence`` must have.
CLAIM_STATUSES = {"reproduced": True, "does not reproduce at toy scale": False}


def results_path(filename: str) -> Path:
    """Path of a committed results file, e.g. ``results_path("flash.json")``; raises if it is missing."""
    path = RESULTS_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(f"no committed results file {filename!r} in {RESULTS_DIR} (minilib must be "
                                "installed from a checkout of the repository, `pip install -e .`)")
    return path


def load_results(name: str) -> dict:
    """The JSON a benchmark saved: ``load_results("flash")`` reads ``benchmarks/results/flash.json``."""
    return json.loads(results_path(f"{name}.json").read_text())


def best_times(fns: Mapping[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 1,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Fastest time in seconds of each named call over ``rounds`` interleaved rounds, after ``warmup`` untimed ones.

    Within a round every call runs once, in turn, so a burst of load on a shared machine falls on all of
    them rather than on one, and their ratio stays honest. The minimum, not the mean: noise only ever adds
    time. ``clock`` is wall time by default. For single-threaded code (a chapter runs torch on one thread)
    ``time.thread_time`` is the steady choice: the CPU time of the calling thread alone, which neither
    other programs nor the other threads of this process (a Jupyter kernel's I/O and heartbeat threads)
    add to, where ``time.process_time`` counts every thread of the process.
    """
    check_positive_int("rounds", rounds)
    check_nonnegative_int("warmup", warmup)
    if not isinstance(fns, Mapping) or not fns or not all(callable(fn) for fn in fns.values()):
        raise TypeError(f"fns must be a non-empty mapping of names to callables, got {fns!r}")
    if not callable(clock):
        raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            best[name] = min(best[name], clock() - start)
    return best


def best_time(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Fastest time in seconds of ``repeat`` calls of ``fn()`` after ``warmup`` untimed calls.

    One call of :func:`best_times`; to compare two calls, time them together there, interleaved.
    """
    check_positive_int("repeat", repeat)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return best_times({"fn": fn}, rounds=repeat, warmup=warmup, clock=clock)["fn"]


def stated(value: float, text: str) -> bool:
    """Check that a number the prose states, ``text`` (e.g. ``"0.93"``, ``"26.5"``, ``"17"``), is ``value`` rounded
    to the digits written; raises ``AssertionError`` naming both otherwise, and returns ``True`` (so it also reads
    inside an ``assert ... and ...``).

    The check is exactly as tight as the prose: ``stated(0.9349, "0.93")`` holds, ``stated(0.936, "0.93")`` fails.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be the number as the prose writes it (a str), got {type(text).__name__}")
    decimals = len(text.split(".")[1]) if "." in text else 0
    if not abs(float(value) - float(text)) <= 0.5 * 10 ** -decimals + 1e-9:
        raise AssertionError(f"the prose says {text}, computed {value}")
    return True


def about(value: float, target: float, *, rel: float) -> bool:
    r"""Whether ``value`` lies within the relative tolerance ``rel`` of ``target``: $|v - t| \le \text{rel}\,|t|$.

    The tolerance is the caller's to state; it is looser than the prose's digits whenever ``rel`` exceeds half a unit
    of the last digit written, so a number the prose simply writes out is checked with :func:`stated` instead.
    """
    check_number("rel", rel, low=0.0)
    return abs(value - target) <= rel * abs(target)


def count_parameters(model: nn.Module) -> int:
    r"""Number of trainable scalars in ``model``, $\sum_p |p|$ over the parameters with ``requires_grad``.

    The one count every parameter-matched comparison uses (models, the mixer zoo, the benchmarks).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def claim(paper: str, status: str, *, section: str, function: str, test: str, evidence: bool) -> str:
    """Record in a chapter the outcome of the claim of ``paper`` (its references.bib key), checked against ``evidence``.

    ``evidence`` is the chapter's own computed verdict on the toy claim (e.g. ``speedup >= 2``): it must be
    ``True`` for ``"reproduced"`` and ``False`` for ``"does not reproduce at toy scale"``, so a status that
    disagrees with the numbers the chapter computed stops the chapter. ``section`` is the heading of the
    chapter section that shows the claim, ``function`` the dotted minilib name that implements it and
    ``test`` the pytest node that proves it; ``tools/paper_index.py`` reads these calls from the notebooks
    and the tests check that each one exists. Displays one line in the page and returns it.
    """
    if status not in CLAIM_STATUSES:
        raise ValueError(f"status must be one of {sorted(CLAIM_STATUSES)}, got {status!r}")
    for name, value in (("paper", paper), ("section", section), ("function", function), ("test", test)):
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(evidence, bool):
        evidence = bool(getattr(evidence, "item", lambda: evidence)())
    if evidence is not CLAIM_STATUSES[status]:
        raise ValueError(f"claim {paper!r}: status {status!r} disagrees with the evidence computed here ({evidence})")
    line = f"**Paper claim, {status}** ({paper}): implemented by `{function}`, proved by `{test}`."
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - minilib runs without IPython; the line is still returned
        return line
    display(Markdown(line))
    return line
