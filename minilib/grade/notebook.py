"""Execute a temporary copy of a student notebook and extract its answers by value.

The student's file is read once and never opened for writing. Its folder is copied into a
temporary directory (so ``from helpers import f`` works as it does in Jupyter) and the copy runs
there in a fresh kernel (nbclient) with errors allowed and ``MINILIB_GRADE_CLI`` set, so that
in-notebook ``grade.check`` calls return at once.

Limits: a cell still running after ``timeout`` seconds is interrupted; one that swallows the
interrupt (``except: pass`` around a loop) is stopped ``GRACE`` seconds later by killing the
kernel's process group, and the notebook is run again from the start without that cell, so the
answers defined elsewhere are still graded. A whole run is stopped after ``notebook_timeout``.

A final injected cell cloudpickles each answer the chapter asks for into its own file (by value:
functions defined in the notebook, and modules from the notebook's folder, travel with their code;
torch operator objects such as ``torch.ops.aten.rsqrt`` by name) and writes a JSON manifest. The
grader reads only that JSON; the pickles are loaded by child processes
(:mod:`minilib.grade.sandbox`), never by the grader.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from minilib.grade import CLI_ENV
from minilib.grade.sandbox import grader_env

GRACE = 5.0  # seconds between the interrupt and the kill of a cell that ignores it
OUTPUT_BUDGET = 20_000_000  # characters of cell output kept in all (errors are always kept)
MAX_COPY_BYTES = 50_000_000  # the notebook's folder is copied only up to this size (then only .py files)
_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".ipynb_checkpoints", "node_modules", "_build"}

_EXPORT = '''\
def __minilib_export(names, out_dir):
    import builtins, json, os, sys, cloudpickle
    from minilib.grade.runner import torch_op_name, load_torch_op
    here = os.path.realpath(os.getcwd())
    for module in list(sys.modules.values()):  # the student's own modules go by value
        path = os.path.realpath(getattr(module, "__file__", None) or "/")
        if path.startswith(here + os.sep):
            cloudpickle.register_pickle_by_value(module)

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            op = torch_op_name(obj)
            return (load_torch_op, (op,)) if op is not None else super().reducer_override(obj)

    scope, manifest = builtins.globals(), {{}}
    for name in names:
        if name not in scope:
            manifest[name] = {{"status": "missing"}}
            continue
        try:
            with builtins.open(os.path.join(out_dir, name + ".pkl"), "wb") as f:
                Pickler(f).dump(scope[name])
        except BaseException as e:
            manifest[name] = {{"status": "error", "error": f"{{type(e).__name__}}: {{e}}"}}
            continue
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


def copy_folder(notebook: Path, dest: Path) -> Path:
    """Copy the notebook's folder to ``dest`` (its files only up to MAX_COPY_BYTES in all, else its
    ``.py`` files); returns the copy of the notebook. Links are copied as links."""
    src = notebook.parent
    files = []
    for root, dirs, names in os.walk(src):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        files += [Path(root) / n for n in names]
    sizes = {f: f.lstat().st_size for f in files}
    if sum(sizes.values()) > MAX_COPY_BYTES:
        files = [f for f in files if f.suffix == ".py" and sizes[f] < MAX_COPY_BYTES // 10]
    for f in files:
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.is_symlink():
            target.symlink_to(os.readlink(f))
        elif f.is_file():
            shutil.copyfile(f, target)
    copy = dest / notebook.name
    shutil.copyfile(notebook, copy)
    return copy


def code_cell_numbers(cells) -> dict[int, int]:
    """Cell index -> its number as Jupyter shows it after a fresh run, ``In [n]`` (code cells only)."""
    return {i: n for n, i in enumerate((i for i, c in enumerate(cells) if c.cell_type == "code"), start=1)}


def execute_copy(path: str | Path, names: list[str], workdir: Path, *, timeout: float,
                 notebook_timeout: float = 600.0, questions: dict[str, str] | None = None) -> Execution:
    """Run a copy of the notebook at ``path`` in a copy of its folder under ``workdir`` and export
    the answers ``names``. ``questions`` (answer name -> question id) names the question of a
    failing cell in the errors."""
    copy = copy_folder(Path(path), workdir / "notebook")
    original = read_notebook(copy)
    n_student_cells = len(original.cells)
    numbers = code_cell_numbers(original.cells)
    out_dir = workdir / "answers"
    out_dir.mkdir()
    result = Execution()
    skipped: dict[int, str] = {}
    deadline = time.monotonic() + notebook_timeout
    while True:
        for stale in out_dir.iterdir():
            stale.unlink()
        nb = read_notebook(copy)
        for i, why in skipped.items():
            nb.cells[i].source = f"# skipped by the grader: {why}"
        nb.cells.append(nbformat.v4.new_code_cell(_EXPORT.format(names=list(names), out_dir=str(out_dir))))
        run = _run(nb, copy.parent, timeout, deadline)
        if run.hung is not None and run.hung < n_student_cells and len(skipped) < 3 and time.monotonic() < deadline:
            skipped[run.hung] = f"it ignored the interrupt after {timeout:g} s"
            continue
        break
    where = lambda i: _where(i, numbers, original.cells, questions or {})  # noqa: E731
    if run.hung is not None and run.hung >= n_student_cells:
        result.cell_errors.append(f"extracting the answers ran past {timeout:g} s (an answer that cannot be "
                                  "pickled in time); the kernel was stopped")
    for i in skipped:
        result.cell_errors.append(f"{where(i)}: still running {GRACE:g} s after the interrupt at {timeout:g} s; "
                                  "the kernel was stopped and the notebook run again without this cell")
    if run.died_at is not None:
        if run.died_at >= n_student_cells:
            result.cell_errors.append("the kernel died while the grader extracted the answers")
        elif run.over_time:
            result.cell_errors.append(f"the notebook ran past {notebook_timeout:g} s in all ({where(run.died_at)} "
                                      "was running); it was stopped, later cells did not run")
        else:
            result.cell_errors.append(f"the kernel died while running {where(run.died_at)}; later cells did not run")
    result.cell_errors += _cell_errors(nb.cells[:n_student_cells], timeout, where)
    _read_manifest(out_dir, names, result)
    return result


def _where(i: int, numbers: dict[int, int], cells, questions: dict[str, str]) -> str:
    text = f"cell In [{numbers[i]}]" if i in numbers else f"cell {i + 1}"
    source = cells[i].source if i < len(cells) else ""
    for name, qid in questions.items():
        if re.search(rf"\bdef {re.escape(name)}\b|{re.escape(qid)}", source):
            return f"{text} (question {qid}, {name})"
    return text


@dataclass
class _Run:
    hung: int | None = None  # a cell that ignored the interrupt and was killed
    died_at: int | None = None  # the cell running when the kernel died
    over_time: bool = False


class _Watchdog:
    """Interrupts a cell at ``timeout`` and kills the kernel's process group ``GRACE`` seconds later,
    or when the notebook's ``deadline`` passes; nbclient then sees a dead kernel."""

    def __init__(self, client: NotebookClient, timeout: float, deadline: float):
        self.client, self.timeout, self.deadline = client, timeout, deadline
        self.current: tuple[int, float] | None = None
        self.interrupted, self.pgid = False, None
        self.run = _Run()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def cell_started(self, cell=None, cell_index=None, **_):
        self.current, self.interrupted = (cell_index, time.monotonic()), False
        self.pgid = getattr(getattr(self.client.km, "provisioner", None), "pgid", None) or self.pgid

    def cell_finished(self, **_):
        self.current = None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        if self.pgid:  # a kernel whose parent the notebook killed is still running: end the group
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _signal(self, signum: int, group: bool) -> None:
        provisioner = getattr(self.client.km, "provisioner", None)
        pid = getattr(provisioner, "pid", None)
        pgid = getattr(provisioner, "pgid", None)
        try:
            if group and pgid:
                os.killpg(pgid, signum)
            elif pid:
                os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _loop(self):
        while not self._done.wait(0.2):
            now, current = time.monotonic(), self.current
            if now > self.deadline:
                self.run.over_time = True
                self._signal(signal.SIGKILL, group=True)
                return
            if current is None:
                continue
            index, started = current
            if not self.interrupted and now - started > self.timeout:
                self.interrupted = True
                self._signal(signal.SIGINT, group=False)
            elif now - started > self.timeout + GRACE:
                self.run.hung = index
                self._signal(signal.SIGKILL, group=True)
                return


