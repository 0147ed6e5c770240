"""Every benchmark runs through the shared harness: its --quick path runs end to end and records provenance.

The full runs take minutes each (`make bench`); --quick uses tiny sizes, checks no claim and writes only
to the file given with --out, never to the committed results.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
QUICK_BUDGET_S = 120


def test_every_benchmark_uses_the_harness():
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert "run_experiments(" in text, f"{script.name} does not run through benchmarks/_experiments.run_experiments"
        assert "argparse" not in text, f"{script.name} parses its own arguments"
        assert "RESULTS_DIR" not in text and '"results"' not in text, (
            f"{script.name} names the results folder itself; save through run_experiments and artifact_path")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_quick_run(script, tmp_path):
    out = tmp_path / f"{script.stem}.json"
    committed = {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=2 * QUICK_BUDGET_S)
    seconds = time.perf_counter() - start
    print(f"{script.name} --quick: {seconds:.1f} s")
    assert result.returncode == 0, f"{script.name} --quick failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert seconds < QUICK_BUDGET_S, f"{script.name} --quick took {seconds:.0f} s > {QUICK_BUDGET_S} s"
    results = json.loads(out.read_text())
    experiments = {k: v for k, v in results.items() if isinstance(v, dict) and "provenance" in v}
    assert experiments, f"{script.name} saved no experiment with provenance"
    for name, r in experiments.items():
        assert {"command", "commit", "date", "machine", "python", "torch", "threads"} <= set(r["provenance"]), name
    after = {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()}
    changed = sorted(p.name for p in set(after) | set(committed) if after.get(p) != committed.get(p))
    assert not changed, f"{script.name} --quick changed committed results: {changed}"


def test_seed_summaries_match_the_statistics_module():
    import statistics

    from benchmarks._experiments import paired_difference, seed_difference, seed_spread

    values = [0.31, 0.27, 0.35]
    s = seed_spread(values)
    assert s["per_seed"] == values and s["min"] == 0.27 and s["max"] == 0.35
    assert s["mean"] == pytest.approx(statistics.mean(values)) and s["std"] == pytest.approx(statistics.stdev(values))
    assert seed_spread([2.0])["std"] == 0.0
    assert seed_difference([0.5, 0.6, 0.4])["established"]  # mean 0.5 > spread 0.1, every seed positive
    assert not seed_difference([0.5, -0.1, 0.4])["established"]  # one seed of the other sign
    assert not seed_difference([0.05, 0.3, 0.01])["established"]  # mean 0.12 inside its spread 0.16
    d = paired_difference([3.0, 4.0], [1.0, 1.5])
    assert d["per_seed"] == [2.0, 2.5] and d["established"]


def test_runs_spread_over_processes_give_the_same_numbers(tmp_path):
    """``--jobs 2`` forks workers for the zoo's (row, seed) runs: every accuracy equals the one-process run's, and
    the provenance says how many processes ran."""
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}.json"
        proc = subprocess.run([sys.executable, "benchmarks/zoo.py", "--quick", "--only", "mqar", "--jobs", str(jobs),
                               "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=2 * QUICK_BUDGET_S)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[jobs] = json.loads(out.read_text())["mqar"]
    one, two = results[1], results[2]
    assert len(one["rows"]) > 1 and one["rows"].keys() == two["rows"].keys()
    for row, r in one["rows"].items():
        for key, value in r.items():
            if key != "train_seconds":
                assert two["rows"][row][key] == value, (row, key)
    assert "jobs" not in one["provenance"] and two["provenance"]["jobs"] == 2


def test_map_seeds_gathers_each_names_runs_in_seed_order(monkeypatch):
    import os

    from benchmarks import _experiments

    def run(name, seed):
        return name, seed, os.getpid()

    for jobs in (1, 2):
        monkeypatch.setattr(_experiments, "_jobs", jobs)
        done = _experiments.map_seeds(run, ["b", "a"], [3, 1, 2])
        assert list(done) == ["b", "a"]
        assert {name: [r[:2] for r in runs] for name, runs in done.items()} == {
            "b": [("b", 3), ("b", 1), ("b", 2)], "a": [("a", 3), ("a", 1), ("a", 2)]}
        pids = {r[2] for runs in done.values() for r in runs}
        assert (pids == {os.getpid()}) if jobs == 1 else (os.getpid() not in pids)


def test_jobs_must_be_positive():
    proc = subprocess.run([sys.executable, "benchmarks/zoo.py", "--quick", "--jobs", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--jobs must be at least 1, got 0" in proc.stderr
