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


def run_cli(path, *extra, status=0):
    proc = subprocess.run([sys.executable, "-m", "minilib.grade", str(path), "--timeout", TIMEOUT, *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == status, proc.stderr
    return proc


def grade(path, *extra):
    before = path.read_bytes()
    proc = run_cli(path, "--json", *extra)
    assert path.read_bytes() == before, "the grader modified the student's notebook"
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
    # cells numbered as Jupyter numbers them (code cells only), with the question they answer
    assert "cell In [2] (question 01.q1, stable_softmax): SyntaxError" in errors
    assert "cell In [3]: RuntimeError: a cell that raises" in errors


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


def test_a_notebook_that_kills_its_parent_does_not_stop_the_grader(tmp_path):
    # the kernel's parent is a small process of its own: that one dies, the grader goes on
    questions, report = grade(notebooks.write(tmp_path / "01_kills.ipynb", notebooks.KILLS_PARENT))
    assert questions["01.q6"]["status"] == "PASS" and report["score"] == 1


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


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return grade(notebooks.write(tmp_path_factory.mktemp("nb") / "01_hostile.ipynb", notebooks.HOSTILE))


@pytest.mark.parametrize("qid, reason", [
    ("01.q1", "called forbidden torch.softmax (aten._softmax)"),  # setprofile(None), then softmin
    ("01.q2", "forbidden the grader's own answers"),
    ("01.q3", "stopped the grader's fork server"),
    ("01.q5", "called forbidden minilib.positional.rope"),
    ("01.q6", "called forbidden starting a thread"),
])
def test_bypasses_score_zero_in_the_cli(hostile, qid, reason):
    questions, _ = hostile
    assert questions[qid]["points"] == 0 and reason in questions[qid]["reason"], questions[qid]["reason"]


def test_grading_goes_on_after_the_fork_server_is_killed(hostile):
    questions, report = hostile
    assert questions["01.q4"]["status"] == "PASS" and report["score"] == 1


def test_a_cell_that_swallows_the_interrupt_is_stopped_and_the_rest_graded(tmp_path):
    import time

    start = time.monotonic()
    questions, report = grade(notebooks.write(tmp_path / "01_hangs.ipynb", notebooks.HANGS))
    assert time.monotonic() - start < 120
    assert questions["01.q4"]["status"] == "PASS" and questions["01.q6"]["status"] == "PASS"
    hung = [e for e in report["notebook_errors"] if "still running" in e]
    assert hung and hung[0].startswith("cell In [3]:"), report["notebook_errors"]


def test_helper_files_and_torch_ops_work_as_in_jupyter(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "helpers.py").write_text(notebooks.HELPER_MODULE)
    before = sorted(p.name for p in folder.iterdir())
    questions, _ = grade(notebooks.write(folder / "01_helpers.ipynb", notebooks.WITH_HELPERS))
    assert questions["01.q3"]["status"] == "PASS", questions["01.q3"]["reason"]
    assert questions["01.q6"]["status"] == "PASS", questions["01.q6"]["reason"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(before + ["01_helpers.ipynb"])  # nothing written there


def test_a_folder_of_submissions_gives_one_table_a_csv_and_fail_under(tmp_path):
    import csv

    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copyfile(SOLUTIONS, folder / "01_alice.ipynb")
    notebooks.write(folder / "01_bob.ipynb", notebooks.KERNEL_DIES)
    proc = run_cli(folder, "--csv", str(tmp_path / "scores.csv"), "--fail-under", "8", status=1)
    assert "01_alice.ipynb" in proc.stdout and "kernel died" in proc.stdout
    rows = list(csv.reader((tmp_path / "scores.csv").open()))
    assert rows[0] == ["notebook", "01.q1", "01.q2", "01.q3", "01.q4", "01.q5", "01.q6", "score", "max"]
    assert [r[-2:] for r in rows[1:]] == [["8", "8"], ["0", "8"]]
    assert rows[1][0].endswith("01_alice.ipynb") and rows[1][2] == "2"


def test_chapter_number_may_be_given_without_its_zero():
    from minilib.grade.cli import chapter_of

    assert chapter_of("homework.ipynb", "1") == chapter_of("homework.ipynb", "01") == "01"
    assert chapter_of("3_flash.ipynb", None) == "03"


def test_a_notebook_past_its_overall_limit_is_stopped(tmp_path):
    # the limit leaves the kernel's start (slow on a loaded machine) well inside it
    slow = [notebooks.SETUP, notebooks.CORRECT_MERGE_HEADS, "import time\ntime.sleep(60)", notebooks.CORRECT_RMS_NORM]
    questions, report = grade(notebooks.write(tmp_path / "01_slow.ipynb", slow), "--timeout", "90",
                              "--notebook-timeout", "25")
    assert report["score"] == 0
    assert any("ran past 25 s in all (cell In [3] was running)" in e for e in report["notebook_errors"]), report
