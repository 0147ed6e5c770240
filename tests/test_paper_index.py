"""The paper index lists every paper of SYLLABUS.md exactly once, with its chapter.

The syllabus is parsed here with its own method (split into sections, match rows by their
level cell), not with tools/paper_index.py, and checked against the syllabus's own Counts
table and stated total.
"""

import csv
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
    for rel in ["tools/paper_index.py", "book/data/SYLLABUS.md", "book/data/papers.csv",
                "book/paper-index.md", "book/references.bib"]:
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
