"""Write ``exercises/*.ipynb`` from ``solutions/*.ipynb``: the solutions are the only source.

Rules, applied to each cell's source; everything else stays byte-identical except that code
cells lose their outputs and execution counts:

* code: the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` (both included) become one
  line at the marker's indentation: ``NAME = ...`` when the solution is a single assignment
  ``NAME = <value>``, otherwise ``raise NotImplementedError("Exercise: write this part")``;
* markdown: ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` (both included) becomes
  ``*Write your answer here.*``.

The JSON is written with the input's indentation and key order, non-ASCII kept, and a trailing
newline — what nbformat writes — so regenerating an unchanged solution gives the same bytes.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CODE_BEGIN, CODE_END = "# BEGIN SOLUTION", "# END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
STUB = 'raise NotImplementedError("Exercise: write this part")'
MD_STUB = "*Write your answer here.*"
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?::[^=]+)?=(?!=)")


def strip_solutions(source: str, cell_type: str, where: str = "") -> str:
    """The source with every solution region replaced by its stub; ``ValueError`` on unbalanced markers."""
    begin, end = (CODE_BEGIN, CODE_END) if cell_type == "code" else (MD_BEGIN, MD_END)
    out, region, indent = [], None, ""
    for line in source.splitlines(keepends=True):
        marker = line.strip()
        if marker == begin:
            if region is not None:
                raise ValueError(f"{where}: nested {begin!r}")
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == end:
            if region is None:
                raise ValueError(f"{where}: {end!r} without {begin!r}")
            newline = "\n" if line.endswith("\n") else ""
            out.append(indent + _stub(region, cell_type) + newline)
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise ValueError(f"{where}: {begin!r} without {end!r}")
    return "".join(out)


def _stub(region: list[str], cell_type: str) -> str:
    if cell_type != "code":
        return MD_STUB
    code = [line for line in region if line.strip() and not line.strip().startswith("#")]
    match = _ASSIGNMENT.match(code[0]) if len(code) == 1 else None
    return f"{match.group(1)} = ..." if match else STUB


def exercise_text(solution_text: str, where: str = "") -> str:
    """The exercise notebook's JSON text for a solution notebook's JSON text."""
    nb = json.loads(solution_text)
    indent = _indent(solution_text)
    for i, cell in enumerate(nb["cells"]):
        source = cell["source"]
        text = "".join(source) if isinstance(source, list) else source
        new = strip_solutions(text, cell["cell_type"], f"{where} cell {i + 1}")
        if new != text:
            cell["source"] = new.splitlines(keepends=True) if isinstance(source, list) else new
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(nb, indent=indent, ensure_ascii=False) + "\n"


def _indent(text: str) -> int:
    second = text.split("\n", 2)[1] if text.count("\n") >= 2 else ""
    return (len(second) - len(second.lstrip(" "))) or 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m minilib.grade generate",
                                     description="Write exercises/*.ipynb from solutions/*.ipynb.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises/ is out of date")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    args = parser.parse_args(argv)
    solutions = sorted((args.root / "solutions").glob("*.ipynb"))
    if not solutions:
        parser.error(f"no notebooks in {args.root / 'solutions'}")
    drifted = []
    for src in solutions:
        dst = args.root / "exercises" / src.name
        try:
            text = exercise_text(src.read_text(encoding="utf-8"), str(src))
        except ValueError as e:
            print(f"error: {e}")
            return 2
        if dst.exists() and dst.read_text(encoding="utf-8") == text:
            continue
        drifted.append(dst)
        if not args.check:
            dst.parent.mkdir(exist_ok=True)
            dst.write_text(text, encoding="utf-8")
            print(f"wrote {dst}")
    if args.check and drifted:
        print("out of date (run `python -m minilib.grade generate`):")
        print("\n".join(f"  {d}" for d in drifted))
        return 1
    return 0
