"""Publishing: the GitHub workflows run exactly the README's two commands, the Makefile has its targets,
and the launch buttons hang on the one repository setting of _config.yml.

The workflows cannot run here, so they are checked for structure (with ``actionlint`` too when it is
installed): valid YAML, the triggers, the steps' commands, and the Pages deployment of ``_build/html``.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def readme_commands():
    """The commands of the README's set-up block (``make book``, ``make test``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def load(name):
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def run_commands(job):
    return [step["run"] for step in job["steps"] if "run" in step]


def test_readme_names_two_commands():
    assert readme_commands() == ["make book", "make test"]


@pytest.mark.parametrize("name", ["book.yml", "tests.yml"])
def test_workflow_structure(name):
    wf = load(name)
    assert wf["name"] and wf["jobs"]
    for job_name, job in wf["jobs"].items():
        assert job["runs-on"].startswith("ubuntu-"), job_name
        assert "steps" in job and all("uses" in s or "run" in s for s in job["steps"]), job_name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


@pytest.mark.parametrize("name", ["book.yml", "tests.yml"])
def test_workflow_runs_exactly_the_readme_commands(name):
    job = next(iter(load(name)["jobs"].values()))
    commands = [c for c in run_commands(job) if c.startswith("make")]
    assert commands == readme_commands(), f"{name} runs {commands}, the README says {readme_commands()}"
    python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"
    assert any(s.get("uses", "").startswith("actions/setup-node") for s in job["steps"]), "npm fetches MathJax"
    assert any("chromium" in c for c in run_commands(job)), "the browser test needs Chromium"


def test_book_workflow_publishes_the_built_book_from_main():
    wf = load("book.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    upload = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert build["steps"].index(upload[0]) == len(build["steps"]) - 1, "upload after the tests passed"
    assert deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
    assert wf["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def test_pull_requests_run_the_tests_and_publish_nothing():
    wf = load("tests.yml")
    assert "pull_request" in wf["on"] and "push" not in wf["on"]
    steps = [s.get("uses", "") for job in wf["jobs"].values() for s in job["steps"]]
    assert not any("pages" in s for s in steps)
    assert wf["permissions"] == {"contents": "read"}


def test_actionlint_if_available():
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed; the structure tests above stand in for it")
    result = subprocess.run([exe, *map(str, sorted(WORKFLOWS.glob("*.yml")))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_makefile_targets():
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("book", "test", "bench", "pages", "serve", "clean"):
        assert re.search(rf"^{target}:", make, re.M), f"make {target} is missing"
    assert "http.server -d _build/html" in make.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "rm -rf _build" in make.split("\nclean:", 1)[1]
    for tool in ("api_reference", "performance_appendix", "paper_index", "glossary"):
        assert f"tools/{tool}.py" in make.split("\npages:", 1)[1].split("\n\n", 1)[0]


def test_launch_buttons_hang_on_one_repository_setting():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    launch = config["launch_buttons"]
    assert launch["binderhub_url"] and launch["colab_url"]
    assert "url" in config["repository"], "the one setting the launch buttons need"
    assert not config["html"]["use_repository_button"] or config["repository"]["url"]
