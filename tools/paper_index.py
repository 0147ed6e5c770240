"""Generate the book's paper index from the syllabus and the claims the chapters record.

    python tools/paper_index.py           # write book/data/papers.csv and book/paper-index.md
    python tools/paper_index.py --check   # exit 1 if either file is out of date

Input: book/data/SYLLABUS.md (one table per chapter, one row per paper), book/references.bib (a
paper whose title matches a BibTeX entry gets that key, so the index page can cite it), and the
``claim(...)`` calls in chapters/*.ipynb (:func:`minilib.experiments.claim`): for an ``implement``
paper, the chapter section that shows its claim, the minilib function, the test that proves it and
the status, which the chapter checks against its own computed evidence when it runs. An
``implement`` row without a claim is "not yet built" (no chapter notebook) or "not yet recorded".
Output: papers.csv (title, chapter, slug, level, bibkey, status) and the page.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYLLABUS = ROOT / "book" / "data" / "SYLLABUS.md"
BIBFILE = ROOT / "book" / "references.bib"
CSV_OUT = ROOT / "book" / "data" / "papers.csv"
PAGE_OUT = ROOT / "book" / "paper-index.md"
CHAPTERS = ROOT / "chapters"
NOT_BUILT, NOT_RECORDED = "not yet built", "not yet recorded"

LEVELS = ("implement", "discuss", "cite")
CHAPTER_HEADING = re.compile(r"^## (\d\d) (\S+)\s*$")
TOTAL_LINE = re.compile(r"^Total unique papers: (\d+)")


@dataclass(frozen=True)
class Chapter:
    number: str
    slug: str
    summary: str


@dataclass(frozen=True)
class Paper:
    title: str
    chapter: str
    slug: str
    level: str
    bibkey: str = ""
    claim: Claim | None = None

    def status(self, built: set[str]) -> str:
        if self.level != "implement":
            return ""
        if self.claim is not None:
            return self.claim.status
        return NOT_RECORDED if self.chapter in built else NOT_BUILT


def normalize_title(title: str) -> str:
    """Case-, brace- and whitespace-insensitive form used to match titles."""
    return " ".join(title.replace("{", "").replace("}", "").split()).lower()


def loose_title(title: str) -> str:
    """Letters and digits only: "LeanAttention" in a BibTeX title matches "Lean Attention" in the syllabus."""
    return re.sub(r"[^0-9a-z]", "", normalize_title(title))


@dataclass(frozen=True)
class Claim:
    """One ``claim(...)`` call of a chapter notebook."""
    chapter: str      # "03"
    docname: str      # "chapters/03_io-aware-kernels"
    paper: str        # references.bib key
    status: str
    section: str      # heading text
    function: str     # dotted minilib name
    test: str         # pytest node id
    anchor: str = ""  # the heading's MyST slug ("" when no heading has that text)


def _heading_text(line: str) -> str:
    return line.lstrip("#").strip()


def heading_slugs(headings: list[str]) -> dict[str, str]:
    """Heading text -> the anchor MyST gives it (myst_heading_anchors), unique within the page."""
    from myst_parser.mdit_to_docutils.base import default_slugify

    slugs: dict[str, str] = {}
    seen: set[str] = set()
    for text in headings:
        plain = re.sub(r"\$[^$]*\$", "", text).replace("`", "")
        slug, i = default_slugify(plain), 1
        base = slug
        while slug in seen:
            slug, i = f"{base}-{i}", i + 1
        seen.add(slug)
        slugs.setdefault(text, slug)
    return slugs


def notebook_claims(path: Path) -> list[Claim]:
    """The ``claim(...)`` calls of a notebook, with literal arguments, in order."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    headings, found = [], []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            headings += [_heading_text(ln) for ln in src.splitlines() if re.match(r"^#{1,3} ", ln)]
            continue
        if cell["cell_type"] != "code" or "claim(" not in src:
            continue
        code = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
        for node in ast.walk(ast.parse(code)):
            func = getattr(node, "func", None)
            if not isinstance(node, ast.Call) or getattr(func, "id", getattr(func, "attr", None)) != "claim":
                continue
            args = [ast.literal_eval(a) for a in node.args[:2]]
            kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg != "evidence"}
            found.append((args[0], args[1], kw["section"], kw["function"], kw["test"]))
    slugs = heading_slugs(headings)
    chapter, docname = path.name[:2], f"chapters/{path.stem}"
    return [Claim(chapter, docname, paper, status, section, function, test, slugs.get(section, ""))
            for paper, status, section, function, test in found]


