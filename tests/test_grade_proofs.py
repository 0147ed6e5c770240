"""Proof tests for every graded question of every chapter, run in-process through ``grade.check``.

For each chapter with a ``solutions/NN_*.ipynb``: every solution passes with full points, every
stub of the generated ``exercises/`` notebook fails as "not implemented yet", and every plausible
wrong answer in ``tests/grade_support/wrong_chNN.py`` fails with the reason a student needs to see.
Chapter-specific checks (message layout, hints) live in ``test_grade_questions.py`` and
``test_grade_chNN.py``.
"""
import importlib
from functools import cache

import pytest

from minilib import grade
from minilib.grade.questions import for_chapter
from tests.grade_support.nbcode import ROOT, namespace

CHAPTERS = sorted(path.name[:2] for path in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
QUESTIONS = [q for chapter in CHAPTERS for q in for_chapter(chapter)]
WRONG = [row for chapter in CHAPTERS for row in importlib.import_module(f"tests.grade_support.wrong_ch{chapter}").WRONG]


@cache
def functions(folder: str, chapter: str) -> dict:
    (path,) = (ROOT / folder).glob(f"{chapter}_*.ipynb")
    return namespace(path)


def test_every_chapter_with_solutions_has_questions_and_wrong_answers():
    assert CHAPTERS[:1] == ["01"]
    for chapter in CHAPTERS:
        assert for_chapter(chapter), f"chapter {chapter} has a solutions notebook but no questions"
        assert any(qid.startswith(chapter + ".") for qid, _, _ in WRONG), f"chapter {chapter} has no wrong answers"


@pytest.mark.parametrize("q", QUESTIONS, ids=lambda q: q.id)
def test_solution_passes(q, capsys):
    result = grade.check(q.id, functions("solutions", q.id[:2])[q.name])
    assert result.passed, result.message + "\n" + result.explain()
    assert result.points == q.points
    assert q.id in capsys.readouterr().out


@pytest.mark.parametrize("q", QUESTIONS, ids=lambda q: q.id)
def test_stub_fails(q, capsys):
    result = grade.check(q.id, functions("exercises", q.id[:2])[q.name])
    assert not result.passed and result.points == 0
    assert "not implemented yet" in result.message
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("qid, answer, reason", WRONG, ids=[f"{q}-{f.__name__}" for q, f, _ in WRONG])
def test_wrong_answer_fails(qid, answer, reason):
    result = grade.check(qid, answer)
    assert not result.passed and result.points == 0
    assert reason in result.message, result.message
    assert result.details.get("hint") or "forbidden" in result.message
