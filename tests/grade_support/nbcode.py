"""Load the functions a notebook defines, without running its check cells."""
from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions" / "01_transformer.ipynb"
EXERCISES = ROOT / "exercises" / "01_transformer.ipynb"


def namespace(path: Path) -> dict:
    """Execute every code cell of ``path`` except ``grade.check`` cells; return the globals."""
    nb = nbformat.read(path, as_version=4)
    scope: dict = {"__name__": "__main__"}
    for cell in nb.cells:
        if cell.cell_type == "code" and "grade.check(" not in cell.source:
            exec(compile(cell.source, str(path), "exec"), scope)
    return scope