# The kernel's parent: forwards signals to the kernel and ends with it, or kills it when the grader
# is gone. A notebook that kills its parent process (os.kill(os.getppid(), ...)) stops this, not
# the grader, and the kernel runs on: it is started without JPY_PARENT_PID, because ipykernel exits
# when it is orphaned to process 1, and the grader kills its process group when the run ends. The
# kernel's own stdout (its banner, a student's os.write(1, ...)) goes nowhere: the grader's stdout
# carries the JSON report.
_KERNEL_PARENT = """\
import os, signal, sys, time
grader = os.getppid()
pid = os.fork()
if pid == 0:
    os.environ.pop("JPY_PARENT_PID", None)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, lambda signum, frame: os.kill(pid, signum))
while True:
    ended, status = os.waitpid(pid, os.WNOHANG)
    if ended:
        sys.exit(os.waitstatus_to_exitcode(status) % 256)
    if os.getppid() != grader:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
"""


class _KernelManager(AsyncKernelManager):
    def format_kernel_cmd(self, extra_arguments=None):
        return [sys.executable, "-c", _KERNEL_PARENT, *super().format_kernel_cmd(extra_arguments)]

    async def _async_is_alive(self) -> bool:
        """Alive while the launched parent runs or, once the notebook has killed it, while the
        kernel in its process group runs on; otherwise nbclient would call a live kernel dead."""
        if await super()._async_is_alive():
            return True
        pgid = getattr(self.provisioner, "pgid", None)
        return self.owns_kernel and pgid is not None and _group_runs(pgid)

    is_alive = _async_is_alive


