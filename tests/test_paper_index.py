"""The paper index lists every paper of SYLLABUS.md exactly once, with its chapter.

The syllabus is parsed here with its own method (split into sections, match rows by their
level cell), not with tools/paper_index.py, and checked against the syllabus's own Counts
table and stated total.
"""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYLLABUS = ROOT / "book" / "data" / "SYLLABUS.md"
PAPERS_CSV = ROOT / "book" / "data" / "papers.csv"
PAGE = ROOT / "book" / "paper-index.md"
BIB = ROOT / "book" / "references.bib"

ROW = re.compile(r"^\| (.+?) \| (implement|discuss|cite) \|", re.MULTILINE)


def _norm(title):
    return " ".join(title.split()).casefold()


@pytest.fixture(scope="module")
def syllabus():
    """{(chapter number, slug): [(title, level), ...]} plus the Counts table and stated total."""
    text = SYLLABUS.read_text(encoding="utf-8")
    sections = {}
    counts = {}
    for block in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        if heading.strip() == "Counts":
            for line in body.splitlines():
                m = re.match(r"^\| (\d\d) (\S+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", line)
                if m:
                    counts[(m.group(1), m.group(2))] = tuple(int(g) for g in m.groups()[2:])
            continue
        number, slug = heading.split()
        sections[(number, slug)] = ROW.findall(body)
    total = int(re.search(r"Total unique papers: (\d+)", text).group(1))
    return sections, counts, total


@pytest.fixture(scope="module")
def csv_rows():
    with PAPERS_CSV.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_syllabus_counts_agree_with_its_tables(syllabus):
    sections, counts, total = syllabus
    assert set(sections) == set(counts), "every chapter section has a row in the Counts table"
    for chapter, rows in sections.items():
        levels = [lv for _, lv in rows]
        got = (levels.count("implement"), levels.count("discuss"), levels.count("cite"), len(rows))
        assert got == counts[chapter], f"chapter {chapter}: tables give {got}, Counts says {counts[chapter]}"
    titles = [_norm(t) for rows in sections.values() for t, _ in rows]
    assert len(titles) == len(set(titles)), "a paper appears twice in SYLLABUS.md"
    assert len(titles) == total == 294


def test_csv_has_every_paper_with_its_chapter(syllabus, csv_rows):
    sections, _, total = syllabus
    expected = {
        _norm(t): (number, slug, lv) for (number, slug), rows in sections.items() for t, lv in rows
    }
    got = {_norm(r["title"]): (r["chapter"], r["slug"], r["level"]) for r in csv_rows}
    assert len(csv_rows) == total
    assert got == expected


def test_page_lists_every_paper(syllabus):
    sections, _, _ = syllabus
    page = PAGE.read_text(encoding="utf-8")
    # Paper tables follow the first chapter heading; the summary table above them has no titles.
    unescaped = re.sub(r"\\(.)", r"\1", page.split("\n## ", 1)[1])
    listed = {_norm(m) for m in re.findall(r"^\| (.+?) \| (?:implement|discuss|cite) \|", unescaped, re.M)}
    for rows in sections.values():
        for title, _ in rows:
            assert _norm(title) in listed, f"{title!r} missing from paper-index.md"
    assert len(listed) == sum(len(rows) for rows in sections.values())


def test_page_groups_papers_under_their_chapter(syllabus):
    sections, _, _ = syllabus
    page = re.sub(r"\\(.)", r"\1", PAGE.read_text(encoding="utf-8"))
    blocks = re.split(r"^## ", page, flags=re.MULTILINE)[1:]
    by_heading = {b.partition("\n")[0]: b for b in blocks}
    for (number, slug), rows in sections.items():
        heading = "Cited only (no chapter)" if number == "00" else f"Chapter {number}: {slug}"
        block = by_heading[heading]
        for title, level in rows:
            assert f"| {title} | {level} |" in block


def test_chapter_01_papers_are_citable(csv_rows):
    bib = BIB.read_text(encoding="utf-8")
    bib_keys = set(re.findall(r"^@\w+\{([^,]+),", bib, re.MULTILINE))
    ch01 = [r for r in csv_rows if r["chapter"] == "01"]
    assert len(ch01) == 10
    for r in ch01:
        assert r["bibkey"], f"chapter-01 paper {r['title']!r} has no references.bib entry"
    for r in csv_rows:
        if r["bibkey"]:
            assert r["bibkey"] in bib_keys
            assert f"{{cite:p}}`{r['bibkey']}`" in PAGE.read_text(encoding="utf-8")
    for key in ["vaswani2017attention", "jiang2023prermsnorm", "su2021roformer", "press2022alibi",
                "ba2016layernorm", "zhang2019rmsnorm", "shazeer2020glu", "xiong2020layernorm",
                "parisotto2020gtrxl", "cover2006elements", "dao2022flashattention"]:
        assert key in bib_keys


