"""minilib.experiments: the one timing helper, the one parameter count, and how chapters find committed benchmark results."""
import json
import time

import pytest
import torch

from minilib import experiments, models
from minilib.experiments import about, best_time, best_times, count_parameters, load_results, results_path, stated


def test_best_time_is_the_fastest_call_after_warmup():
    delays = iter([0.08, 0.05, 0.001, 0.04])  # warm-up, then three timed calls
    calls = []

    def work():
        calls.append(1)
        time.sleep(next(delays))

    t = best_time(work, repeat=3, warmup=1)
    assert len(calls) == 4
    assert 0.001 <= t < 0.03  # the 1 ms call: not the 80 ms warm-up, the 40 ms call or the mean


def test_best_time_reads_the_clock_it_is_given():
    ticks = iter([0.0, 2.0, 10.0, 10.5, 20.0, 23.0])  # three timed calls: 2 s, 0.5 s, 3 s on this clock
    t = best_time(lambda: None, repeat=3, warmup=0, clock=lambda: next(ticks))
    assert t == 0.5
    # CPU time does not count sleeping, wall time does
    assert best_time(lambda: time.sleep(0.05), repeat=1, warmup=0, clock=time.process_time) < 0.02
    assert best_time(lambda: time.sleep(0.05), repeat=1, warmup=0) >= 0.05


def test_best_time_rejects_bad_repeat():
    with pytest.raises(ValueError, match="repeat"):
        best_time(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="repeat"):
        best_time(lambda: None, repeat=True)
    with pytest.raises(TypeError, match="clock"):
        best_time(lambda: None, clock=0.0)


def test_best_times_interleaves_the_calls_and_keeps_each_ones_fastest():
    order = []
    ticks = iter([0.0, 3.0, 3.0, 4.0, 10.0, 11.0, 11.0, 15.0])  # round 1: a 3 s, b 1 s; round 2: a 1 s, b 4 s
    t = best_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=2, warmup=1,
                   clock=lambda: next(ticks))
    assert order == ["a", "b"] * 3  # one warm-up round, then the two timed ones, turn by turn
    assert t == {"a": 1.0, "b": 1.0}


def test_thread_time_ignores_another_thread_burning_cpu():
    import threading
    stop = threading.Event()

    def burn():
        while not stop.is_set():
            sum(range(1000))

    def sleep():
        time.sleep(0.1)

    burner = threading.Thread(target=burn)
    burner.start()
    try:
        t = best_times({"sleep": sleep}, rounds=1, warmup=0, clock=time.thread_time)["sleep"]
        t_process = best_times({"sleep": sleep}, rounds=1, warmup=0, clock=time.process_time)["sleep"]
    finally:
        stop.set()
        burner.join()
    assert t < 0.02 < t_process  # the process clock counts the burning thread, the thread clock does not


def test_best_times_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rounds"):
        best_times({"a": lambda: None}, rounds=0)
    with pytest.raises(ValueError, match="warmup"):
        best_times({"a": lambda: None}, warmup=-1)
    with pytest.raises(TypeError, match="fns"):
        best_times({})
    with pytest.raises(TypeError, match="fns"):
        best_times([lambda: None])
    with pytest.raises(TypeError, match="fn must be callable"):
        best_time(None)


def test_stated_is_as_tight_as_the_digits_written():
    stated(0.9349, "0.93")
    stated(26.46, "26.5")
    stated(16.6, "17")
    stated(-0.0049, "0.00")
    for value, text in [(0.936, "0.93"), (26.56, "26.5"), (17.6, "17"), (0.94, "0.9349")]:
        with pytest.raises(AssertionError, match=f"the prose says {text}, computed {value}"):
            stated(value, text)
    with pytest.raises(TypeError, match="text"):
        stated(0.93, 0.93)
    assert stated(0.93, "0.93") is True  # so it also reads inside an assert


def test_about_is_a_relative_tolerance_the_caller_states():
    assert about(1.009, 1.0, rel=0.01) and about(-0.995, -1.0, rel=0.01) and not about(1.011, 1.0, rel=0.01)
    assert about(0.0, 0.0, rel=0.0) and not about(1e-12, 0.0, rel=0.5)
    with pytest.raises(TypeError):
        about(1.0, 1.0)  # no default: the tolerance is always written at the call
    with pytest.raises(ValueError, match="rel"):
        about(1.0, 1.0, rel=-0.1)


def test_load_results_reads_the_committed_file_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook downloaded from the book runs outside chapters/
    every = sorted(experiments.RESULTS_DIR.glob("*.json"))
    assert every, f"no committed results in {experiments.RESULTS_DIR}"
    for path in every:
        assert load_results(path.stem) == json.loads(path.read_text())


def test_missing_results_name_the_file():
    with pytest.raises(FileNotFoundError, match="no-such-benchmark.json"):
        results_path("no-such-benchmark.json")


def test_claim_records_a_status_that_agrees_with_the_evidence():
    from minilib.experiments import claim

    line = claim("dao2022flashattention", "reproduced", section="Online softmax", function="minilib.flash.flash_attention",
                 test="tests/test_flash_kernel.py::test_x", evidence=3.1 >= 2)
    assert line.startswith("**Paper claim, reproduced** (dao2022flashattention)")
    assert "does not reproduce" in claim("k", "does not reproduce at toy scale", section="s", function="f", test="t",
                                         evidence=False)


@pytest.mark.parametrize("status, evidence", [("reproduced", False), ("does not reproduce at toy scale", True)])
def test_claim_refuses_a_status_the_evidence_contradicts(status, evidence):
    from minilib.experiments import claim

    with pytest.raises(ValueError, match="disagrees with the evidence"):
        claim("k", status, section="s", function="f", test="t", evidence=evidence)


def test_claim_rejects_bad_arguments():
    import numpy as np

    from minilib.experiments import claim

    with pytest.raises(ValueError, match="status"):
        claim("k", "reproduced!", section="s", function="f", test="t", evidence=True)
    with pytest.raises(TypeError, match="section"):
        claim("k", "reproduced", section="", function="f", test="t", evidence=True)
    with pytest.raises(TypeError, match="function"):
        claim("k", "reproduced", section="s", function=None, test="t", evidence=True)
    assert claim("k", "reproduced", section="s", function="f", test="t", evidence=np.bool_(True))


def test_count_parameters_counts_trainable_scalars_by_hand():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == 4 + 4 * 2
    assert models.count_parameters is count_parameters  # re-exported, not copied
