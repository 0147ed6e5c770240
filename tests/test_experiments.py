"""minilib.experiments: the one timing helper, and how chapters find committed benchmark results."""
import json
import time

import pytest

from minilib import experiments
from minilib.experiments import best_time, load_results, results_path


def test_best_time_is_the_fastest_call_after_warmup():
    delays = iter([0.08, 0.05, 0.001, 0.04])  # warm-up, then three timed calls
    calls = []

    def work():
        calls.append(1)
        time.sleep(next(delays))

    t = best_time(work, repeat=3, warmup=1)
    assert len(calls) == 4
    assert 0.001 <= t < 0.03  # the 1 ms call: not the 80 ms warm-up, the 40 ms call or the mean


def test_best_time_rejects_bad_repeat():
    with pytest.raises(ValueError, match="repeat"):
        best_time(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="repeat"):
        best_time(lambda: None, repeat=True)


def test_load_results_reads_the_committed_file_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook downloaded from the book runs outside chapters/
    every = sorted(experiments.RESULTS_DIR.glob("*.json"))
    assert every, f"no committed results in {experiments.RESULTS_DIR}"
    for path in every:
        assert load_results(path.stem) == json.loads(path.read_text())


def test_missing_results_name_the_file():
    with pytest.raises(FileNotFoundError, match="no-such-benchmark.json"):
        results_path("no-such-benchmark.json")
