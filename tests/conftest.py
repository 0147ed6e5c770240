"""Shared test configuration.

- matplotlib never opens a window: Agg in this process; notebook kernels (nbval, the grader,
  the book build) get ipykernel's inline backend, which only produces images.
- Notebook files under tests/ are data for tests, never collected by nbval.
- Per-notebook time budgets for `pytest --nbval-lax tests chapters solutions`: the time of every
  cell of a notebook (setup, which starts the kernel, call and teardown) is summed per file,
  a table is printed at the end, and the session fails if a notebook is over its budget.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch

# The library tests use tiny tensors: one intra-op thread is as fast, and on a shared 2-core
# machine two contending threads slow small ops down many-fold. Tests that exercise threading
# (minilib.flash's worker units) raise the count themselves.
torch.set_num_threads(1)

# Notebooks under tests/ are fixtures (e.g. broken student notebooks for the grader), read by
# tests; `pytest --nbval-lax tests ...` must not execute them as notebook tests.
collect_ignore_glob = ["*.ipynb"]

CHAPTER_BUDGET_S = 60.0
SOLUTION_BUDGET_S = 30.0

os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
import matplotlib  # noqa: E402

matplotlib.use("Agg")


def budget_for(path: Path, rootdir: Path) -> float | None:
    """Budget in seconds for a notebook, from the top-level folder it lives in (None: no budget)."""
    try:
        top = path.resolve().relative_to(rootdir.resolve()).parts[0]
    except (ValueError, IndexError):
        return None
    budgets = {"chapters": CHAPTER_BUDGET_S, "solutions": SOLUTION_BUDGET_S}
    return budgets.get(top)


def over_budget(times: dict[Path, float], rootdir: Path) -> list[tuple[Path, float, float]]:
    """(path, seconds, budget) for every notebook whose total time exceeds its budget."""
    out = []
    for path, seconds in sorted(times.items()):
        budget = budget_for(path, rootdir)
        if budget is not None and seconds > budget:
            out.append((path, seconds, budget))
    return out


class NotebookBudget:
    """Registered as a plugin (not a conftest hook) so it sees notebooks outside tests/."""

    def __init__(self, rootdir: Path):
        self.rootdir = rootdir
        self.times: dict[Path, float] = defaultdict(float)
        self.failed: list[tuple[Path, float, float]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if item.path.suffix == ".ipynb":
            self.times[item.path] += outcome.get_result().duration

    def pytest_sessionfinish(self, session):
        self.failed = over_budget(self.times, self.rootdir)
        if self.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.times:
            return
        tr = terminalreporter
        tr.section("notebook time budgets")
        for path, seconds in sorted(self.times.items()):
            budget = budget_for(path, self.rootdir)
            limit = f"{budget:6.1f} s" if budget is not None else "     -  "
            verdict = "OVER BUDGET" if budget is not None and seconds > budget else "ok"
            rel = os.path.relpath(path, self.rootdir)
            tr.write_line(f"{rel:<50} {seconds:7.1f} s  budget {limit}  {verdict}")
        for path, seconds, budget in self.failed:
            tr.write_line(
                f"FAILED budget: {os.path.relpath(path, self.rootdir)} took {seconds:.1f} s "
                f"> {budget:.0f} s", red=True, bold=True,
            )


def pytest_configure(config):
    if not config.pluginmanager.has_plugin("notebook-budget"):
        config.pluginmanager.register(NotebookBudget(Path(str(config.rootpath))), "notebook-budget")
