"""Command line: ``python -m minilib.grade NOTEBOOK|FOLDER [--json] [--junit PATH] [--csv PATH]
[--timeout S] [--notebook-timeout S] [--chapter N] [--fail-under SCORE]`` and
``python -m minilib.grade generate [--check] [--root DIR]``.

Grading a notebook: its chapter comes from the file name (``01_transformer.ipynb`` -> ``01``,
or ``--chapter``); a copy runs in a fresh kernel (:mod:`minilib.grade.notebook`); each answer is
run in its own child process (:mod:`minilib.grade.sandbox`); verdicts are computed here.

Grading a folder (a teacher's submissions): every ``*.ipynb`` in it, each with the same limits,
into one table (student x question) and, with ``--csv PATH``, a CSV of the same.

Exit status 0 whenever grading completed, whatever the score — unless ``--fail-under SCORE`` is
given and a notebook scored below it (then 1); 2 for usage errors and unreadable notebooks.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from minilib.grade import generate, report
from minilib.grade.compare import Result, verdict
from minilib.grade.notebook import execute_copy, read_notebook
from minilib.grade.questions import for_chapter
from minilib.grade.sandbox import Sandbox


def grade_notebook(path: Path, chapter: str, *, timeout: float, notebook_timeout: float = 600.0
                   ) -> tuple[list[Result], list[str]]:
    """Results for every question of ``chapter`` and the notebook's cell errors."""
    questions = for_chapter(chapter)
    # The fork server starts first so that its imports overlap with the notebook's execution.
    with tempfile.TemporaryDirectory(prefix="minilib-grade-") as tmp, Sandbox() as sandbox:
        run = execute_copy(path, [q.name for q in questions], Path(tmp), timeout=timeout,
                           notebook_timeout=notebook_timeout, questions={q.name: q.id for q in questions})
        results = []
        for q in questions:
            if q.name in run.missing:
                results.append(Result(q.id, False, run.missing[q.name], {}, 0, q.points))
            else:
                results.append(verdict(q, sandbox.run(run.answers[q.name], q, timeout=timeout)))
    return results, run.cell_errors


def chapter_of(name: str, given: str | None) -> str | None:
    """The chapter as two digits: from ``--chapter`` (``1`` or ``01``) or the file name's prefix."""
    raw = given or (re.match(r"(\d+)_", name) or [None, None])[1]
    return raw.zfill(2) if raw and raw.isdigit() else raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minilib.grade",
        description="Grade a chapter notebook, or every notebook in a folder (the files are never modified).")
    parser.add_argument("notebook", type=Path, help="a notebook, or a folder of submissions")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--junit", type=Path, metavar="PATH", help="also write JUnit XML to PATH")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="also write a CSV (notebook x question) to PATH")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per cell and per question (30)")
    parser.add_argument("--notebook-timeout", type=float, default=600.0,
                        help="seconds for running one whole notebook (600)")
    parser.add_argument("--chapter", help="chapter number, when the file name does not start with it")
    parser.add_argument("--fail-under", type=float, metavar="SCORE",
                        help="exit 1 when a notebook scores below SCORE points")
    return parser


def _grade_main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    folder = args.notebook.is_dir()
    paths = sorted(args.notebook.glob("*.ipynb")) if folder else [args.notebook]
    if not paths:
        parser.error(f"no notebooks in {args.notebook}")
    chapters = {p: chapter_of(p.name, args.chapter) for p in paths}
    for p, chapter in chapters.items():
        if not chapter or not for_chapter(chapter):
            parser.error(f"no graded questions for chapter {chapter!r} (file {p.name}); use --chapter")
    for out in (args.junit, args.csv):
        if out and any(out.resolve() == p.resolve() for p in paths):
            parser.error("--junit/--csv must not be a notebook")
    if args.timeout <= 0 or args.notebook_timeout <= 0:
        parser.error("--timeout and --notebook-timeout must be positive")
    graded = []
    for p in paths:
        try:
            read_notebook(p)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            if not folder:
                return 2
            unread = [Result(q.id, False, str(e), {}, 0, q.points) for q in for_chapter(chapters[p])]
            graded.append((str(p), unread, []))
            continue
        results, cell_errors = grade_notebook(p, chapters[p], timeout=args.timeout,
                                              notebook_timeout=args.notebook_timeout)
        graded.append((str(p), results, cell_errors))
    if folder:
        print(report.as_json_many(graded) if args.json else report.class_table(graded))
    else:
        shown, results, cell_errors = graded[0]
        print(report.as_json(shown, results, cell_errors) if args.json else report.table(shown, results, cell_errors))
    if args.junit:
        args.junit.write_bytes(report.junit_many(graded))
    if args.csv:
        args.csv.write_text(report.csv_table(graded), encoding="utf-8")
    if args.fail_under is not None and any(sum(r.points for r in results) < args.fail_under
                                           for _, results, _ in graded):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        return generate.main(argv[1:])
    return _grade_main(argv)
