"""Tests mirror modules: every minilib module has its tests/test_<module>.py, and every such file a module.

A package's submodule ``minilib.pkg.sub`` is tested in ``test_pkg_sub.py`` or, for a small package, in
``test_pkg.py``; the grader (``minilib.grade``) has its own ``test_grade_*.py`` files. Tests of the project
rather than of one module (the book, the benchmarks, the import graph, this file...) are listed here.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_TESTS = {"test_book", "test_benchmarks", "test_citations", "test_imports", "test_layout", "test_generated_pages",
                 "test_publishing",
                 "test_notebook_budget", "test_paper_index", "test_robustness", "test_precision"}
# moved modules: the old path is a lazy alias for the new home, tested there
ALIASES = {"variants", "prenorm"}


def library_modules() -> list[tuple[str, ...]]:
    """Module paths under minilib without the package prefix, e.g. ("flash", "kernel"); the grader left out."""
    out = []
    for path in sorted((ROOT / "minilib").rglob("*.py")):
        parts = path.relative_to(ROOT / "minilib").with_suffix("").parts
        if parts[0] == "grade" or parts[-1] in ("__init__", "__main__") or parts[0] in ALIASES:
            continue
        out.append(tuple(p.lstrip("_") for p in parts))
    return out


def test_every_module_has_its_test_file():
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    missing = [".".join(m) for m in library_modules()
               if "test_" + "_".join(m) not in tests and "test_" + m[0] not in tests]
    assert not missing, f"modules without tests/test_<module>.py: {missing}"


def test_every_test_file_names_a_module():
    names = {"test_" + "_".join(m) for m in library_modules()} | {"test_" + m[0] for m in library_modules()}
    stray = sorted(p.name for p in (ROOT / "tests").glob("test_*.py")
                   if p.stem not in names | PROJECT_TESTS and not p.stem.startswith("test_grade_"))
    assert not stray, f"test files that mirror no minilib module (rename or merge them): {stray}"
