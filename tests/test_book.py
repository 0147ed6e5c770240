"""Build the book as `make book` does and check it the way a reader sees it.

One build per session (warnings are errors), then: every page of _toc.yml exists, chapters
have figures and no error output, exercises are not executed; and in headless Chromium,
served from 127.0.0.1 with no network: math is typeset by the offline MathJax, no raw TeX is
left, saved widgets render, and a screenshot of each chapter is a real picture.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ROOT / "book" / "_offline"
BUILD_TIMEOUT_S = 1500
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=8000",
]


def _toc_files():
    """{part caption: [file, ...]} and the root file, from _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    parts = {p["caption"]: [c["file"] for c in p["chapters"]] for p in toc["parts"]}
    return toc["root"], parts


ROOT_FILE, PARTS = _toc_files()
CHAPTERS = PARTS["Chapters"]
ALL_PAGES = [ROOT_FILE] + [f for files in PARTS.values() for f in files]


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory):
    if not (OFFLINE / ".complete").exists():
        fetch = subprocess.run(["bash", "tools/fetch_offline_assets.sh", str(OFFLINE)], cwd=ROOT,
                               capture_output=True, text=True)
        if fetch.returncode != 0:
            pytest.fail(f"could not fetch the offline MathJax/widgets (run `make offline`):\n{fetch.stderr}")
    out = tmp_path_factory.mktemp("book")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(ROOT), "--path-output", str(out),
           "-W", "-n", "--keep-going"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"book build took more than {BUILD_TIMEOUT_S} s:\n{_tail(err.stdout)}")
    log = result.stdout + result.stderr
    (out / "build.log").write_text(log, encoding="utf-8")
    if result.returncode != 0:
        pytest.fail(f"book build failed (exit {result.returncode}); log tail:\n{_tail(log)}")
    return out / "_build" / "html"


def _tail(text, n=80):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text or "").splitlines()[-n:])


def _page(html_dir, docname):
    return html_dir / f"{docname}.html"


@pytest.mark.parametrize("docname", ALL_PAGES)
def test_every_toc_page_is_built(html_dir, docname):
    assert _page(html_dir, docname).is_file(), f"{docname}.html missing from the build"


def test_planning_text_is_not_built(html_dir):
    assert not (html_dir / "book" / "data" / "SYLLABUS.html").exists()


@pytest.mark.parametrize("docname", CHAPTERS)
def test_chapter_has_figures(html_dir, docname):
    page = _page(html_dir, docname)
    srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', page.read_text(encoding="utf-8"))
    figures = [s for s in srcs if s.startswith("data:image/") or (page.parent / s).is_file()]
    assert figures, f"{docname}: no <img> with image data or an existing file (found {srcs})"


@pytest.mark.parametrize("docname", ALL_PAGES)
def test_no_error_output(html_dir, docname):
    html = _page(html_dir, docname).read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" not in html
    assert not re.search(r'class="[^"]*\boutput traceback\b', html), f"{docname} shows an error output"


@pytest.mark.parametrize("docname", PARTS["Exercises"])
def test_exercises_are_shown_unexecuted(html_dir, docname):
    html = _page(html_dir, docname).read_text(encoding="utf-8")
    assert 'class="cell_input' in html
    assert 'class="cell_output' not in html, f"{docname} was executed; exercises must be shown as given"


# ---------------------------------------------------------------------------- browser checks

@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Chromium is not installed, so the rendered book cannot be checked. "
                    "Run .ci/run (it installs Debian's chromium, then runs the tests), "
                    "or `apt-get install chromium`.")
    return exe


@pytest.fixture(scope="module")
def server(html_dir):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html_dir)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _run_chromium(chromium, tmp_path, args):
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{_tail(result.stderr, 30)}"
    return result.stdout


