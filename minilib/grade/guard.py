"""Off-limits enforcement and a wall-clock limit for running student code.

A question lists what its answer may not use (``Question.forbidden``). An entry is one of

* a torch function, ``"torch.nn.functional.scaled_dot_product_attention"``: every route to it is
  closed at torch's dispatcher, where it cannot be renamed — the aten kernels it reaches
  (:data:`ATEN_OPS`: ``torch.softmax``, ``F.softmin``, ``x.softmax`` and ``torch._softmax`` all end in
  ``aten._softmax``) are replaced, while the answer runs, by kernels that refuse;
* an aten op, ``"aten._softmax"`` (the same, spelled directly);
* a library function or class, ``"minilib.attention.sdpa"``, or a whole module,
  ``"minilib.flash"`` (every function and method defined in it): while the answer runs, their code
  is swapped for code that refuses, so no alias, ``getattr``, helper or thread can reach it.

The grader's own answers (every function in ``minilib.grade.checks``, where the references live)
are off limits for every question. While the answer runs it may not start threads or programs
(the dispatcher and the torch-function guard are per thread, a new interpreter has no guard at
all). After each call :meth:`Guard.intact` checks that nothing was undone. A static pass also
fails an answer whose code names a forbidden function, even on a branch that does not run.

What this cannot stop, and the questions call honour rules: re-implementations of a forbidden
function that live elsewhere in Python (``torch._refs``, ``torch._decomp``), and code that takes the
guard apart with ``gc``/``ctypes`` and puts it back before returning. In the CLI the guard is
installed once in the answer's own child process, before the answer is even unpickled, and never
removed; the in-notebook ``grade.check`` installs it around each call and restores everything
afterwards.
"""
from __future__ import annotations

import _thread
import builtins
import contextlib
import functools
import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import threading
import types
import warnings

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: The aten ops a forbidden torch function reaches, by its short name; ``softmin`` and
#: ``special.softmax`` go through ``softmax``, ``scaled_dot_product_attention``'s math path through
#: ``_safe_softmax``.
ATEN_OPS = {
    "softmax": ("_softmax", "_safe_softmax"),
    "log_softmax": ("_log_softmax",),
    "scaled_dot_product_attention": ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                                     "_scaled_dot_product_flash_attention_for_cpu"),
    "rms_norm": ("rms_norm", "_fused_rms_norm"),
    "logsumexp": ("logsumexp",),
    "conv1d": ("conv1d", "conv1d.padding"),
}
GRADER = "minilib.grade.checks"
_KERNEL_KEYS = ("CPU", "CompositeExplicitAutograd", "CompositeImplicitAutograd")


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


def _functions_of(obj) -> list[types.FunctionType]:
    """The Python functions behind a function or a class (its methods, static/class methods, properties)."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    if not isinstance(obj, type):
        return []
    found = []
    for value in vars(obj).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            found += [f for f in (value.fget, value.fset) if isinstance(f, types.FunctionType)]
        elif isinstance(value, types.FunctionType):
            found.append(value)
    return found


def _module_functions(prefix: str) -> list[types.FunctionType]:
    """Every function and method defined in module ``prefix`` or its submodules (all imported first,
    so that one the package does not import itself is covered too)."""
    package = sys.modules.get(prefix)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix + "."):
        with contextlib.suppress(Exception):
            importlib.import_module(info.name)
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) == name:
                found += _functions_of(value)
    if prefix == GRADER:  # the references are lambdas held by the questions
        from minilib.grade.questions import registry

        for q in registry().values():
            found += [f for f in (q.reference, q.make_cases) if isinstance(f, types.FunctionType)]
    return found


@functools.cache
def rules(names: tuple[str, ...]) -> "Forbidden":
    """The :class:`Forbidden` rules for a question's ``forbidden`` names (resolved once per process)."""
    return Forbidden(names)


_GRADER_RULE = "the grader's own answers (minilib.grade)"


def _library_name(prefix: str, obj) -> str:
    """``minilib.attention.sdpa`` for a function of a forbidden module: its public name when the
    module exports it, else where it is defined (``minilib.attention.dot_product._softmax_rows``)."""
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
    if getattr(sys.modules.get(prefix), name.split(".")[0], None) is not None:
        return f"{prefix}.{name}"
    return f"{getattr(obj, '__module__', prefix)}.{name}"


