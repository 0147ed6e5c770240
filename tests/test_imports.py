"""minilib's imports flow one way (DESIGN.md): read every module's imports with ast, no import needed.

- no import cycles, counting imports inside functions too (a cycle makes import order matter and
  modules inseparable); only a module-level ``__getattr__``, the lazy alias that keeps a moved name's old
  import path working, may point back;
- the core imports no family and no model, even lazily inside a function;
- nothing in minilib imports the grader (except the grader itself), the benchmarks or the tests.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minilib"
CORE = {"_checks", "_moved", "attention", "norms", "positional", "activations", "feedforward", "mixing", "display", "experiments",
        "scan", "registry", "convolution"}
MODELS = {"models"}
GRADE = {"grade"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(all but aliases, all) minilib modules that ``name`` imports; ``from pkg import mod`` counts as ``pkg.mod``.

    The first set leaves out imports inside a module-level ``def __getattr__`` (deprecation aliases).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    alias_nodes = {id(n) for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                   for n in ast.walk(node)}
    direct, every = set(), set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, path.name == "__init__.py")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        targets = [t for t in targets if t == "minilib" or t.startswith("minilib.") or t.split(".")[0] in ("benchmarks", "tests")]
        every.update(targets)
        if id(node) not in alias_nodes:
            direct.update(targets)
    return direct, every


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def family(module: str) -> str:
    """The top-level name under minilib: ``minilib.flash.kernel`` -> ``flash``."""
    return module.split(".")[1] if module.count(".") else ""


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    # the package's own __init__ imports families for convenience; nothing inside minilib imports it back
    direct = {name: {t for t in deps if t != "minilib"} for name, (deps, _) in GRAPH.items() if name != "minilib"}
    cycle = find_cycle(direct)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if family(n) in CORE))
def test_core_imports_only_core(name):
    _, every = GRAPH[name]
    outside = sorted(t for t in every if family(t) not in CORE)
    assert not outside, f"core module {name} imports {outside} (core must not depend on families or models)"


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if family(n) not in GRADE and n != "minilib"))
def test_library_does_not_import_grader_benchmarks_or_tests(name):
    _, every = GRAPH[name]
    bad = sorted(t for t in every if family(t) in GRADE or t.split(".")[0] in ("benchmarks", "tests") or t == "minilib")
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if family(n) not in MODELS | GRADE and n != "minilib"))
def test_only_models_and_grader_import_models(name):
    direct, _ = GRAPH[name]
    bad = sorted(t for t in direct if family(t) in MODELS)
    assert not bad, f"{name} imports {bad}: models compose the families, not the other way round"
