"""Score reports: a text table, JSON and JUnit XML for one notebook; a class table, JSON, JUnit
and CSV (notebook x question) for a folder of them."""
from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

from minilib.grade.compare import Result
from minilib.grade.questions import get


def table(notebook: str, results: list[Result], cell_errors: list[str]) -> str:
    """A human-readable score table, then counterexamples and notebook errors."""
    rows = [(r.question, get(r.question).name, f"{r.points}/{r.max_points}", r.status, r.message) for r in results]
    head = ("question", "answer", "points", "status", "reason")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(4)]
    line = lambda x: "  ".join(str(v).ljust(w) for v, w in zip(x[:4], widths)) + "  " + x[4]  # noqa: E731
    out = [f"Grading {notebook}", line(head), line(["-" * w for w in widths] + ["-" * 6])]
    out += [line(r) for r in rows]
    score, total = sum(r.points for r in results), sum(r.max_points for r in results)
    out.append(f"score: {score}/{total}")
    for r in results:
        if not r.passed and r.explain():
            out += [f"\n{r.question} {get(r.question).name}:", r.explain()]
    if cell_errors:
        out.append("\nerrors raised while running the notebook (not scored themselves):")
        out += [f"    {e}" for e in cell_errors]
    return "\n".join(out)


def as_json(notebook: str, results: list[Result], cell_errors: list[str]) -> str:
    return json.dumps({
        "notebook": notebook,
        "score": sum(r.points for r in results),
        "max_score": sum(r.max_points for r in results),
        "questions": [{"id": r.question, "name": get(r.question).name, "points": r.points,
                       "max_points": r.max_points, "status": r.status, "reason": r.message,
                       "details": r.details} for r in results],
        "notebook_errors": cell_errors,
    }, indent=2)


def as_json_many(graded: list[tuple[str, list[Result], list[str]]]) -> str:
    return "[\n" + ",\n".join(as_json(*g) for g in graded) + "\n]"


def _matrix(graded) -> tuple[list[str], list[list[str]]]:
    ids = list(dict.fromkeys(r.question for _, results, _ in graded for r in results))
    head = ["notebook", *ids, "score", "max"]
    rows = []
    for notebook, results, _ in graded:
        points = {r.question: r.points for r in results}
        rows.append([notebook, *(str(points.get(i, "")) for i in ids),
                     str(sum(r.points for r in results)), str(sum(r.max_points for r in results))])
    return head, rows


def class_table(graded: list[tuple[str, list[Result], list[str]]]) -> str:
    """Points per notebook (row) and question (column), then each notebook's failures in one line each."""
    head, rows = _matrix(graded)
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    line = lambda x: "  ".join(v.ljust(w) for v, w in zip(x, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *map(line, rows)]
    for notebook, results, cell_errors in graded:
        failed = [f"    {r.question} {get(r.question).name}: {r.message}" for r in results if not r.passed]
        failed += [f"    notebook: {e}" for e in cell_errors]
        if failed:
            out += [f"\n{notebook}:", *failed]
    return "\n".join(out)


def csv_table(graded: list[tuple[str, list[Result], list[str]]]) -> str:
    """The class table as CSV: one row per notebook, one column of points per question."""
    head, rows = _matrix(graded)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    writer.writerows(rows)
    return buffer.getvalue()


def junit_many(graded: list[tuple[str, list[Result], list[str]]]) -> bytes:
    """JUnit XML with one testsuite per notebook."""
    root = ET.Element("testsuites")
    for notebook, results, _ in graded:
        root.append(_suite(notebook, results))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def junit(notebook: str, results: list[Result]) -> bytes:
    """JUnit XML: one testsuite, one testcase per question, a <failure> per failed question."""
    return junit_many([(notebook, results, [])])


def _suite(notebook: str, results: list[Result]) -> ET.Element:
    suite = ET.Element("testsuite", name=f"minilib.grade {notebook}", tests=str(len(results)),
                       failures=str(sum(not r.passed for r in results)), errors="0", skipped="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"chapter{get(r.question).chapter}",
                             name=f"{r.question} {get(r.question).name}")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.message)
            failure.text = r.explain()
    return suite
