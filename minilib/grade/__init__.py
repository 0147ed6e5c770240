"""Exercise grading for The Transformer Zoo.

Two entry points share one set of hidden checks (``minilib/grade/checks/chNN.py``):

* ``grade.check("01.q1", stable_softmax)`` inside a notebook: runs the answer in the notebook's
  process on fixed-seed cases, compares with an independent float64 reference, prints one table
  row (question, PASS/FAIL, message, and the first counterexample on failure) and returns a
  :class:`Result`. Convenient, but the notebook could patch it — so it is feedback, not a grade.
* ``python -m minilib.grade NOTEBOOK`` (see :mod:`minilib.grade.cli`): the grade. It executes a
  temporary copy of the notebook's folder in a fresh kernel (``grade.check`` is a no-op there),
  extracts the answers with cloudpickle, runs each in a child process and compares the child's raw
  outputs with references computed in the grader's own process, where the student's code never
  runs. ``python -m minilib.grade FOLDER`` grades every notebook in a folder into one table.

Both run an answer under its question's off-limits rules (:mod:`minilib.grade.guard`: refused at
torch's dispatcher, the library's and the grader's own code switched off, no threads), and with a
time limit.

``python -m minilib.grade generate`` writes ``exercises/`` from ``solutions/``
(:mod:`minilib.grade.generate`).
"""
from __future__ import annotations

import os

from minilib.grade.compare import Result, verdict
from minilib.grade.questions import for_chapter, get
from minilib.grade.runner import run_cases

__all__ = ["check", "Result"]

#: Set in the kernel that the CLI runs a notebook in: in-notebook checks are skipped there,
#: because the CLI grades every answer itself afterwards.
CLI_ENV = "MINILIB_GRADE_CLI"


def check(question_id: str, answer, *, timeout: float = 30.0) -> Result:
    r"""Check ``answer`` for question ``question_id`` and print one result row.

    The answer runs on every fixed-seed case of the question (at most ``timeout`` seconds in all)
    and its outputs are compared with a float64 reference within the question's tolerance. On
    failure the row is followed by the first counterexample: the case, its inputs, expected, got,
    the max abs error, the tolerance and a hint.

    Returns a :class:`Result` (``passed``, ``message``, ``details``).
    """
    question = get(question_id)
    if os.environ.get(CLI_ENV):
        return Result(question_id, False, "skipped: the grading CLI checks this answer itself",
                      {"skipped": True}, 0, question.points)
    result = verdict(question, run_cases(answer, question, timeout=timeout))
    width = max(len(q.name) for q in for_chapter(question.chapter))  # the rows of one chapter align
    print(f"{question_id:<7} {question.name:<{width}} {result.status:<5} {result.message}")
    if result.explain():
        print(result.explain())
    return result
