"""Command line: ``python -m minilib.grade NOTEBOOK [--json] [--junit PATH] [--timeout S]``
and ``python -m minilib.grade generate [--check] [--root DIR]``.

Grading a notebook: its chapter comes from the file name (``01_transformer.ipynb`` -> ``01``,
or ``--chapter``); a copy runs in a fresh kernel (:mod:`minilib.grade.notebook`); each answer is
run in its own child process (:mod:`minilib.grade.sandbox`); verdicts are computed here.
Exit status 0 whenever grading completed, whatever the score; 2 for usage errors and
unreadable notebooks.
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


def grade_notebook(path: Path, chapter: str, *, timeout: float) -> tuple[list[Result], list[str]]:
    """Results for every question of ``chapter`` and the notebook's cell errors."""
    questions = for_chapter(chapter)
    # The fork server starts first so that its imports overlap with the notebook's execution.
    with tempfile.TemporaryDirectory(prefix="minilib-grade-") as tmp, Sandbox() as sandbox:
        run = execute_copy(path, [q.name for q in questions], Path(tmp), timeout=timeout)
        results = []
        for q in questions:
            if q.name in run.missing:
                results.append(Result(q.id, False, run.missing[q.name], {}, 0, q.points))
            else:
                results.append(verdict(q, sandbox.run(run.answers[q.name], q, timeout=timeout)))
    return results, run.cell_errors


def _grade_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m minilib.grade",
                                     description="Grade a chapter notebook (the file is never modified).")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--junit", type=Path, metavar="PATH", help="also write JUnit XML to PATH")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per cell and per question (30)")
    parser.add_argument("--chapter", help="chapter number, when the file name does not start with it")
    args = parser.parse_args(argv)
    chapter = args.chapter or (re.match(r"(\d+)_", args.notebook.name) or [None, None])[1]
    if not chapter or not for_chapter(chapter):
        parser.error(f"no graded questions for chapter {chapter!r} (file {args.notebook.name}); use --chapter")
    if args.junit and args.junit.resolve() == args.notebook.resolve():
        parser.error("--junit must not be the notebook itself")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        read_notebook(args.notebook)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results, cell_errors = grade_notebook(args.notebook, chapter, timeout=args.timeout)
    shown = str(args.notebook)
    print(report.as_json(shown, results, cell_errors) if args.json else report.table(shown, results, cell_errors))
    if args.junit:
        args.junit.write_bytes(report.junit(shown, results))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["generate"]:
        return generate.main(argv[1:])
    return _grade_main(argv)
