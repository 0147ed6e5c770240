"""Run one answer in a child process, so that only the child ever executes student code.

Why a child process: the student's function may loop forever, crash the interpreter, patch
torch or numpy, or try to reach the grader's state. In a separate process it can be killed at the
time limit (its whole process group), and nothing it changes reaches the grader.

Why no pickle back: unpickling can execute arbitrary code, so the child returns only plain data —
a JSON header and raw float64 bytes (:func:`minilib.grade.runner.to_wire`). The child builds the
inputs from the same fixed seeds and reports only what the answer returned; the verdict is
computed in the parent from its own copy of the inputs and its own reference.

Children are forked from a small fork server, a process started once per grading run that has
already imported torch and built every question's inputs, so a child starts in milliseconds rather
than the second or more that ``import torch`` takes. The server never runs student code itself.

Protocol, one line of JSON each way: the parent sends ``{"question", "answer", "out"}``; the server
forks a child (its own session, stdout/stderr to /dev/null so it cannot write into the protocol)
and answers ``{"pid"}``, then ``{"exit"}`` once the child has ended. The parent kills the child's
process group when the time limit passes. The child writes its outputs to ``out/out.bin``.
"""
from __future__ import annotations

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minilib.grade.questions import Question
from minilib.grade.runner import Output, from_wire


_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def grader_env(**extra: str) -> dict[str, str]:
    """Environment for the kernel and the fork server: this grader's minilib first on the path."""
    path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


class Sandbox:
    """A fork server for running answers; use as a context manager around a grading run."""

    def __enter__(self) -> "Sandbox":
        self._start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _start(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "minilib.grade.sandbox"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=grader_env(OMP_NUM_THREADS="1"))
        self._buffer = b""

    def _stop(self) -> None:
        # Idle between jobs, so stopping it outright loses nothing and skips torch's slow exit.
        self._proc.kill()
        self._proc.wait()
        self._proc.stdin.close()
        self._proc.stdout.close()

    def run(self, answer_path: str | Path, question: Question, *, timeout: float) -> list[Output] | Output:
        """Load the cloudpickled answer in a fresh child and run it on ``question``'s cases.

        The child, and anything it started, is killed after ``timeout`` seconds. An answer that
        kills the fork server scores 0 for that question; a new server grades the next one.
        """
        try:
            return self._run(answer_path, question, timeout)
        except (RuntimeError, BrokenPipeError, TimeoutError, ValueError) as e:
            self._stop()
            self._start()
            return Output("error", f"the answer stopped the grader's fork server ({e}); graded 0, the grader went on")

    def _run(self, answer_path, question, timeout) -> list[Output] | Output:
        with tempfile.TemporaryDirectory(prefix="minilib-grade-child-") as tmp:
            job = {"question": question.id, "answer": str(answer_path), "out": tmp}
            self._proc.stdin.write(json.dumps(job).encode() + b"\n")
            self._proc.stdin.flush()
            pid = int(self._read(deadline=time.monotonic() + 120)["pid"])
            try:
                status = int(self._read(deadline=time.monotonic() + timeout)["exit"])
            except TimeoutError:
                _kill_group(pid)
                self._read(deadline=time.monotonic() + 60)
                return Output("timeout", f"timed out after {timeout:g} s (the grader stopped it)")
            except RuntimeError:
                _kill_group(pid)  # the server died under it: stop the answer too
                raise
            out = Path(tmp) / "out.bin"
            if not out.exists():
                return Output("error", f"the answer ended its process (exit status {status}) before returning")
            try:
                return from_wire(out.read_bytes())
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
                return Output("error", f"the grader could not read the answer's outputs ({e})")

    def _read(self, deadline: float) -> dict:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("the grader's fork server stopped unexpectedly")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):  # the group; the child itself if not yet its leader
        try:
            kill(target, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


def _serve() -> None:
    """Fork server loop (runs in its own process, started by :class:`Sandbox`)."""
    import cloudpickle  # noqa: F401  (loaded before forking, like everything the children need)
    import torch

    from minilib.grade.guard import rules
    from minilib.grade.questions import registry

    torch.set_num_threads(1)
    for q in registry().values():
        q.cases()
        q.work_limits()
        rules(q.forbidden)
    for line in sys.stdin.buffer:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _child(job["question"], job["answer"], job["out"])
                code = 0
            finally:
                os._exit(code)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


def _child(question_id: str, answer_path: str, out_dir: str) -> None:
    """Child process body: the only place where the CLI runs student code."""
    os.setsid()  # its own process group, so that the parent can kill whatever it starts
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    from minilib.grade.guard import Guard, rules
    from minilib.grade.questions import get
    from minilib.grade.runner import run_cases, to_wire

    question = get(question_id)
    question.work_limits()  # grader code: before the guard makes it off limits
    # The rules hold for the rest of this process's life, from before the answer is unpickled
    # (unpickling can run code); nothing here keeps what they replaced.
    guard = Guard(rules(question.forbidden), [], track_sizes=question.max_intermediate is not None)
    guard.install()
    guard.forget_originals()
    try:
        answer = pickle.loads(Path(answer_path).read_bytes())
    except BaseException as e:
        outputs = Output("error", f"could not load the answer outside the notebook: {type(e).__name__}: {e}")
    else:
        outputs = run_cases(answer, question, guard=guard)
    tmp = Path(out_dir) / "out.tmp"
    tmp.write_bytes(to_wire(outputs))
    tmp.rename(Path(out_dir) / "out.bin")


if __name__ == "__main__":
    _serve()