@pytest.fixture(scope="module")
def rendered(chromium, server, tmp_path_factory):
    """docname -> DOM after scripts ran, memoised so each page is loaded once."""
    cache = {}

    def get(docname):
        if docname not in cache:
            cache[docname] = _run_chromium(chromium, tmp_path_factory.mktemp("dom"),
                                           ["--dump-dom", f"{server}/{docname}.html"])
        return cache[docname]

    return get


def _visible_text(dom):
    """Text outside scripts, styles, code blocks and typeset math."""
    dom = re.sub(r"(?is)<(script|style|pre|code|mjx-container)\b.*?</\1>", " ", dom)
    return re.sub(r"<[^>]+>", " ", dom)


MATH_PAGES = CHAPTERS + ["book/notation"]


@pytest.mark.parametrize("docname", MATH_PAGES)
def test_math_is_typeset(html_dir, rendered, docname):
    static = _page(html_dir, docname).read_text(encoding="utf-8")
    n_math = len(re.findall(r'class="math\b', static))
    assert n_math > 0, f"{docname} has no math to check"
    dom = rendered(docname)
    n_typeset = dom.count("<mjx-container")
    assert n_typeset >= n_math, f"{docname}: {n_math} formulas in the page, {n_typeset} typeset by MathJax"
    text = _visible_text(dom)
    for raw in ("$$", "\\(", "\\[", "\\frac", "\\begin{"):
        assert raw not in text, f"{docname}: raw TeX {raw!r} left in the rendered page"


@pytest.mark.parametrize("docname", CHAPTERS)
def test_saved_widget_renders(html_dir, rendered, docname):
    static = _page(html_dir, docname).read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" in static, f"{docname}: no saved widget state"
    n_views = static.count("application/vnd.jupyter.widget-view+json")
    assert n_views > 0, f"{docname}: no widget in the page"
    dom = rendered(docname)
    widgets = re.findall(r'<div class="[^"]*\blm-Widget\b[^"]*\bjupyter-widgets\b', dom)
    assert widgets, f"{docname}: the saved widget state did not render (no jupyter-widgets markup)"


def _show_table_calls(docname):
    """Per code cell of the notebook that calls ``show_table``: its source, and how many calls it makes."""
    nb = json.loads((ROOT / f"{docname}.ipynb").read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return [(src, src.count("show_table(")) for src in cells if "show_table(" in src]


def _rendered_cells(dom):
    """(input text, output HTML) of every code cell in a rendered myst-nb page."""
    cells = []
    for chunk in re.split(r'<div class="cell docutils container"', dom)[1:]:
        source, _, output = chunk.partition('class="cell_output')
        cells.append((html.unescape(re.sub(r"<[^>]+>", "", source)), output))
    return cells


@pytest.mark.parametrize("docname", CHAPTERS)
def test_show_table_renders_tables(rendered, docname):
    """myst-nb parses displayed Markdown as CommonMark (no tables) unless nb_render_markdown_format is myst."""
    calls = _show_table_calls(docname)
    assert calls, f"{docname} calls show_table nowhere; nothing to check"
    cells = [(text, out) for text, out in _rendered_cells(rendered(docname)) if "show_table(" in text]
    assert len(cells) == len(calls), f"{docname}: {len(calls)} cells call show_table, {len(cells)} found in the page"
    for (src, n_calls), (_, out) in zip(calls, cells):
        n_tables = len(re.findall(r"<table\b", out))
        assert n_tables >= n_calls, (f"{docname}: a cell makes {n_calls} show_table call(s) but its output has "
                                     f"{n_tables} <table>:\n{src[:300]}")


@pytest.mark.parametrize("docname", CHAPTERS)
def test_screenshot(chromium, server, html_dir, tmp_path, docname):
    from PIL import Image

    shots = html_dir.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    png = shots / (docname.replace("/", "__") + ".png")
    _run_chromium(chromium, tmp_path, [f"--screenshot={png}", "--window-size=1200,900",
                                       f"{server}/{docname}.html"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        assert img.size == (1200, 900)
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50, f"{png} looks blank ({len(colors or [])} colours)"
