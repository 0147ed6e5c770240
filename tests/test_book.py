"""Build the book as `make book` does and check every page the way a reader sees it.

One build per session (warnings are errors), then on the built HTML: every page of _toc.yml exists,
no page shows error output, every local link and image resolves (with its #anchor), chapters have
figures with alt text and show each paper claim they record, exercises are not executed, launch
buttons follow the repository setting, and each page's weight is reported. In headless Chromium,
served from 127.0.0.1 with no network: on every page with math, MathJax (offline) typesets it and no
raw TeX is left; saved widgets render; show_table outputs are tables; the offline search finds each
chapter by a word of its title; screenshots of the intro, the first chapter and the first exercise
page are kept in _build/test-artifacts/ with the page-weight report.

Set BOOK_HTML_DIR to a built _build/html to check that build instead of building (a quick check
while editing pages; the full suite builds).
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


ARTIFACTS = ROOT / "_build" / "test-artifacts"


def _entries(items):
    """Docnames of a list of _toc.yml entries, depth first, ``glob`` entries expanded like the build does."""
    out = []
    for item in items:
        if "file" in item:
            out.append(item["file"])
        elif "glob" in item:
            out += sorted(str(p.relative_to(ROOT).with_suffix("")) for p in ROOT.glob(item["glob"] + ".*")
                          if p.suffix in (".md", ".ipynb"))
        out += _entries(item.get("sections", []))
    return out


def _toc_files():
    """The root file and every docname of _toc.yml, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return toc["root"], [f for part in toc["parts"] for f in _entries(part["chapters"])]


ROOT_FILE, TOC_FILES = _toc_files()
ALL_PAGES = [ROOT_FILE] + TOC_FILES
CHAPTERS = [f for f in TOC_FILES if f.startswith("chapters/")]
EXERCISES = [f for f in TOC_FILES if f.startswith("exercises/")]


@pytest.fixture(scope="module")
def book_build(tmp_path_factory):
    """``(html directory, None)`` after a good build, ``(None, why)`` after a failed one; built once per run."""
    if os.environ.get("BOOK_HTML_DIR"):
        return Path(os.environ["BOOK_HTML_DIR"]), None
    if not (OFFLINE / ".complete").exists():
        fetch = subprocess.run(["bash", "tools/fetch_offline_assets.sh", str(OFFLINE)], cwd=ROOT,
                               capture_output=True, text=True)
        if fetch.returncode != 0:
            return None, f"could not fetch the offline MathJax/widgets (run `make offline`):\n{fetch.stderr}"
    out = tmp_path_factory.mktemp("book")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(ROOT), "--path-output", str(out),
           "-W", "-n", "--keep-going"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        return None, f"book build took more than {BUILD_TIMEOUT_S} s:\n{_tail(err.stdout)}"
    log = result.stdout + result.stderr
    (out / "build.log").write_text(log, encoding="utf-8")
    if result.returncode != 0:
        return None, (f"book build failed (exit {result.returncode}); full log in {out / 'build.log'}; "
                      f"log tail:\n{_tail(log, 40)}\n\n{_notebook_error(log)}")
    return out / "_build" / "html", None


_FAILURE_SHOWN = []


def _built(book_build):
    """The built HTML directory; a failed build fails the first test in full and every later one in a line."""
    html, why = book_build
    if why is None:
        return html
    if _FAILURE_SHOWN:
        pytest.fail(f"the book did not build: {_FAILURE_SHOWN[0]} shows why", pytrace=False)
    _FAILURE_SHOWN.append(os.environ.get("PYTEST_CURRENT_TEST", "the first failing test").split(" ")[0])
    pytest.fail(why, pytrace=False)


@pytest.fixture
def html_dir(book_build):
    return _built(book_build)


_NOTEBOOK_FAILURE = re.compile(r"An error occurred while executing the following cell:|A cell timed out while|"
                               r"DeadKernelError|Kernel died")


