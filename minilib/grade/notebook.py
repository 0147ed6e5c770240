"""Execute a temporary copy of a student notebook and extract its answers by value.

The student's file is read once, copied into a temporary directory and never opened for
writing. The copy runs in a fresh kernel (nbclient) with errors allowed, a per-cell timeout
after which the kernel is interrupted, and ``MINILIB_GRADE_CLI`` set so that in-notebook
``grade.check`` calls return at once. A final injected cell cloudpickles each answer the chapter
asks for into its own file (by value: functions defined in the notebook travel with their code
and the helpers they use) and writes a JSON manifest. The grader reads only that JSON; the
pickles are loaded by child processes (:mod:`minilib.grade.sandbox`), never by the grader.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from minilib.grade import CLI_ENV
from minilib.grade.sandbox import grader_env

_EXPORT = '''\
def __minilib_export(names, out_dir):
    import builtins, json, os, cloudpickle
    scope, manifest = builtins.globals(), {{}}
    for name in names:
        if name not in scope:
            manifest[name] = {{"status": "missing"}}
            continue
        try:
            data = cloudpickle.dumps(scope[name])
        except BaseException as e:
            manifest[name] = {{"status": "error", "error": f"{{type(e).__name__}}: {{e}}"}}
            continue
        with builtins.open(os.path.join(out_dir, name + ".pkl"), "wb") as f:
            f.write(data)
        manifest[name] = {{"status": "ok"}}
    with builtins.open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
__minilib_export({names!r}, {out_dir!r})
'''


@dataclass
class Execution:
    """What running the copy gave: per answer name, the pickle path or why there is none;
    and the errors raised by the notebook's cells (shown to the student, not scored)."""

    answers: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    cell_errors: list[str] = field(default_factory=list)


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Parse a notebook; ``ValueError`` when the file is not a readable notebook."""
    try:
        return nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=4)
    except (OSError, UnicodeDecodeError, ValueError, nbformat.reader.NotJSONError) as e:
        raise ValueError(f"cannot read notebook {path}: {e}") from e


def execute_copy(path: str | Path, names: list[str], workdir: Path, *, timeout: float) -> Execution:
    """Run a copy of the notebook at ``path`` in ``workdir`` and export the answers ``names``."""
    copy = workdir / Path(path).name
    shutil.copyfile(path, copy)
    nb = read_notebook(copy)
    n_student_cells = len(nb.cells)
    out_dir = workdir / "answers"
    out_dir.mkdir()
    nb.cells.append(nbformat.v4.new_code_cell(_EXPORT.format(names=list(names), out_dir=str(out_dir))))
    client = NotebookClient(
        nb, kernel_name="python3", timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "Timeout", "evalue": f"cell ran past {timeout:g} s and was interrupted",
                          "traceback": []},
        resources={"metadata": {"path": str(workdir)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not the transport warning on every run
    )
    env = grader_env(**{CLI_ENV: "1"})
    result = Execution()
    try:
        client.execute(env=env)
    except DeadKernelError:
        ran = [i for i, c in enumerate(nb.cells[:n_student_cells]) if c.get("execution_count") is not None]
        where = f" while running cell {ran[-1] + 1}" if ran else ""
        result.cell_errors.append(f"the kernel died{where}; later cells did not run")
    result.cell_errors += _cell_errors(nb.cells[:n_student_cells], timeout)
    manifest_path = out_dir / "manifest.json"
    manifest = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
    for name in names:
        entry = manifest.get(name) if isinstance(manifest, dict) else None
        status = entry.get("status") if isinstance(entry, dict) else None
        if status == "ok" and (out_dir / f"{name}.pkl").exists():
            result.answers[name] = out_dir / f"{name}.pkl"
        elif status == "missing":
            result.missing[name] = f"{name} is not defined after running the notebook"
        elif status == "error":
            result.missing[name] = f"{name} could not be extracted from the notebook ({entry.get('error', '')})"
        else:
            result.missing[name] = f"{name} could not be extracted: the notebook did not run to the end"
    return result


def _cell_errors(cells, timeout: float) -> list[str]:
    errors = []
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") != "error":
                continue
            if out.get("ename") in ("KeyboardInterrupt", "Timeout"):  # our interrupt at the cell timeout
                errors.append(f"cell {i + 1}: ran past {timeout:g} s and was interrupted")
            else:
                errors.append(f"cell {i + 1}: {out.get('ename')}: {out.get('evalue')}".rstrip(": "))
    return errors
