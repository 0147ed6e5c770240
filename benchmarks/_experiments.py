"""The one command line every benchmark runs through: run, check the claims, then save with provenance.

    python benchmarks/<name>.py                  # every experiment, claims checked, results saved
    python benchmarks/<name>.py --only NAME      # one experiment; the file keeps the others
    python benchmarks/<name>.py --quick          # tiny sizes, nothing checked or saved unless --out is given

Each experiment is a pair ``(run, check)``: ``run(quick)`` returns a JSON-able dict, ``check(result)``
asserts the claim. A result is written only after its check passed, so a failed claim never
overwrites a committed number. Every saved result records how it was made: the command, the git
commit, the date, Python, torch and NumPy versions, the torch thread count and its wall/CPU seconds.
``--jobs N`` spreads the independent runs an experiment hands to :func:`map_runs` over ``N`` processes.
Files a run saves beside its JSON (figures, weights) go to :func:`artifact_path`, so ``--quick`` never
touches the committed ones.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from minilib.experiments import RESULTS_DIR  # the one place that knows where committed results live

ROOT = Path(__file__).resolve().parents[1]

Experiment = tuple[Callable[[bool], dict], Callable[[dict], None]]

_artifact_dir = RESULTS_DIR


def artifact_path(filename: str) -> Path:
    """Where a run saves a file beside its JSON (a figure, model weights): the results folder, or, for
    ``--quick`` and ``--out``, the folder of ``--out`` (a temporary one when ``--quick`` has no ``--out``)."""
    _artifact_dir.mkdir(parents=True, exist_ok=True)
    return _artifact_dir / filename


def downsample(values, n: int = 50) -> list[float]:
    """``n`` window means of a training curve, rounded, so the JSON stays small."""
    chunks = np.array_split(np.asarray(values, dtype=float), min(n, len(values)))
    return [round(float(c.mean()), 4) for c in chunks]


def seed_spread(values) -> dict:
    """Per-seed values with their mean, sample standard deviation (``ddof=1``, the spread), min and max."""
    v = np.asarray(values, dtype=float)
    return dict(per_seed=v.tolist(), mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                min=float(v.min()), max=float(v.max()))


def seed_difference(differences) -> dict:
    """Per-seed differences as :func:`seed_spread`, plus ``established``: |mean| > spread and one sign on every seed."""
    d = seed_spread(differences)
    d["established"] = bool(abs(d["mean"]) > d["std"] and (d["min"] > 0 or d["max"] < 0))
    return d


def paired_difference(a, b) -> dict:
    """:func:`seed_difference` of ``a - b``, seed by seed."""
    return seed_difference(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked code differs from it (``unknown`` outside git).

    Changed files under ``benchmarks/results/`` don't count: an earlier ``--only`` run rewrote them.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
        return commit + ("+dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """The CPU model, its logical core count and the OS, e.g. ``"AMD EPYC 7B13, 2 CPUs, Linux x86_64"``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"


_jobs = 1
_task = None  # the function map_runs spreads; forked workers inherit it, so it may be a closure


def map_runs(fn: Callable, items: list[tuple]) -> list:
    """``[fn(*item) for item in items]``, in order, spread over the ``--jobs`` processes (forked, one torch thread
    each). Each run must seed its own random state: a run gives the same numbers in whichever process it lands."""
    if _jobs == 1 or len(items) < 2:
        return [fn(*item) for item in items]
    global _task
    _task = fn
    pool = multiprocessing.get_context("fork").Pool(min(_jobs, len(items)))
    try:
        return pool.starmap(_run_task, items, chunksize=1)
    finally:
        pool.close()
        pool.join()  # joined workers add their CPU time to os.times().children_*


def map_seeds(fn: Callable, names: list, seeds: list) -> dict:
    """``{name: [fn(name, seed) for seed in seeds]}`` for every name, the runs spread by :func:`map_runs`."""
    units = [(name, seed) for name in names for seed in seeds]
    done = dict(zip(units, map_runs(fn, units)))
    return {name: [done[name, seed] for seed in seeds] for name in names}


def _run_task(*item):
    return _task(*item)


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished workers."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def provenance(threads: int, jobs: int = 1) -> dict:
    """How a result was made: command line, commit, UTC date, machine, versions, torch threads and processes."""
    script = Path(sys.argv[0]).resolve()
    script = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return {"command": " ".join(["python", str(script), *sys.argv[1:]]), "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "threads": threads, **({"jobs": jobs} if jobs > 1 else {})}


def run_experiments(experiments: dict[str, Experiment], *, name: str, description: str,
                    report: Callable[[str, dict], str], argv=None) -> dict:
    """Run ``experiments`` (name -> (run, check)), or the one named by ``--only``; save to ``results/<name>.json``.

    Returns the results dict (also when nothing is saved, as with ``--quick``).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(experiments), help="run one experiment")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes to exercise the code path; claims are not checked, nothing is saved unless --out")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS_DIR}/{name}.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the saved results used 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes for the runs an experiment spreads with map_runs (one per core)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    global _jobs
    _jobs = args.jobs
    out = args.out if args.out is not None or args.quick else RESULTS_DIR / f"{name}.json"
    global _artifact_dir
    _artifact_dir = out.parent if out is not None else Path(tempfile.mkdtemp(prefix=f"{name}-quick-"))
    torch.set_num_threads(args.threads)
    results = json.loads(out.read_text()) if args.only and out is not None and out.exists() else {}
    made_by = provenance(args.threads, args.jobs)  # read before running: the code that ran is the code checked out now
    for key in [args.only] if args.only else experiments:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        run, check = experiments[key]
        r = run(args.quick)
        r["seconds"] = round(time.perf_counter() - start, 1)
        r["cpu_seconds"] = round(_cpu_seconds() - cpu_start, 1)  # all threads and workers; wall time on a busy machine is longer
        r["provenance"] = made_by
        print(report(key, r), f"[{r['seconds']} s wall, {r['cpu_seconds']} s CPU]", flush=True)
        if not args.quick:
            check(r)
        results[key] = r
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n")
    return results