class Forbidden:
    """The off-limits rules of one question."""

    def __init__(self, names: tuple[str, ...]):
        self.names = tuple(names)
        self.objects, self.modules, self.aten = {}, [], {}
        self.torch_names, self.attr_names = {}, {}
        for qn in self.names:
            if qn.startswith("aten."):
                self.aten.setdefault(qn.removeprefix("aten."), qn)
                continue
            obj = resolve(qn)
            if obj is None:  # tests/test_grade_questions.py checks that every listed name resolves
                continue
            if isinstance(obj, types.ModuleType):
                self.modules.append(qn)
                continue
            self.objects[qn] = obj
            short = qn.rsplit(".", 1)[1]
            self.attr_names.setdefault(short, qn)
            if qn.startswith("torch."):
                # torch functions are matched by their short name, so that torch.softmax,
                # F.softmax and Tensor.softmax are one rule; and at the dispatcher by their ops.
                self.torch_names.setdefault(short, qn)
                for op in ATEN_OPS.get(short, ()):
                    self.aten.setdefault(op, qn)
        self.functions: dict[types.FunctionType, str] = {}
        for qn, obj in self.objects.items():
            if not qn.startswith("torch."):
                self.functions.update(dict.fromkeys(_functions_of(obj), qn))
        for prefix in self.modules:
            for fn in _module_functions(prefix):
                self.functions.setdefault(fn, _library_name(prefix, fn))
        self.functions.update(dict.fromkeys(_module_functions(GRADER), _GRADER_RULE))
        self._module_prefixes = (*self.modules, GRADER)

    def _named(self, value) -> str | None:
        """The rule a value breaks when an answer's code refers to it, or None."""
        for qn, obj in self.objects.items():
            if value is obj:
                return qn
        if isinstance(value, types.ModuleType):
            name = value.__name__
        else:
            name = getattr(value, "__module__", None) if isinstance(value, (types.FunctionType, type)) else None
        for prefix in self._module_prefixes:
            if name and (name == prefix or name.startswith(prefix + ".")):
                if prefix == GRADER:
                    return _GRADER_RULE
                return prefix if isinstance(value, types.ModuleType) else _library_name(prefix, value)
        return None

    def static_violations(self, func) -> list[str]:
        """Forbidden names referenced by ``func``'s code (recursing into helpers it uses)."""
        found, seen = [], set()

        def visit(fn):
            if not isinstance(fn, types.FunctionType) or fn in seen:
                return
            seen.add(fn)
            cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
            for value in _closure_values(cells):
                check(value)
            for name in _names(fn.__code__):
                if name in fn.__globals__:
                    check(fn.__globals__[name])
                elif not hasattr(builtins, name) and name in self.attr_names:
                    found.append(f"{self.attr_names[name]} (referenced as .{name})")

        def check(value):
            rule = self._named(value)
            if rule:
                found.append(rule)
            elif isinstance(value, types.FunctionType):
                visit(value)

        visit(func)
        return sorted(set(found), key=lambda rule: (rule in self.modules, rule))  # the most specific first

    @contextlib.contextmanager
    def watching(self, calls: list[str], *, track_sizes: bool = False):
        """Within the block every rule is enforced: a forbidden call is appended to ``calls``
        and raises ForbiddenCall. Yields the :class:`Guard`; everything is restored on exit."""
        guard = Guard(self, calls, track_sizes=track_sizes)
        guard.install()
        try:
            yield guard
        finally:
            guard.remove()


_calls: list[str] | None = None  # where the refusing code records, while a guard is installed


def refused(rule: str) -> ForbiddenCall:
    """Record a forbidden call (called by the code that replaces a forbidden function)."""
    if _calls is not None:
        _calls.append(rule)
    return ForbiddenCall(rule)


_STUB_CACHE: dict[tuple, types.CodeType] = {}


def _refusing_code(fn: types.FunctionType, rule: str) -> types.CodeType | None:
    """A code object with ``fn``'s free variables whose body raises ``refused(rule)``."""
    key = (fn.__code__, rule)
    if key not in _STUB_CACHE:
        free = fn.__code__.co_freevars
        body = [f"    {v} = None" for v in free] + ["    def refusing(*args, **kwargs):"]
        if free:
            body.append(f"        ({', '.join(free)},)")
        body += [f"        raise __import__('minilib.grade.guard', fromlist=['refused']).refused({rule!r})",
                 "    return refusing"]
        scope: dict = {}
        exec(compile("def outer():\n" + "\n".join(body), "<forbidden>", "exec"), scope)
        code = scope["outer"]().__code__
        _STUB_CACHE[key] = code if code.co_freevars == free else None
    return _STUB_CACHE[key]


