"""``python -m minilib.grade generate``: exercises are derived from solutions, exactly."""
import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from minilib.grade.generate import MD_STUB, STUB, exercise_text, main, strip_solutions
from tests.grade_support.nbcode import ROOT


def test_committed_exercises_are_up_to_date():
    proc = subprocess.run([sys.executable, "-m", "minilib.grade", "generate", "--check", "--root", str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_modified_solution_is_detected_and_regenerated(tmp_path, capsys):
    for folder in ("solutions", "exercises"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    sol = tmp_path / "solutions" / "01_transformer.ipynb"
    nb = nbformat.read(sol, as_version=4)
    nb.cells[1].source += "\nimport math"
    nbformat.write(nb, sol)
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert "exercises/01_transformer.ipynb" in capsys.readouterr().out
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    assert "import math" in (tmp_path / "exercises" / "01_transformer.ipynb").read_text()


def test_exercises_differ_from_solutions_only_in_solution_regions():
    sol = json.loads((ROOT / "solutions" / "01_transformer.ipynb").read_text())
    ex = json.loads((ROOT / "exercises" / "01_transformer.ipynb").read_text())
    assert len(sol["cells"]) == len(ex["cells"]) and sol["metadata"] == ex["metadata"]
    changed = 0
    for s, e in zip(sol["cells"], ex["cells"]):
        s_src, e_src = "".join(s["source"]), "".join(e["source"])
        if "BEGIN SOLUTION" in s_src:
            changed += 1
            assert "SOLUTION" not in e_src and (STUB in e_src or MD_STUB in e_src)
        else:
            assert s == e
    assert changed == 7  # six functions and the open question


def test_stub_rules():
    code = "def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    return x + y\n    # END SOLUTION\n"
    assert strip_solutions(code, "code") == f"def f(x):\n    y = 1\n    {STUB}\n"
    value = "# BEGIN SOLUTION\nanswer: float = 0.5  # the rate\n# END SOLUTION"
    assert strip_solutions(value, "code") == "answer = ..."
    md = "Why?\n\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->\nMore."
    assert strip_solutions(md, "markdown") == f"Why?\n\n{MD_STUB}\nMore."
    for bad in ["# BEGIN SOLUTION\nx = 1\n", "x = 1\n# END SOLUTION\n", "# BEGIN SOLUTION\n# BEGIN SOLUTION\n"]:
        with pytest.raises(ValueError):
            strip_solutions(bad, "code")


def test_outputs_cleared_and_everything_else_byte_identical():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('é')", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="é\n")]),
        nbformat.v4.new_markdown_cell("Ünïcode $x^2$"),
    ])
    text = nbformat.writes(nb) + "\n"
    out = exercise_text(text)
    cleared = json.loads(text)
    cleared["cells"][0]["outputs"], cleared["cells"][0]["execution_count"] = [], None
    assert out == json.dumps(cleared, indent=1, ensure_ascii=False) + "\n"
    nb.cells[0].outputs, nb.cells[0].execution_count = [], None
    assert out == nbformat.writes(nb) + "\n"  # what nbformat itself writes, byte for byte
    two = json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    assert exercise_text(two).split("\n")[1].startswith('  "cells"')
