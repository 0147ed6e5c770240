"""Run a student's answer on a question's cases and keep only raw outputs.

This is the only module that executes student code. It runs in the notebook's own process for
``grade.check`` and in a throw-away child process for the CLI (see :mod:`minilib.grade.sandbox`).
Either way an output is reduced to plain data, :class:`Output`: a status, the answer's dtype and
shape, and its values as a float64 numpy array. The verdict is computed elsewhere
(:mod:`minilib.grade.compare`) against the grader's own reference.
"""
from __future__ import annotations

import contextlib
import json
import os
import traceback
from dataclasses import dataclass

import numpy as np
import torch

from minilib.grade.guard import Forbidden, ForbiddenCall, Guard, Timeout, rules, time_limit
from minilib.grade.questions import Case, Question


@dataclass
class Output:
    """What one call of the answer produced.

    status: ``"ok"``, ``"error"`` (raised), ``"forbidden"``, ``"timeout"``, ``"bad_type"``
    (returned something other than a real tensor) or ``"too_large"`` (built a tensor larger than
    the question allows, see ``Question.max_intermediate``); ``message`` says what went wrong.
    """

    status: str
    message: str = ""
    dtype: str = ""
    shape: tuple = ()
    values: np.ndarray | None = None


def run_cases(func, question: Question, *, timeout: float | None = None, guard: Guard | None = None
              ) -> list[Output] | Output:
    """Call ``func`` on every case of ``question`` under the question's off-limits rules.

    Returns one :class:`Output` per case, or a single Output when the whole question fails
    before any case runs (not callable, forbidden reference) or runs past ``timeout`` seconds.
    Each case gets fresh copies of the inputs, so an answer that works in place cannot spoil the
    next case or the reference. ``guard``: one already installed for good (the CLI's child
    process); otherwise a guard is installed around each call and removed after it.
    """
    if not callable(func):
        return Output("bad_type", f"expected a function named {question.name}, got {type(func).__name__}")
    forbidden = rules(question.forbidden)
    static = forbidden.static_violations(func)
    if static:
        return Output("forbidden", f"uses forbidden {', '.join(static)}")
    outputs = []
    try:
        with time_limit(timeout):
            for case, limit in zip(question.cases(), question.work_limits()):
                outputs.append(_run_one(func, case, limit, question, forbidden, guard))
    except Timeout as e:
        return Output("timeout", str(e))
    return outputs


def _copy(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _run_one(func, case: Case, limit: int | None, question: Question, forbidden: Forbidden,
             guard: Guard | None) -> Output:
    args = tuple(_copy(a) for a in case.args)
    kwargs = {k: _copy(v) for k, v in case.kwargs.items()}
    calls: list[str] = guard.calls if guard else []
    calls.clear()
    tampered = None
    with contextlib.ExitStack() as stack:
        if guard is None:
            guard = stack.enter_context(forbidden.watching(calls, track_sizes=limit is not None))
        guard.reset_sizes()
        try:
            with torch.no_grad():
                # read out under the guard too: a tensor subclass could compute when it is converted
                plain = _plain(func(*args, **kwargs))
        except (Exception, ForbiddenCall, SystemExit) as e:
            plain, error = None, e
        else:
            error = None
        tampered = guard.tampering()
        largest = guard.largest
    if calls:  # also when the answer caught our ForbiddenCall itself
        return Output("forbidden", f"called forbidden {calls[0]}")
    if tampered:
        return Output("forbidden", f"switched off the grader's guard: {tampered}")
    if error is not None:
        return Output("error", describe_exception(error))
    if plain.status == "ok" and limit is not None and largest[0] > limit:
        return Output("too_large", f"built a {largest[1]} tensor ({largest[0]} values); {question.work_rule} "
                      f"allows at most {limit} values in one tensor here")
    return plain


def _plain(out) -> Output:
    """The answer's return value as plain data (float64 numpy values), or why it is not a real tensor."""
    if not isinstance(out, torch.Tensor):
        return Output("bad_type", f"returned {type(out).__name__}, expected a torch.Tensor")
    if out.is_complex():
        return Output("bad_type", f"returned a complex tensor ({out.dtype}), expected a real one")
    dtype = str(out.dtype).removeprefix("torch.")
    values = out.detach().to("cpu", torch.float64).numpy()
    return Output("ok", dtype=dtype, shape=tuple(out.shape), values=values)


NOT_IMPLEMENTED = "not implemented yet"
_LIBRARY_DIRS = (os.path.dirname(__file__), os.path.dirname(torch.__file__))


def describe_exception(e: BaseException) -> str:
    """``"ValueError: ... (in stable_softmax, line 3)"`` — the exception and the last frame of
    its traceback, which is where the student's code failed."""
    text = f"{type(e).__name__}: {e}".strip().rstrip(":")
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}): the answer tried to end the program"
    if isinstance(e, NotImplementedError):
        return f"{NOT_IMPLEMENTED} ({text})"
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if not f.filename.startswith(_LIBRARY_DIRS)] or frames  # the student's frames
    where = f" (in {own[-1].name}, line {own[-1].lineno})" if own else ""
    return text + where


def torch_op_name(obj) -> str | None:
    """``"aten.rsqrt.default"`` for a torch operator object (``torch.ops``, a namespace, an op or one
    of its overloads), which pickle cannot carry by value; None for anything else."""
    if isinstance(obj, torch._ops._Ops):
        return ""
    if isinstance(obj, torch._ops._OpNamespace):
        return obj.name
    if isinstance(obj, torch._ops.OpOverloadPacket):
        return obj._qualified_op_name.replace("::", ".")
    if isinstance(obj, torch._ops.OpOverload):
        return f"{obj._schema.name.replace('::', '.')}.{obj._overloadname}"
    return None


def load_torch_op(name: str):
    """The torch operator object :func:`torch_op_name` named."""
    obj = torch.ops
    for part in filter(None, name.split(".")):
        obj = getattr(obj, part)
    return obj


# Wire format used by the child process: a JSON header describing every output, then the raw
# float64 bytes of the values. Deliberately no pickle, so that reading a child's answer cannot
# execute code in the grader.

def to_wire(outputs: list[Output] | Output) -> bytes:
    items = outputs if isinstance(outputs, list) else [outputs]
    header, blobs, offset = [], [], 0
    for o in items:
        entry = {"status": o.status, "message": o.message, "dtype": o.dtype, "shape": list(o.shape)}
        if o.values is not None:
            blob = np.ascontiguousarray(o.values, dtype="<f8").tobytes()
            entry.update(offset=offset, nbytes=len(blob))
            blobs.append(blob)
            offset += len(blob)
        header.append(entry)
    head = json.dumps({"whole_question": not isinstance(outputs, list), "outputs": header}).encode()
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def from_wire(data: bytes) -> list[Output] | Output:
    """Parse :func:`to_wire` bytes; ``ValueError`` on anything malformed."""
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8:8 + n].decode())
    body = data[8 + n:]
    outputs = []
    for e in head["outputs"]:
        shape = tuple(int(s) for s in e["shape"])
        values = None
        if "offset" in e:
            start, nbytes = int(e["offset"]), int(e["nbytes"])
            if nbytes != 8 * int(np.prod(shape)) or start < 0 or start + nbytes > len(body):
                raise ValueError("output size does not match its shape")
            values = np.frombuffer(body[start:start + nbytes], dtype="<f8").reshape(shape)
        outputs.append(Output(str(e["status"]), str(e["message"]), str(e["dtype"]), shape, values))
    if head["whole_question"]:
        if len(outputs) != 1:
            raise ValueError("malformed whole-question output")
        return outputs[0]
    return outputs