def _notebook_error(log):
    """The failing notebook and its cell's error, found in the build log (they sit far above its tail)."""
    lines = _plain(log).splitlines()
    starts = [i for i, line in enumerate(lines) if _NOTEBOOK_FAILURE.search(line)]
    if not starts:
        return "(no notebook error in the log: the failure is in the lines above)"
    block = []
    for line in lines[starts[0]:starts[0] + 120]:
        if line.startswith("The above exception was the direct cause"):
            break
        block.append(line)
    failing = sorted(set(re.findall(r"ExecutionError: (\S+\.ipynb)", log)))
    return f"notebook(s) that failed to execute: {', '.join(failing) or '?'}; the first error:\n" + "\n".join(block)


def _tail(text, n=80):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(_plain(text or "").splitlines()[-n:])


def _plain(text):
    """``text`` without its terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


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


@pytest.mark.parametrize("docname", EXERCISES)
def test_exercises_are_shown_unexecuted(html_dir, docname):
    html = _page(html_dir, docname).read_text(encoding="utf-8")
    assert 'class="cell_input' in html
    assert 'class="cell_output' not in html, f"{docname} was executed; exercises must be shown as given"


_LINK = re.compile(r'<(?:a|img|link|script)\b[^>]*?\b(?:href|src)="([^"]*)"', re.I)


def _local_targets(page):
    """(url, file, fragment) of every local link, image, stylesheet and script of a built page."""
    out = []
    for url in _LINK.findall(page.read_text(encoding="utf-8")):
        url = html.unescape(url)
        if not url or re.match(r"^([a-z][a-z0-9+.-]*:|//)", url, re.I):
            continue  # external (http:, mailto:, data:, javascript:) - the book has no network to check them with
        path, _, fragment = url.partition("#")
        path = path.split("?", 1)[0]
        out.append((url, (page.parent / path).resolve() if path else page, fragment))
    return out


@functools.lru_cache(maxsize=None)
def _ids(file):
    return set(re.findall(r'\bid="([^"]+)"', Path(file).read_text(encoding="utf-8", errors="replace")))


@pytest.mark.parametrize("docname", ALL_PAGES)
def test_local_links_and_images_resolve(html_dir, docname):
    page = _page(html_dir, docname)
    broken = []
    for url, file, fragment in _local_targets(page):
        if not file.exists():
            broken.append(url)
        elif fragment and file.suffix == ".html" and fragment not in _ids(str(file)):
            broken.append(url + " (no such anchor)")
    assert not broken, f"{docname}: broken local links {broken[:10]}"


@pytest.mark.parametrize("docname", CHAPTERS)
def test_chapter_images_have_alt_text(html_dir, docname):
    imgs = re.findall(r"<img\b[^>]*>", _page(html_dir, docname).read_text(encoding="utf-8"))
    alts = [(tag, re.search(r'\balt="([^"]*)"', tag)) for tag in imgs]
    missing = [tag[:120] for tag, alt in alts if not alt or not alt.group(1) or alt.group(1).endswith(".png")]
    assert not missing, f"{docname}: {len(missing)} of {len(imgs)} images have no alt text, e.g. {missing[:2]}"


@pytest.mark.parametrize("docname", CHAPTERS)
def test_chapter_shows_the_claims_it_records(html_dir, docname):
    """The paper index's statuses come from these calls; the executed page proves they ran and agreed."""
    sys.path[:0] = [str(ROOT / "tools")]
    from paper_index import notebook_claims

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", _page(html_dir, docname).read_text(encoding="utf-8")))
    for c in notebook_claims(ROOT / f"{docname}.ipynb"):
        assert f"Paper claim, {c.status} ({c.paper})" in text, f"{docname}: claim {c.paper} not shown as {c.status}"


@pytest.mark.parametrize("docname", CHAPTERS)
def test_chapter_opens_with_what_it_builds_and_links_glossary_terms(html_dir, docname):
    page = _page(html_dir, docname).read_text(encoding="utf-8")
    box = page.split('chapter-opening', 1)
    assert len(box) == 2, f"{docname}: no 'In this chapter' box under the title"
    box = box[1].split("</div>", 2)[0] + box[1].split("</div>", 2)[1]
    assert "What you will build in minilib" in box and "book/reference/minilib." in box
    openings = yaml.safe_load((ROOT / "book" / "data" / "chapters.yml").read_text(encoding="utf-8"))
    if docname in openings:
        assert "Prerequisites" in box and "You will learn to" in box
    assert 'class="glossary-link' in page, f"{docname}: no first use of a glossary term is linked"


