"""Forbidden-call detection and a wall-clock limit for running student code.

A question may forbid functions (``"torch.nn.functional.scaled_dot_product_attention"``). Three
complementary checks catch them, whatever name the student gave them:

* static: the names referenced by the answer's code objects (and by helper functions it calls)
  are resolved through its globals; a global bound to a forbidden object, or an attribute access
  spelled like a forbidden function (``F.scaled_dot_product_attention``), fails the question even
  if that branch never runs;
* runtime, torch: a :class:`torch.overrides.TorchFunctionMode` sees every torch function and
  ``Tensor`` method actually called, including aliases (``from torch.nn.functional import
  scaled_dot_product_attention as f``) and methods (``x.softmax``);
* runtime, Python: ``sys.setprofile`` sees calls to forbidden pure-Python functions (e.g.
  ``minilib.attention.sdpa``) by their code object.
"""
from __future__ import annotations

import builtins
import contextlib
import importlib
import signal
import sys
import threading
import types

from torch.overrides import TorchFunctionMode


class ForbiddenCall(BaseException):
    """Raised inside student code on a forbidden call; a BaseException so that a bare
    ``except Exception`` in the answer does not swallow it (it is also recorded)."""


class Timeout(BaseException):
    """The answer ran past its time limit."""


def resolve(qualified: str):
    """The object a dotted name refers to, or None when its module cannot be imported."""
    parts = qualified.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


class Forbidden:
    """The forbidden functions of one question, resolved once."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        resolved = {qn: resolve(qn) for qn in names}
        self.objects = {qn: o for qn, o in resolved.items() if o is not None}
        # torch functions are matched by their short name, so that torch.softmax, F.softmax and
        # Tensor.softmax are one rule; Python functions by their code object.
        self.torch_names, self.attr_names = {}, {}
        for qn in names:
            short = qn.rsplit(".", 1)[1]
            self.attr_names.setdefault(short, qn)
            if qn.startswith("torch."):
                self.torch_names.setdefault(short, qn)
        self.codes = {}
        for qn, obj in self.objects.items():
            funcs = vars(obj).values() if isinstance(obj, type) else [obj]
            for f in funcs:
                if isinstance(f, types.FunctionType) and not qn.startswith("torch."):
                    self.codes[f.__code__] = qn

    def static_violations(self, func) -> list[str]:
        """Forbidden names referenced by ``func``'s code (recursing into helpers it uses)."""
        found, seen = [], set()
        ids = {id(o): qn for qn, o in self.objects.items()}

        def visit(fn):
            if not isinstance(fn, types.FunctionType) or fn in seen:
                return
            seen.add(fn)
            cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
            for value in _closure_values(cells):
                _check_value(value)
            for name in _names(fn.__code__):
                if name in fn.__globals__:
                    _check_value(fn.__globals__[name])
                elif not hasattr(builtins, name) and name in self.attr_names:
                    found.append(f"{self.attr_names[name]} (referenced as .{name})")

        def _check_value(value):
            if id(value) in ids:
                found.append(ids[id(value)])
            elif isinstance(value, types.FunctionType):
                visit(value)

        visit(func)
        return sorted(set(found))

    @contextlib.contextmanager
    def watching(self, calls: list[str]):
        """Within the block, a forbidden call is appended to ``calls`` and raises ForbiddenCall."""
        if not self.names:
            yield
            return
        previous = sys.getprofile()

        def profile(frame, event, arg):
            if event == "call" and frame.f_code in self.codes:
                calls.append(self.codes[frame.f_code])
                sys.setprofile(None)  # the raise below must not re-enter this hook
                raise ForbiddenCall(self.codes[frame.f_code])

        sys.setprofile(profile)
        try:
            with _TorchWatch(self, calls):
                yield
        finally:
            sys.setprofile(previous)


class _TorchWatch(TorchFunctionMode):
    def __init__(self, forbidden: Forbidden, calls: list[str]):
        super().__init__()
        self.forbidden, self.calls = forbidden, calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        qn = self.forbidden.torch_names.get(getattr(func, "__name__", None))
        if qn is not None:
            self.calls.append(qn)
            raise ForbiddenCall(qn)
        return func(*args, **(kwargs or {}))


def _names(code: types.CodeType):
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _closure_values(cells):
    for cell in cells.values():
        try:
            yield cell.cell_contents
        except ValueError:  # empty cell
            continue


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`Timeout` in the main thread after ``seconds`` (no limit elsewhere).

    Used by in-notebook checks; the CLI instead kills the child process, which also stops
    code stuck inside a C call.
    """
    if threading.current_thread() is not threading.main_thread() or not seconds:
        yield
        return

    def on_alarm(signum, frame):
        raise Timeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