def chapter_claims() -> list[Claim]:
    return [c for path in sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb")) for c in notebook_claims(path)]


def built_chapters() -> set[str]:
    return {p.name[:2] for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb")}


def parse_syllabus(text: str) -> tuple[list[Chapter], list[Paper], int]:
    """Chapters in order, papers in order, and the stated total of unique papers."""
    chapters: list[Chapter] = []
    papers: list[Paper] = []
    stated_total = None
    current = None  # (number, slug) while inside a chapter section
    summary = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        heading = CHAPTER_HEADING.match(line)
        if heading:
            current, summary = heading.groups(), None
            continue
        if line.startswith("## "):
            current = None
            continue
        total = TOTAL_LINE.match(line)
        if total:
            stated_total = int(total.group(1))
        if current is None:
            continue
        if summary is None and line.strip() and not line.startswith("|"):
            summary = line.strip()
            chapters.append(Chapter(current[0], current[1], summary))
            continue
        if not line.startswith("| ") or line.startswith("| Paper |"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 3:
            raise ValueError(f"SYLLABUS.md:{lineno}: expected 3 cells, got {len(cells)}")
        title, level = cells[0].replace("\\|", "|"), cells[1]
        if level not in LEVELS:
            raise ValueError(f"SYLLABUS.md:{lineno}: level {level!r} is not one of {LEVELS}")
        papers.append(Paper(title, current[0], current[1], level))
    if stated_total is None:
        raise ValueError("SYLLABUS.md: no 'Total unique papers: N' line")
    return chapters, papers, stated_total


def bib_titles(bib_text: str) -> dict[str, str]:
    """Map loose title -> BibTeX key for every entry of references.bib."""
    from pybtex.database import parse_string

    data = parse_string(bib_text, "bibtex")
    return {loose_title(e.fields["title"]): key for key, e in data.entries.items() if "title" in e.fields}


def attach_keys(papers: list[Paper], keys: dict[str, str]) -> list[Paper]:
    return [Paper(p.title, p.chapter, p.slug, p.level, keys.get(loose_title(p.title), "")) for p in papers]


def attach_claims(papers: list[Paper], claims: list[Claim]) -> list[Paper]:
    """Each implement paper with the claim its chapter records; a claim that names no such paper is an error."""
    by_key = {(c.chapter, c.paper): c for c in claims}
    rows = {(p.chapter, p.bibkey) for p in papers if p.level == "implement" and p.bibkey}
    for c in claims:
        if (c.chapter, c.paper) not in rows:
            raise ValueError(f"{c.docname}: claim({c.paper!r}, ...) names no implement paper of chapter {c.chapter} "
                             "(its references.bib key, as SYLLABUS.md's row maps to it)")
    return [Paper(p.title, p.chapter, p.slug, p.level, p.bibkey, by_key.get((p.chapter, p.bibkey))
                  if p.level == "implement" else None) for p in papers]


def check_unique(papers: list[Paper], stated_total: int) -> None:
    seen: dict[str, Paper] = {}
    for p in papers:
        key = normalize_title(p.title)
        if key in seen:
            raise ValueError(f"duplicate paper {p.title!r} in chapters {seen[key].chapter} and {p.chapter}")
        seen[key] = p
    if len(papers) != stated_total:
        raise ValueError(f"SYLLABUS.md states {stated_total} unique papers, its tables hold {len(papers)}")


def render_csv(papers: list[Paper], built: set[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["title", "chapter", "slug", "level", "bibkey", "status"])
    for p in papers:
        writer.writerow([p.title, p.chapter, p.slug, p.level, p.bibkey, p.status(built)])
    return buf.getvalue()


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|$~#])")


def md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def chapter_heading(ch: Chapter) -> str:
    if ch.number == "00":
        return "Cited only (no chapter)"
    return f"Chapter {ch.number}: {ch.slug}"


def claim_cells(p: Paper, built: set[str]) -> str:
    """Status | Shown in | Implemented by | Proved by, for one paper's row."""
    c = p.claim
    if c is None:
        return f" {p.status(built)} | | | |"
    from api_reference import reference_target  # tools/: the reference page names the function's home

    _, target = reference_target(c.function)
    shown = f"[{md_escape(c.section)}](../{c.docname}.ipynb#{c.anchor})"
    return f" {c.status} | {shown} | {{py:obj}}`~{target}` | `{c.test}` |"


def render_page(chapters: list[Chapter], papers: list[Paper], built: set[str]) -> str:
    by_chapter = {ch.number: [p for p in papers if p.chapter == ch.number] for ch in chapters}
    lines = [
        "<!-- Generated by tools/paper_index.py from book/data/SYLLABUS.md and book/references.bib."
        " Do not edit: run `python tools/paper_index.py`. -->",
        "",
        "# Paper index",
        "",
        f"Every paper in the book's source listings ({len(papers)} unique papers), with the chapter that"
        " teaches it and how deeply:",
        "",
        "- **implement**: `minilib` gets the mechanism and the chapter reproduces a claim at toy scale;",
        "- **discuss**: explained in prose or a figure, perhaps with a small demo;",
        "- **cite**: named as further reading.",
        "",
        "Papers with an entry in the [bibliography](bibliography.md) link to it. For every **implement**",
        "paper the index says what became of its claim, as the chapter records it with",
        "{py:func}`~minilib.experiments.claim`: the section that shows it, the `minilib` function that",
        "implements it (linked to the [reference](reference/index.md)), the test that proves the function",
        "against an independent reference, and the status:",
        "",
        "- **reproduced**: the chapter computed the toy claim and it holds;",
        "- **does not reproduce at toy scale**: the chapter computed it and it does not hold (the chapter gives the numbers);",
        f"- **{NOT_RECORDED}**: the chapter exists but records no outcome for this paper yet;",
        f"- **{NOT_BUILT}**: the chapter is not written yet.",
        "",
        "The chapter checks each status against the numbers it computed when it runs (a disagreeing",
        "status stops the build), and the tests check that every section, function and test named here",
        "exists.",
        "",
        "| Chapter | implement | discuss | cite | total | reproduced | does not reproduce | not recorded or built |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def outcome_counts(rows):
        statuses = [p.status(built) for p in rows if p.level == "implement"]
        known = statuses.count("reproduced"), statuses.count("does not reproduce at toy scale")
        return [*known, len(statuses) - sum(known)]

    for ch in chapters:
        rows = by_chapter[ch.number]
        counts = [sum(p.level == lv for p in rows) for lv in LEVELS]
        lines.append(f"| {chapter_heading(ch)} | " + " | ".join(map(str, counts)) + f" | {len(rows)} | "
                     + " | ".join(map(str, outcome_counts(rows))) + " |")
    totals = [sum(p.level == lv for p in papers) for lv in LEVELS]
    lines.append("| **all** | " + " | ".join(map(str, totals)) + f" | {len(papers)} | "
                 + " | ".join(map(str, outcome_counts(papers))) + " |")
    for ch in chapters:
        lines += ["", f"## {chapter_heading(ch)}", "", md_escape(ch.summary), "",
                  "| Paper | Level | Reference | Status | Shown in | Implemented by | Proved by |",
                  "|---|---|---|---|---|---|---|"]
        for p in by_chapter[ch.number]:
            ref = f"{{cite:p}}`{p.bibkey}`" if p.bibkey else ""
            lines.append(f"| {md_escape(p.title)} | {p.level} | {ref} |" + claim_cells(p, built))
    return "\n".join(lines) + "\n"


def build() -> dict[Path, str]:
    """The generated files' contents, keyed by path."""
    chapters, papers, stated_total = parse_syllabus(SYLLABUS.read_text(encoding="utf-8"))
    check_unique(papers, stated_total)
    papers = attach_keys(papers, bib_titles(BIBFILE.read_text(encoding="utf-8")))
    papers = attach_claims(papers, chapter_claims())
    built = built_chapters()
    return {CSV_OUT: render_csv(papers, built), PAGE_OUT: render_page(chapters, papers, built)}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _generated import run

    return run(build, argv, script="paper_index.py", description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
