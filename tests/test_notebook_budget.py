"""The per-notebook time budget in tests/conftest.py flags slow notebooks and fails the session."""

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat

CONFTEST = Path(__file__).with_name("conftest.py")


def _load_conftest():
    spec = importlib.util.spec_from_file_location("zoo_conftest_under_test", CONFTEST)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_budget_depends_on_folder(tmp_path):
    mod = _load_conftest()
    assert mod.budget_for(tmp_path / "chapters" / "01_x.ipynb", tmp_path) == 60.0
    assert mod.budget_for(tmp_path / "solutions" / "01_x.ipynb", tmp_path) == 30.0
    assert mod.budget_for(tmp_path / "tests" / "data" / "bad.ipynb", tmp_path) is None
    times = {tmp_path / "chapters" / "a.ipynb": 61.0, tmp_path / "chapters" / "b.ipynb": 59.0,
             tmp_path / "solutions" / "a.ipynb": 30.5, tmp_path / "tests" / "slow.ipynb": 900.0}
    assert mod.over_budget(times, tmp_path) == [
        (tmp_path / "chapters" / "a.ipynb", 61.0, 60.0),
        (tmp_path / "solutions" / "a.ipynb", 30.5, 30.0),
    ]


def test_session_fails_when_a_notebook_is_over_budget(tmp_path):
    """Real nbval run: a chapter with a zero budget fails the session although its cells pass."""
    for folder in ("chapters", "solutions"):
        (tmp_path / folder).mkdir()
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / folder / "fast.ipynb")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("zoo_conftest", {str(CONFTEST)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.CHAPTER_BUDGET_S = 0.0
        mod.SOLUTION_BUDGET_S = 1000.0
        pytest_configure = mod.pytest_configure
    """))
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider",
                             "chapters", "solutions"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    out = result.stdout
    assert "2 passed" in out, out
    assert result.returncode == 1, out
    assert "notebook time budgets" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.endswith(("ok", "OVER BUDGET"))}
    assert lines["chapters/fast.ipynb"].endswith("OVER BUDGET")
    assert lines["solutions/fast.ipynb"].endswith("ok")
    assert "FAILED budget: chapters/fast.ipynb" in out
