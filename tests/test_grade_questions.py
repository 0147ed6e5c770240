"""Chapter 01 questions and the grading machinery behind ``grade.check``: counterexample messages,
references, the wire format, in-notebook timeouts. The solution / stub / wrong-answer proof tests
for every chapter are in ``test_grade_proofs.py``.
"""
import numpy as np
import pytest
import torch

from minilib import grade
from minilib.grade.compare import verdict
from minilib.grade.questions import for_chapter, get, registry
from minilib.grade.runner import Output, from_wire, run_cases, to_wire
from tests.grade_support.nbcode import SOLUTIONS, namespace

QUESTIONS = for_chapter("01")


@pytest.fixture(scope="module")
def solutions():
    return namespace(SOLUTIONS)


def test_chapter_01_has_the_six_questions():
    assert [q.id for q in QUESTIONS] == [f"01.q{i}" for i in range(1, 7)]
    assert [q.name for q in QUESTIONS] == ["stable_softmax", "causal_attention", "split_heads",
                                          "merge_heads", "apply_rope", "rms_norm"]


def test_counterexample_has_inputs_expected_got_error_tolerance_hint():
    from tests.grade_support.wrong_ch01 import attention_top_left

    result = grade.check("01.q2", attention_top_left)
    d = result.details
    assert d["case"].startswith("case 3/7")
    assert d["inputs"].startswith("q (1, 2, 3, 4) float64 [")
    assert "row t may attend to keys s <= t + (S - T)" in d["hint"]
    assert float(d["max_abs_error"]) > 0.1
    assert "atol 1e-10" in d["tolerance"]
    assert d["expected"] != d["got"]


def test_every_reference_is_independent_of_its_inputs_dtype():
    # The reference must be float64 even for float32 cases (it is computed on upcast copies).
    for q in QUESTIONS:
        for case in q.cases():
            out = q.reference(*[a.double() if torch.is_tensor(a) and a.is_floating_point() else a
                                for a in case.args], **case.kwargs)
            assert out.dtype == torch.float64


def test_answer_that_mutates_its_input_does_not_change_the_reference(solutions):
    def softmax_in_place(x, dim=-1):
        x -= x.amax(dim=dim, keepdim=True)
        x.exp_()
        return x / x.sum(dim=dim, keepdim=True)

    assert grade.check("01.q1", softmax_in_place).passed
    assert grade.check("01.q1", solutions["stable_softmax"]).passed


def test_forbidden_call_caught_by_the_answer_still_fails():
    def sneaky(q, k, v):
        try:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        except BaseException:
            T, S = q.shape[-2], k.shape[-2]
            keep = torch.ones(T, S, dtype=torch.bool).tril(S - T)
            s = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).masked_fill(~keep, float("-inf"))
            return torch.softmax(s, -1) @ v

    assert "forbidden" in grade.check("01.q2", sneaky).message


def test_forbidden_helper_function_is_found_statically():
    from torch.nn.functional import rms_norm as helper_alias

    def helper(x, w, eps):
        return helper_alias(x, x.shape[-1:], w, eps)

    def rms(x, weight, eps=1e-6):
        return helper(x, weight, eps)

    result = grade.check("01.q6", rms)
    assert "uses forbidden torch.nn.functional.rms_norm" in result.message


@pytest.mark.parametrize("answer, reason", [
    (None, "expected a function named stable_softmax, got NoneType"),
    (lambda x, dim=-1: x.numpy(), "returned ndarray, expected a torch.Tensor"),
    (lambda x, dim=-1: 1 / 0, "ZeroDivisionError: division by zero (in <lambda>"),
    (lambda: 0, "TypeError"),
])
def test_bad_answers_fail_with_a_clear_reason(answer, reason):
    assert reason in grade.check("01.q1", answer).message


def test_in_notebook_timeout():
    def forever(x, dim=-1):
        while True:
            pass

    result = grade.check("01.q1", forever, timeout=0.5)
    assert not result.passed and "timed out after 0.5 s" in result.message


def test_check_is_a_no_op_under_the_cli(monkeypatch, capsys):
    monkeypatch.setenv(grade.CLI_ENV, "1")
    result = grade.check("01.q1", None)
    assert result.details == {"skipped": True}
    assert capsys.readouterr().out == ""


def test_unknown_question_id_names_the_argument():
    with pytest.raises(ValueError, match="unknown question_id '01.q99'"):
        grade.check("01.q99", None)


def test_wire_format_round_trip_and_rejects_malformed_data():
    outs = [Output("ok", dtype="float32", shape=(2, 3), values=np.arange(6.0).reshape(2, 3)),
            Output("error", "ValueError: x")]
    back = from_wire(to_wire(outs))
    assert [o.status for o in back] == ["ok", "error"]
    np.testing.assert_array_equal(back[0].values, outs[0].values)
    assert back[0].shape == (2, 3) and back[0].dtype == "float32"
    lying = to_wire([Output("ok", dtype="float32", shape=(5, 5), values=np.zeros(4))])
    with pytest.raises(ValueError):
        from_wire(lying)


def test_whole_question_failure_is_reported_once(solutions):
    question = get("01.q3")
    out = run_cases(solutions["split_heads"], question)
    assert verdict(question, out).passed
    assert not verdict(question, Output("timeout", "timed out after 1 s")).passed


