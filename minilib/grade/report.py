"""Score reports: a text table, JSON and JUnit XML."""
from __future__ import annotations

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


def junit(notebook: str, results: list[Result]) -> bytes:
    """JUnit XML: one testsuite, one testcase per question, a <failure> per failed question."""
    suite = ET.Element("testsuite", name=f"minilib.grade {notebook}", tests=str(len(results)),
                       failures=str(sum(not r.passed for r in results)), errors="0", skipped="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"chapter{get(r.question).chapter}",
                             name=f"{r.question} {get(r.question).name}")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.message)
            failure.text = r.explain()
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
