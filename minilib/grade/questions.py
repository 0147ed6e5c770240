"""Question registry: what a graded question is, and where questions live.

A question names the function the student writes, a fixed-seed list of input cases, an
independent float64 reference, tolerances, a hint and the functions the answer must not call.
Each chapter keeps its questions in ``minilib/grade/checks/chNN.py`` as a module-level list
``QUESTIONS``; the registry discovers those modules, so a new chapter only adds its file.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable

import torch

# (atol, rtol) per input dtype; an answer passes when |got - expected| <= atol + rtol * |expected|.
DEFAULT_TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-8)}


@dataclass(frozen=True)
class Case:
    """One input to a student's function: positional and keyword arguments plus a label.

    ``hint`` overrides the question's hint when this case is the first counterexample;
    ``tolerance`` (atol, rtol) overrides the question's tolerance for this case.
    """

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    hint: str = ""
    tolerance: tuple[float, float] | None = None


@dataclass(frozen=True)
class Question:
    """A graded question. ``reference`` receives the case's inputs upcast to float64.

    ``forbidden``: what the answer may not use — torch functions, aten ops (``"aten._softmax"``),
    library functions, classes or whole modules (see :mod:`minilib.grade.guard`).
    ``max_intermediate(case)``: when set, the most values any floating-point tensor the answer
    builds may hold (e.g. one tile of scores, never the whole ``T x S`` matrix); ``work_rule``
    names that rule in the failure message.
    """

    id: str
    name: str
    title: str
    make_cases: Callable[[], list[Case]]
    reference: Callable[..., torch.Tensor]
    hint: str
    arg_names: tuple[str, ...] = ()
    points: int = 1
    forbidden: tuple[str, ...] = ()
    tolerance: dict = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    max_intermediate: Callable[[Case], int] | None = None
    work_rule: str = "the question"

    @property
    def chapter(self) -> str:
        return self.id.split(".")[0]

    def cases(self) -> list[Case]:
        return _cases(self.id)

    def work_limits(self) -> list[int | None]:
        """``max_intermediate`` of each case (None without one), computed once: the grader's code is
        off limits while an answer runs, so this is known before."""
        return _work_limits(self.id)


@cache
def _cases(question_id: str) -> list[Case]:
    return registry()[question_id].make_cases()


@cache
def _work_limits(question_id: str) -> list[int | None]:
    q = registry()[question_id]
    return [q.max_intermediate(c) if q.max_intermediate else None for c in q.cases()]


@cache
def registry() -> dict[str, Question]:
    """All questions of all chapters, by id (``"01.q1"``), in chapter then question order."""
    from minilib.grade import checks

    found: dict[str, Question] = {}
    for info in sorted(pkgutil.iter_modules(checks.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{checks.__name__}.{info.name}")
        for q in getattr(module, "QUESTIONS", ()):
            if q.id in found:
                raise ValueError(f"question id {q.id!r} defined twice")
            found[q.id] = q
    return found


def get(question_id: str) -> Question:
    """The question with this id; ``ValueError`` listing the known ids otherwise."""
    questions = registry()
    if question_id not in questions:
        raise ValueError(f"unknown question_id {question_id!r}; known: {', '.join(questions)}")
    return questions[question_id]


def for_chapter(chapter: str) -> list[Question]:
    """The questions of one chapter (``"01"``), in order."""
    return [q for q in registry().values() if q.chapter == chapter]


def expected_dtype(case: Case) -> torch.dtype | None:
    """The dtype an answer must return: that of the first floating-point tensor input."""
    for a in (*case.args, *case.kwargs.values()):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.dtype
    return None


def upcast(value: Any) -> Any:
    """A float64 copy of a floating-point tensor; other values unchanged."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(torch.float64).clone()
    return value