def test_question_ids_are_unique_and_sorted():
    ids = list(registry())
    assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_forbidden_minilib_functions_are_caught_statically_and_at_run_time():
    import importlib

    from minilib.attention import sdpa as my_attention
    from minilib.norms import RMSNorm
    from minilib.positional import rope

    def aliased(q, k, v):
        return my_attention(q, k, v, causal=True)

    def hidden(q, k, v):  # no forbidden name in the code: only the run-time check can see it
        module = importlib.import_module("minilib." + "attention")
        return getattr(module, "sd" + "pa")(q, k, v, causal=True)

    def rope_answer(x, positions, base=10000.0):
        return rope(x, positions, base=base)

    def rms_module(x, weight, eps=1e-6):
        norm = RMSNorm(x.shape[-1], eps=eps).to(x.dtype)
        norm.weight.data.copy_(weight)
        return norm(x)

    assert "uses forbidden minilib.attention.sdpa" in grade.check("01.q2", aliased).message
    assert "called forbidden minilib.attention.sdpa" in grade.check("01.q2", hidden).message
    assert "uses forbidden minilib.positional.rope" in grade.check("01.q5", rope_answer).message
    assert "forbidden minilib.norms.RMSNorm" in grade.check("01.q6", rms_module).message


def test_report_table_json_and_junit_agree():
    import json
    import xml.etree.ElementTree as ET

    from minilib.grade import report
    from tests.grade_support.wrong_ch01 import attention_top_left

    results = [grade.check("01.q4", lambda x: x.transpose(1, 2).flatten(2)), grade.check("01.q2", attention_top_left)]
    text = report.table("nb.ipynb", results, ["cell 3: RuntimeError: boom"])
    assert "score: 1/3" in text and "01.q2" in text and "cell 3: RuntimeError: boom" in text
    assert "row t may attend to keys" in text  # the counterexample follows the table
    data = json.loads(report.as_json("nb.ipynb", results, []))
    assert (data["score"], data["max_score"]) == (1, 3)
    suite = ET.fromstring(report.junit("nb.ipynb", results)).find("testsuite")
    assert suite.get("failures") == "1" and suite.find("testcase/failure").get("message") == results[1].message


def test_every_forbidden_name_resolves():
    # A misspelt name would forbid nothing; guard.Forbidden skips what does not resolve.
    from minilib.grade.guard import resolve

    for q in registry().values():
        for name in q.forbidden:
            assert name.startswith("aten.") or resolve(name) is not None, (q.id, name)


def test_correct_logsumexp_softmax_passes():
    # x - logsumexp(x) is correct; in float32 at 1e4 it rounds to the spacing there (~1e-3 relative).
    def lse_softmax(x, dim=-1):
        return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))

    assert grade.check("01.q1", lse_softmax).passed


def test_system_exit_in_an_answer_is_reported_not_raised():
    import sys

    result = grade.check("01.q1", lambda x, dim=-1: sys.exit(3))
    assert not result.passed and "SystemExit(3)" in result.message


def test_the_guard_is_removed_after_each_check():
    # In the notebook everything the guard replaced works again after grade.check returns.
    import threading

    import minilib.attention
    from tests.grade_support.wrong_ch01 import softmax_kernels_removed, softmax_library_hidden

    for answer in (softmax_library_hidden, softmax_kernels_removed, lambda x, dim=-1: x):
        grade.check("01.q1", answer)
    x = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(torch.softmax(x, -1), minilib.attention.dot_product._softmax_rows(x))
    torch.testing.assert_close(torch._softmax(x, -1, False), torch.nn.functional.softmin(-x, -1))
    worker = threading.Thread(target=lambda: None)
    worker.start()
    worker.join()


def test_torch_ops_answer_passes_in_the_notebook_as_in_the_cli():
    # the CLI packs torch.ops objects by name (test_grade_cli.py); here the same answer in-process
    aten = torch.ops.aten

    def rms_norm(x, weight, eps=1e-6):
        return x * torch.ops.aten.rsqrt(aten.mean(x.pow(2), [-1], True) + eps) * weight

    assert grade.check("01.q6", rms_norm).passed


def test_torch_op_objects_are_packed_by_name():
    import pickle

    import cloudpickle

    from minilib.grade.runner import load_torch_op, torch_op_name

    for op in (torch.ops, torch.ops.aten, torch.ops.aten.rsqrt, torch.ops.aten.add.Tensor):
        assert load_torch_op(torch_op_name(op)) is op
        assert pickle.loads(cloudpickle.dumps((load_torch_op, (torch_op_name(op),))))[0] is load_torch_op
    assert torch_op_name(torch.rsqrt) is None


def test_result_rows_of_a_chapter_align_for_long_names(capsys):
    from tests.grade_support.wrong_ch03 import merge_average, update_no_rescale

    grade.check("03.q1", update_no_rescale)
    grade.check("03.q4", merge_average)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("03.")]
    assert len({row.index(" FAIL ") for row in rows}) == 1, rows


@pytest.mark.parametrize("names, call", [
    (("torch.logsumexp",), lambda x: torch.special.logsumexp(x, -1)),
    (("torch.nn.functional.conv1d",), lambda x: torch.conv1d(x[None], torch.ones(1, 3, 2, dtype=x.dtype))),
    (("torch.nn.functional.scaled_dot_product_attention",),
     lambda x: torch.ops.aten._scaled_dot_product_attention_math(x[None], x[None], x[None])[0]),
    (("torch.rms_norm",), lambda x: torch.ops.aten.rms_norm(x, [4])),
])
def test_forbidden_torch_functions_are_refused_under_other_names(names, call):
    # The guard other chapters' checks rely on: a torch name forbids its aten ops, whatever reaches them.
    from minilib.grade.guard import ForbiddenCall, rules

    calls = []
    with pytest.raises(ForbiddenCall), rules(names).watching(calls):
        call(torch.randn(3, 4, dtype=torch.float64))
    assert calls and calls[0].startswith(names[0])
    call(torch.randn(3, 4, dtype=torch.float64))  # and works again afterwards
