"""The generated book pages cover what exists: the minilib reference and the performance appendix.

Both pages are generated (tools/api_reference.py, tools/performance_appendix.py) and committed; these
tests check they are up to date, and, independently of the generators, that every public module and
name has its reference entry and every committed benchmark result file its section in the appendix.
"""
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "book" / "reference"
APPENDIX = ROOT / "book" / "performance.md"
RESULTS = ROOT / "benchmarks" / "results"


def _declared_all(path: Path):
    """``__all__`` of a module, read from its source (None when it declares none)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return None  # computed (e.g. sorted(...)): a deprecated alias module of moved names
    return None


def public_modules():
    """{dotted name: __all__} of every public minilib module that declares a literal __all__."""
    out = {}
    for path in sorted((ROOT / "minilib").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if any(p.startswith("_") for p in parts) or parts[:3] == ("minilib", "grade", "checks"):
            continue
        names = _declared_all(path)
        if names is not None:
            out[".".join(parts)] = names
    return out


@pytest.mark.parametrize("tool", ["tools/api_reference.py", "tools/performance_appendix.py", "tools/glossary.py"])
def test_generated_pages_are_up_to_date(tool):
    result = subprocess.run([sys.executable, tool, "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_public_module_has_a_reference_page_naming_each_export():
    modules = public_modules()
    assert len(modules) > 30 and "minilib.attention.dot_product" in modules
    for module, names in modules.items():
        page = REFERENCE / f"{module}.md"
        assert page.is_file(), f"{module} has no reference page"
        text = page.read_text(encoding="utf-8")
        for name in names:
            assert re.search(rf"(\.\. auto\w+:: {re.escape(name)}$|`{re.escape(name)} <)", text, re.M), \
                f"{module}.{name} is neither documented nor linked on {page.name}"
    pages = {p.stem for p in REFERENCE.glob("minilib*.md")}
    assert pages == set(modules), f"pages without a module: {pages - set(modules)}"
    index = (REFERENCE / "index.md").read_text(encoding="utf-8")
    assert all(f"{{py:mod}}`{m}`" in index for m in modules)


def test_the_reference_part_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert "file: book/reference/index" in toc and "glob: book/reference/minilib*" in toc


def test_every_results_file_and_experiment_is_in_the_appendix():
    page = APPENDIX.read_text(encoding="utf-8")
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        name = path.stem
        assert f"\n## `{name}`\n" in page, f"benchmarks/results/{path.name} is missing from book/performance.md"
        section = page.split(f"\n## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        for experiment, r in json.loads(path.read_text(encoding="utf-8")).items():
            rows = "\n".join(re.findall(rf"^\| `{re.escape(experiment)}` \|.*$", section, re.M))
            assert rows.count("\n") == 1, f"{name}: experiment {experiment} needs a claims row and a provenance row"
            prov = r["provenance"]
            assert prov["command"] in rows and prov["date"] in rows and prov["commit"][:12] in rows
    for png in RESULTS.glob("*.png"):
        assert f"../benchmarks/results/{png.name}" in page, f"{png.name} is not shown in the appendix"


def test_saved_claims_pass_their_checks():
    """The appendix re-runs each check on the saved numbers; a committed result that fails its claim is a defect."""
    rows = [ln for ln in APPENDIX.read_text(encoding="utf-8").splitlines()
            if ln.startswith("| `") and ln.count(" | ") == 3]  # the claims rows: experiment, claims, measured, check
    failing = [ln.split("|")[1].strip() for ln in rows if not ln.endswith("| passes |")]
    assert rows and not failing, f"experiments whose saved result fails its check: {failing}"


def test_check_notices_a_missing_results_file(tmp_path):
    for rel in ["tools/performance_appendix.py", "tools/_generated.py", "book/performance.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("*.pt", "__pycache__"))
    check = [sys.executable, "tools/performance_appendix.py", "--check"]
    assert subprocess.run(check, cwd=tmp_path, capture_output=True).returncode == 0
    extra = tmp_path / "benchmarks" / "results" / "zz_new.json"
    extra.write_text(json.dumps({"run": {"value": 1.0, "seconds": 0.1, "provenance": {
        "command": "python benchmarks/zz_new.py", "commit": "0" * 40, "date": "2026-01-01T00:00:00+00:00",
        "threads": 1}}}))
    result = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "performance.md" in result.stderr
    subprocess.run([sys.executable, "tools/performance_appendix.py"], cwd=tmp_path, check=True, capture_output=True)
    assert "\n## `zz_new`\n" in (tmp_path / "book" / "performance.md").read_text()


def test_docstring_math_becomes_sphinx_math():
    sys.path[:0] = [str(ROOT / "tools")]
    from sphinx_minilib import convert

    assert convert(r"mask $s \le t$, so $x$s") == r"mask :math:`s \le t`, so :math:`x`\ s"
    assert convert("a ``$literal$`` stays") == "a ``$literal$`` stays"
    block = convert("Text.\n\n  $$ a = \\text{``b``} $$\n\nMore.")
    assert "  .. math::\n\n     a = \\text{``b``}\n" in block and "$" not in block
    assert convert("inline $$x+1$$ too") == "inline :math:`x+1` too"


def test_chapter_openings_and_glossary_name_real_chapters():
    import yaml

    openings = yaml.safe_load((ROOT / "book" / "data" / "chapters.yml").read_text(encoding="utf-8"))
    glossary = yaml.safe_load((ROOT / "book" / "data" / "glossary.yml").read_text(encoding="utf-8"))
    for docname, info in openings.items():
        assert (ROOT / f"{docname}.ipynb").is_file(), f"chapters.yml: no notebook {docname}"
        assert info["prerequisites"] and info["goals"]
    for entry in glossary:
        nb = (ROOT / f"{entry['chapter']}.ipynb").read_text(encoding="utf-8")
        assert entry["term"].split()[0].lower() in nb.lower(), f"glossary: {entry['chapter']} never uses {entry['term']!r}"
    assert len({e["term"].lower() for e in glossary}) == len(glossary), "a glossary term is listed twice"