def _group_runs(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs. An orphaned kernel that died is a zombie until
    process 1 reaps it, which not every container's first process does, so zombies do not count
    where ``/proc`` tells them apart (Linux)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we read
        if int(group) == pgid and state != "Z":
            return True
    return False


class _Client(NotebookClient):
    """Keeps at most OUTPUT_BUDGET characters of output, so that a cell printing in a loop cannot
    fill the grader's memory; error outputs (which the report reads) are always kept."""

    spent = 0

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] != "error":
            self.spent += sum(len(str(v)) for v in msg.get("content", {}).values())
            if self.spent > OUTPUT_BUDGET:
                return None
        return super().output(outs, msg, display_id, cell_index)


def _run(nb, folder: Path, timeout: float, deadline: float) -> _Run:
    client = _Client(
        nb, kernel_name="python3", timeout=None, allow_errors=True, kernel_manager_class=_KernelManager,
        resources={"metadata": {"path": str(folder)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not the transport warning on every run
    )
    watchdog = _Watchdog(client, timeout, deadline)
    client.on_cell_execute = watchdog.cell_started
    client.on_cell_executed = watchdog.cell_finished
    with watchdog:
        try:
            client.execute(env=grader_env(**{CLI_ENV: "1"}))
        except DeadKernelError:
            ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is not None]
            index = watchdog.current[0] if watchdog.current else (ran[-1] if ran else None)
            watchdog.run.died_at = index
    if watchdog.run.hung is not None:
        watchdog.run.died_at = None
    return watchdog.run


def _read_manifest(out_dir: Path, names: list[str], result: Execution) -> None:
    manifest = {}
    manifest_path = out_dir / "manifest.json"
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


def _cell_errors(cells, timeout: float, where) -> list[str]:
    errors = []
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") != "error":
                continue
            if out.get("ename") == "KeyboardInterrupt":  # our interrupt at the cell timeout
                errors.append(f"{where(i)}: ran past {timeout:g} s and was interrupted")
            else:
                errors.append(f"{where(i)}: {out.get('ename')}: {out.get('evalue')}".rstrip(": "))
    return errors