def test_generated_files_are_up_to_date():
    result = subprocess.run([sys.executable, "tools/paper_index.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_detects_drift(tmp_path):
    for rel in ["tools/paper_index.py", "tools/api_reference.py", "tools/_generated.py", "book/data/SYLLABUS.md",
                "book/data/papers.csv", "book/paper-index.md", "book/references.bib"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    page = tmp_path / "book" / "paper-index.md"
    page.write_text(page.read_text(encoding="utf-8").replace("| Three-Phase Transformer |", "| |"),
                    encoding="utf-8")
    check = [sys.executable, "tools/paper_index.py", "--check"]
    result = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "paper-index.md" in result.stderr
    subprocess.run([sys.executable, "tools/paper_index.py"], cwd=tmp_path, check=True, capture_output=True)
    assert subprocess.run(check, cwd=tmp_path, capture_output=True).returncode == 0


# ---------------------------------------------------------------------------- claims the chapters record

def _tools():
    import importlib

    for path in (str(ROOT), str(ROOT / "tools")):
        if path not in sys.path:
            sys.path.insert(0, path)
    return importlib.import_module("paper_index")


@pytest.fixture(scope="module")
def claims():
    return _tools().chapter_claims()


def test_chapters_record_claims(claims):
    assert {c.chapter for c in claims} >= {"01", "02", "03"}


def test_each_claim_links_to_a_heading_of_its_chapter(claims):
    for c in claims:
        nb = json.loads((ROOT / f"{c.docname}.ipynb").read_text(encoding="utf-8"))
        headings = [ln.lstrip("#").strip() for cell in nb["cells"] if cell["cell_type"] == "markdown"
                    for ln in "".join(cell["source"]).splitlines() if re.match(r"^#{1,3} ", ln)]
        assert c.section in headings, f"{c.docname}: claim {c.paper!r} names no heading {c.section!r}"
        assert c.anchor and f"#{c.anchor})" in PAGE.read_text(encoding="utf-8")


def test_each_claim_names_a_public_function_with_a_reference_entry(claims):
    import importlib

    reference = _tools()  # noqa: F841 (puts tools/ on the path)
    from api_reference import reference_target

    for c in claims:
        module, _, name = c.function.rpartition(".")
        mod = importlib.import_module(module)
        assert name in getattr(mod, "__all__", ()), f"{c.function} is not public (not in {module}.__all__)"
        home, target = reference_target(c.function)
        page = ROOT / "book" / "reference" / f"{home}.md"
        assert page.is_file(), f"{c.function}: no reference page {page.relative_to(ROOT)}"
        assert f"{target.rpartition('.')[2]}" in page.read_text(encoding="utf-8")


def test_each_claim_names_a_test_that_exists(claims):
    import ast

    for c in claims:
        path, _, name = c.test.partition("::")
        file = ROOT / path
        assert file.is_file() and path.startswith("tests/test_"), f"{c.paper}: no test file {path}"
        defined = {n.name for n in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                   if isinstance(n, ast.FunctionDef)}
        assert name in defined, f"{c.paper}: {path} defines no {name}"


def test_a_chapter_that_records_claims_records_every_implement_paper(claims, csv_rows):
    recording = {c.chapter for c in claims}
    recorded = {(c.chapter, c.paper) for c in claims}
    for r in csv_rows:
        if r["level"] == "implement" and r["chapter"] in recording:
            assert r["bibkey"], f"implement paper {r['title']!r} has no references.bib entry to claim it by"
            assert (r["chapter"], r["bibkey"]) in recorded, f"chapter {r['chapter']} records no claim for {r['bibkey']}"


def test_statuses_in_the_index_are_the_recorded_ones(claims, csv_rows):
    from minilib.experiments import CLAIM_STATUSES

    by_key = {(c.chapter, c.paper): c.status for c in claims}
    built = {p.name[:2] for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")}
    for r in csv_rows:
        if r["level"] != "implement":
            assert r["status"] == ""
            continue
        expected = by_key.get((r["chapter"], r["bibkey"]),
                              "not yet recorded" if r["chapter"] in built else "not yet built")
        assert r["status"] == expected, r["title"]
    assert set(by_key.values()) <= set(CLAIM_STATUSES)


def test_a_claim_for_a_paper_the_chapter_does_not_implement_is_refused():
    tools = _tools()
    papers = [tools.Paper("A paper", "01", "transformer", "implement", "realkey")]
    stray = tools.Claim("01", "chapters/01_x", "otherkey", "reproduced", "s", "minilib.attention.sdpa", "t")
    with pytest.raises(ValueError, match="otherkey"):
        tools.attach_claims(papers, [stray])