def _refusing_kernel(op: str, rule: str, calls: list[str]):
    def kernel(*args, **kwargs):
        calls.append(f"{rule} (aten.{op})" if not rule.startswith("aten.") else rule)
        raise ForbiddenCall(rule)
    return kernel


def _no_threads(*args, **kwargs):
    raise refused("starting a thread or a program (the grader's guard watches only this thread)")


class Guard:
    """One installation of a question's rules (see :meth:`Forbidden.watching`).

    ``largest``: with ``track_sizes``, ``(numel, shape)`` of the largest floating-point tensor an
    op has produced since :meth:`reset_sizes`.
    """

    _THREAD_STARTERS = ((_thread, "start_new_thread"), (_thread, "start_new"), (threading, "_start_new_thread"),
                        (os, "fork"), (os, "forkpty"), (os, "posix_spawn"), (os, "posix_spawnp"), (os, "execv"),
                        (os, "execve"), (os, "system"), (subprocess, "_fork_exec"),
                        (sys.modules.get("_posixsubprocess"), "fork_exec"))

    def __init__(self, forbidden: Forbidden, calls: list[str], *, track_sizes: bool = False):
        self.forbidden, self.calls, self.track_sizes = forbidden, calls, track_sizes
        self.largest = (0, ())
        self._saved_code, self._saved_attrs, self._libs, self._modes = {}, [], [], []

    def install(self) -> None:
        global _calls
        _calls = self.calls
        for fn, rule in self.forbidden.functions.items():
            code = _refusing_code(fn, rule)
            if code is not None:
                self._saved_code[fn] = (fn.__code__, code)
                fn.__code__ = code
        if self.forbidden.aten:
            lib = torch.library.Library("aten", "IMPL")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
                for op, rule in self.forbidden.aten.items():
                    for key in _KERNEL_KEYS:
                        if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", key):
                            lib.impl(op, _refusing_kernel(op, rule, self.calls), key)
            self._libs.append(lib)
        for owner, attr in self._THREAD_STARTERS:
            if owner is not None and hasattr(owner, attr):
                self._saved_attrs.append((owner, attr, getattr(owner, attr)))
                setattr(owner, attr, _no_threads)
        self._modes = [_TorchWatch(self.forbidden, self.calls)]
        if self.track_sizes:
            self._modes.append(_SizeWatch(self))
        for mode in self._modes:
            mode.__enter__()

    def remove(self) -> None:
        global _calls
        for mode in reversed(self._modes):
            with contextlib.suppress(Exception):
                mode.__exit__(None, None, None)
        for lib in self._libs:
            lib._destroy()
        for owner, attr, value in self._saved_attrs:
            setattr(owner, attr, value)
        for fn, (code, _) in self._saved_code.items():
            fn.__code__ = code
        self._saved_code, self._saved_attrs, self._libs, self._modes = {}, [], [], []
        _calls = None

    def forget_originals(self) -> None:
        """Drop the saved code and functions, so nothing in this process can restore them (the CLI's
        child process, which only ever runs one answer)."""
        self._saved_code = {fn: (None, refusing) for fn, (_, refusing) in self._saved_code.items()}
        self._saved_attrs = [(o, a, None) for o, a, _ in self._saved_attrs]

    def reset_sizes(self) -> None:
        self.largest = (0, ())

    def tampering(self) -> str | None:
        """What the answer undid of the guard, or None when it is intact."""
        if _calls is not self.calls:
            return "the record of forbidden calls was replaced"
        for fn, (_, refusing) in self._saved_code.items():
            if fn.__code__ is not refusing:
                return f"the code of {fn.__module__}.{fn.__qualname__} was put back"
        if any(lib.m is None for lib in self._libs):
            return "the dispatcher's refusing kernels were removed"
        for owner, attr, _ in self._saved_attrs:
            if getattr(owner, attr, None) is not _no_threads:
                return f"{getattr(owner, '__name__', owner)}.{attr} was restored"
        function_modes = torch.overrides._get_current_function_mode_stack()
        if self._modes[0] not in function_modes:
            return "the torch function guard was popped"
        if self.track_sizes:
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

            if self._modes[1] not in _get_current_dispatch_mode_stack():
                return "the dispatcher watch was popped"
        return None


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


class _SizeWatch(TorchDispatchMode):
    """Records the largest floating-point tensor any aten op produces (the answer's working set)."""

    def __init__(self, guard: Guard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > self.guard.largest[0]:
                self.guard.largest = (t.numel(), tuple(t.shape))
        return out


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
