"""What chapters and benchmarks share: timing a call, and finding the committed benchmark results.

A chapter reads the results that ``benchmarks/<name>.py`` saved through :func:`load_results`, never
through the working directory, so a notebook runs wherever minilib is installed from the repository.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from minilib._checks import check_positive_int

__all__ = ["RESULTS_DIR", "results_path", "load_results", "best_time"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


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


def best_time(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Fastest wall time in seconds of ``repeat`` calls of ``fn()`` after ``warmup`` untimed calls.

    The minimum, not the mean: on a shared machine, noise only ever adds time.
    """
    check_positive_int("repeat", repeat)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