def test_launch_buttons_follow_the_repository_setting(html_dir):
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    page = _page(html_dir, CHAPTERS[0]).read_text(encoding="utf-8")
    has_launch = "mybinder.org" in page or "colab.research.google.com" in page
    assert has_launch == bool(config["repository"]["url"]), "launch buttons must appear exactly when repository.url is set"
    assert ".ipynb" in page and "btn-download-source-button" in page, "every notebook page offers its .ipynb"


def _page_weight(html_dir, docname):
    """Bytes of the page and of every distinct local file it loads (images, styles, scripts)."""
    page = _page(html_dir, docname)
    files = {page} | {f for url, f, _ in _local_targets(page)
                      if f.is_file() and not url.split("#")[0].endswith(".html") and f.suffix != ".ipynb"}
    return sum(f.stat().st_size for f in files)


def test_page_weight_is_reported(html_dir):
    weights = {d: _page_weight(html_dir, d) for d in ALL_PAGES}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    lines = [f"{w / 2**20:8.2f} MiB  {d}" for d, w in sorted(weights.items(), key=lambda kv: -kv[1])]
    (ARTIFACTS / "page-weights.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:10]))
    heavy = {d: w for d, w in weights.items() if w > 30 * 2**20}
    assert not heavy, f"pages over 30 MiB with what they load: {heavy}"


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
def server(book_build):
    html_dir = _built(book_build)

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


def _has_math(docname):
    """Whether a page's source has math: the chapters and notation, and the reference pages of docstrings with $."""
    src = next((ROOT / f"{docname}{ext}" for ext in (".ipynb", ".md") if (ROOT / f"{docname}{ext}").exists()), None)
    if docname.startswith("book/reference/minilib"):
        module = ROOT / docname.rpartition("/")[2].replace(".", "/")
        src = module.with_suffix(".py") if module.with_suffix(".py").exists() else module / "__init__.py"
    return src is not None and "$" in src.read_text(encoding="utf-8")


MATH_PAGES = [d for d in ALL_PAGES if _has_math(d)]


def test_math_pages_include_chapters_and_reference():
    assert set(CHAPTERS) <= set(MATH_PAGES) and "book/notation" in MATH_PAGES
    assert any(d.startswith("book/reference/") for d in MATH_PAGES)


@pytest.mark.parametrize("docname", MATH_PAGES)
def test_math_is_typeset(html_dir, rendered, docname):
    static = _page(html_dir, docname).read_text(encoding="utf-8")
    n_math = len(re.findall(r'class="math\b', static))
    assert n_math > 0, f"{docname} has $ in its source but no math in the page (raw TeX?)"
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
    """Per code cell of the notebook, in order: its source and how many tables it shows when it runs, i.e. its
    calls of ``show_table``, or of a function the notebook defines around it, outside function bodies."""
    import ast

    nb = json.loads((ROOT / f"{docname}.ipynb").read_text(encoding="utf-8"))
    sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    trees = [ast.parse(src) for src in sources]

    def calls(node, names) -> bool:
        return isinstance(node, ast.Call) and getattr(node.func, "id", None) in names
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    names = {"show_table"} | {f.name for t in trees for f in ast.walk(t) if isinstance(f, functions)
                              and not isinstance(f, ast.Lambda) and any(calls(c, {"show_table"}) for c in ast.walk(f))}

    def top_level(node):
        here = calls(node, names)
        return here + sum(top_level(c) for c in ast.iter_child_nodes(node) if not isinstance(c, functions))
    return [(src, top_level(tree)) for src, tree in zip(sources, trees)]


def _rendered_cells(dom):
    """(input text, output HTML) of every code cell in a rendered myst-nb page."""
    cells = []
    for chunk in re.split(r'<div class="cell(?: tag_[^" ]*)* docutils container"', dom)[1:]:
        source, _, output = chunk.partition('class="cell_output')
        cells.append((html.unescape(re.sub(r"<[^>]+>", "", source)), output))
    return cells


@pytest.mark.parametrize("docname", CHAPTERS)
def test_show_table_renders_tables(rendered, docname):
    """myst-nb parses displayed Markdown as CommonMark (no tables) unless nb_render_markdown_format is myst."""
    calls = _show_table_calls(docname)
    assert any(n for _, n in calls), f"{docname} calls show_table nowhere; nothing to check"
    cells = _rendered_cells(rendered(docname))
    assert len(cells) == len(calls), f"{docname}: {len(calls)} code cells in the notebook, {len(cells)} in the page"
    for (src, n_calls), (_, out) in zip(calls, cells):
        n_tables = len(re.findall(r"<table\b", out))
        assert n_tables >= n_calls, (f"{docname}: a cell makes {n_calls} show_table call(s) but its output has "
                                     f"{n_tables} <table>:\n{src[:300]}")


def _search_word(docname):
    """The longest word of the chapter's title: what a reader would type to find it."""
    nb = json.loads((ROOT / f"{docname}.ipynb").read_text(encoding="utf-8"))
    title = next(ln for c in nb["cells"] if c["cell_type"] == "markdown"
                 for ln in "".join(c["source"]).splitlines() if ln.startswith("# "))
    return max(re.findall(r"[A-Za-z]{4,}", title), key=len)


@pytest.mark.parametrize("docname", CHAPTERS)
def test_offline_search_finds_each_chapter(chromium, server, tmp_path, docname):
    word = _search_word(docname)
    dom = _run_chromium(chromium, tmp_path, ["--dump-dom", f"{server}/search.html?q={word}"])
    results = dom.split('id="search-results"', 1)[-1]
    assert f"{docname}.html" in results, f"searching {word!r} does not find {docname}"


SCREENSHOT_PAGES = [ROOT_FILE, CHAPTERS[0], EXERCISES[0]]


@pytest.mark.parametrize("docname", SCREENSHOT_PAGES)
def test_screenshot(chromium, server, html_dir, tmp_path, docname):
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / (docname.replace("/", "__") + ".png")
    _run_chromium(chromium, tmp_path, [f"--screenshot={png}", "--window-size=1200,900",
                                       f"{server}/{docname}.html"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        assert img.size == (1200, 900)
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50, f"{png} looks blank ({len(colors or [])} colours)"


@pytest.mark.parametrize("docname", CHAPTERS)
def test_chapter_setup_cell_is_collapsed(html_dir, docname):
    """The setup cell (imports, seeds, threads) sits behind a toggle; the reader opens it if they want it."""
    nb = json.loads((ROOT / f"{docname}.ipynb").read_text(encoding="utf-8"))
    setup = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "hide-input" in setup["metadata"].get("tags", []), f"{docname}: tag its first (setup) code cell hide-input"
    page = _page(html_dir, docname).read_text(encoding="utf-8")
    assert re.search(r'<details class="[^"]*above-input', page), f"{docname}: the setup cell has no toggle"


def test_a_failed_build_names_the_notebook_and_its_cell_error():
    from myst_nb.core.execute.base import ExecutionError
    from nbclient.exceptions import CellExecutionError
    from nbformat.v4 import new_code_cell

    cell = new_code_cell("assert t_window < 0.7 * t_causal")
    try:
        try:
            raise CellExecutionError.from_cell_and_msg(cell, {"ename": "AssertionError", "evalue": "too slow",
                                                             "traceback": ["AssertionError: too slow"]})
        except CellExecutionError as err:
            raise ExecutionError("/book/chapters/05_sparse-attention.ipynb") from err
    except ExecutionError:
        import traceback
        log = "Executing chapters/05_sparse-attention...\n" + traceback.format_exc() + "\n".join(["frame"] * 200)
    report = _notebook_error(log)
    assert "chapters/05_sparse-attention.ipynb" in report
    assert "assert t_window < 0.7 * t_causal" in report and "AssertionError: too slow" in report
    assert "The above exception" not in report and "frame" not in report
    assert _notebook_error("some other failure").startswith("(no notebook error")
