"""End-to-end: ``python -m minilib.grade NOTEBOOK`` on good, empty and misbehaving notebooks.

Each notebook is graded once (module fixtures); the tests then read its JSON report. Every
run also checks that the student's file is byte-identical afterwards.
"""
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from minilib.grade.cli import main
from tests.grade_support import notebooks
from tests.grade_support.nbcode import EXERCISES, ROOT, SOLUTIONS

TIMEOUT = "10"  # seconds per cell and per question; the infinite loops cost this much


def grade(path, *extra):
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "minilib.grade", str(path), "--json", "--timeout", TIMEOUT, *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert path.read_bytes() == before, "the grader modified the student's notebook"
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    return {q["id"]: q for q in report["questions"]}, report


@pytest.fixture(scope="module")
def failures(tmp_path_factory):
    return grade(notebooks.write(tmp_path_factory.mktemp("nb") / "01_failures.ipynb", notebooks.FAILURES))


@pytest.fixture(scope="module")
def tampering(tmp_path_factory):
    return grade(notebooks.write(tmp_path_factory.mktemp("nb") / "01_tampering.ipynb", notebooks.TAMPERING))


def test_solutions_score_full_marks():
    questions, report = grade(SOLUTIONS)
    assert report["score"] == report["max_score"] == 8
    assert all(q["status"] == "PASS" for q in questions.values()) and len(questions) == 6
    assert report["notebook_errors"] == []


def test_exercises_score_zero_and_junit(tmp_path):
    junit = tmp_path / "report.xml"
    questions, report = grade(EXERCISES, "--junit", str(junit))
    assert report["score"] == 0 and report["max_score"] == 8
    assert all("not implemented yet" in q["reason"] for q in questions.values())
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "6"
    assert len(suite.findall("testcase/failure")) == 6


@pytest.mark.parametrize("qid, reason", [
    ("01.q1", "stable_softmax is not defined after running the notebook"),
    ("01.q2", "uses forbidden torch.nn.functional.scaled_dot_product_attention"),
    ("01.q3", "timed out after 10 s"),
    ("01.q4", "wrong shape: got (2, 3, 2, 4), expected (2, 3, 8)"),
    ("01.q5", "NaN/Inf"),
])
def test_each_failure_scores_zero_with_its_reason(failures, qid, reason):
    questions, _ = failures
    assert questions[qid]["points"] == 0 and reason in questions[qid]["reason"], questions[qid]["reason"]


def test_other_questions_still_graded(failures):
    questions, report = failures
    assert questions["01.q6"]["status"] == "PASS" and report["score"] == 1
    errors = "\n".join(report["notebook_errors"])
    assert "SyntaxError" in errors and "RuntimeError: a cell that raises" in errors


@pytest.mark.parametrize("qid, reason", [
    ("01.q1", "NaN/Inf"),
    ("01.q2", "uses forbidden torch.nn.functional.scaled_dot_product_attention"),
    ("01.q3", "max abs error"),
    ("01.q5", "the answer ended its process (exit status 0) before returning"),
    ("01.q6", "max abs error"),
])
def test_tampering_gains_nothing(tampering, qid, reason):
    questions, _ = tampering
    assert questions[qid]["points"] == 0 and reason in questions[qid]["reason"], questions[qid]["reason"]


def test_tampered_notebook_still_graded(tampering):
    questions, report = tampering
    assert questions["01.q4"]["status"] == "PASS" and report["score"] == 1
    assert any("interrupted" in e for e in report["notebook_errors"])  # the endless cell


def test_kernel_that_dies_scores_zero_and_grading_completes(tmp_path):
    questions, report = grade(notebooks.write(tmp_path / "01_dies.ipynb", notebooks.KERNEL_DIES))
    assert report["score"] == 0 and len(questions) == 6
    assert all("did not run to the end" in q["reason"] for q in questions.values())
    assert any("kernel died" in e for e in report["notebook_errors"])


def test_usage_errors_exit_2_and_leave_the_file_alone(tmp_path, capsys):
    broken = tmp_path / "01_broken.ipynb"
    broken.write_text("{ not json")
    assert main([str(broken)]) == 2
    assert "cannot read notebook" in capsys.readouterr().err
    assert broken.read_text() == "{ not json"
    unnamed = tmp_path / "homework.ipynb"
    shutil.copyfile(EXERCISES, unnamed)
    with pytest.raises(SystemExit) as exit_:
        main([str(unnamed)])
    assert exit_.value.code == 2 and "--chapter" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(unnamed), "--chapter", "01", "--junit", str(unnamed)])
    assert exit_.value.code == 2 and unnamed.read_bytes() == EXERCISES.read_bytes()
