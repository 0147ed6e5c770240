"""Verdicts: compare an answer's raw outputs with the grader's own float64 reference.

Runs only grader code. The reference is computed here from the grader's copy of the inputs,
so nothing the student's code did (in the notebook or in the child process) can change it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from minilib.grade.questions import Case, Question, expected_dtype, upcast
from minilib.grade.runner import NOT_IMPLEMENTED, Output


@dataclass
class Result:
    """The verdict on one question.

    ``message`` is one line (for a table row); ``details`` holds the first counterexample:
    case, inputs, expected, got, max_abs_error, tolerance, hint.
    """

    question: str
    passed: bool
    message: str
    details: dict = field(default_factory=dict)
    points: int = 0
    max_points: int = 1

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def explain(self) -> str:
        """The counterexample as indented lines (empty when passed)."""
        keys = ["case", "inputs", "expected", "got", "max_abs_error", "tolerance", "hint"]
        return "\n".join(f"    {k}: {self.details[k]}" for k in keys if k in self.details)

    def __repr__(self) -> str:
        return f"Result({self.question}: {self.status} — {self.message})"

    def _ipython_display_(self):
        # check() has already printed the row; showing the Result again would repeat it.
        pass


def verdict(question: Question, outputs: list[Output] | Output) -> Result:
    """Result for ``question`` given the answer's outputs (or one whole-question failure)."""
    if isinstance(outputs, Output):
        return _fail(question, outputs.message, {"hint": question.hint})
    cases = question.cases()
    if len(outputs) != len(cases):
        return _fail(question, f"the answer produced {len(outputs)} outputs for {len(cases)} cases", {})
    for i, (case, out) in enumerate(zip(cases, outputs)):
        if out.status == "error" and out.message.startswith(NOT_IMPLEMENTED):
            return _fail(question, out.message, {})  # a stub: no counterexample to show
        problem = _check_case(question, case, out)
        if problem:
            message, details = problem
            where = f"case {i + 1}/{len(cases)} ({case.label})"
            details = {"case": where, "inputs": describe_inputs(case, question.arg_names), **details,
                       "hint": case.hint or question.hint}
            return _fail(question, f"{where}: {message}", details)
    return Result(question.id, True, f"all {len(cases)} cases match", {}, question.points, question.points)


def _fail(question, message, details):
    return Result(question.id, False, message, details, 0, question.points)


def _check_case(question: Question, case: Case, out: Output):
    if out.status != "ok":
        return out.message, {}
    expected = question.reference(*map(upcast, case.args), **{k: upcast(v) for k, v in case.kwargs.items()})
    expected = expected.numpy()
    want_dtype = str(expected_dtype(case)).removeprefix("torch.")
    if tuple(out.shape) != tuple(expected.shape):
        return (f"wrong shape: got {tuple(out.shape)}, expected {tuple(expected.shape)}",
                {"expected": f"shape {tuple(expected.shape)}", "got": f"shape {tuple(out.shape)}"})
    if out.dtype != want_dtype:
        return (f"wrong dtype: got {out.dtype}, expected {want_dtype} (the input's dtype)",
                {"expected": want_dtype, "got": out.dtype})
    got = out.values
    bad = ~np.isfinite(got) & np.isfinite(expected)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        return (f"output has {int(bad.sum())} NaN/Inf value(s) where the reference is finite, "
                f"first at index {index}", _excerpts(expected, got, index, "first NaN/Inf"))
    atol, rtol = case.tolerance or question.tolerance[expected_dtype(case)]
    err = np.abs(got - expected)
    over = err > atol + rtol * np.abs(expected)
    if over.any():
        index = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(over, err, -1)), err.shape))
        details = _excerpts(expected, got, index)
        details.update(max_abs_error=f"{err.max():.3g}", tolerance=f"atol {atol:g} + rtol {rtol:g} * |expected|")
        return f"max abs error {err.max():.3g} exceeds the tolerance (atol {atol:g}, rtol {rtol:g})", details
    return None


def _fmt(a: np.ndarray, precision: int = 4) -> str:
    return np.array2string(a, precision=precision, separator=", ", threshold=8, edgeitems=4, max_line_width=200)


def _excerpts(expected, got, index, what="largest error"):
    """The last-axis row around ``index``, from both arrays, with enough digits to differ."""
    row = index[:-1]
    with np.errstate(invalid="ignore"):
        small = np.nanmax(np.abs(got[row] - expected[row]), initial=0.0) < 1e-3
    digits = 10 if small else 4
    where = "(" + "".join(f"{i}, " for i in row) + ":)"
    return {"expected": f"{_fmt(expected[row], digits)} (row {where}, {what} at index {index})",
            "got": _fmt(got[row], digits)}


def describe_inputs(case: Case, arg_names: tuple = ()) -> str:
    """Shapes, dtypes and a few leading values of a case's inputs."""
    parts = []
    names = list(arg_names) + [f"arg{i}" for i in range(len(arg_names), len(case.args))]
    named = list(zip(names, case.args)) + list(case.kwargs.items())
    for name, value in named:
        if isinstance(value, torch.Tensor):
            flat = value.reshape(-1)[:4].tolist()
            more = ", ..." if value.numel() > 4 else ""
            vals = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat)
            parts.append(f"{name} {tuple(value.shape)} {str(value.dtype)[6:]} [{vals}{more}]")
        else:
            parts.append(f"{name}={value!r}")
    return "; ".join(parts)
