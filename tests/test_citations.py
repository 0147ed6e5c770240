"""Every citation key used in the library, the notebooks and the book pages exists in references.bib."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITE = re.compile(r"(?::cite:|\{cite(?::[a-z]+)?\})`([^`]+)`")


def bib_keys() -> set[str]:
    text = (ROOT / "book" / "references.bib").read_text()
    return set(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.M))


def cited_keys() -> dict[str, set[str]]:
    files = [*ROOT.glob("minilib/**/*.py"), *ROOT.glob("chapters/*.ipynb"), *ROOT.glob("solutions/*.ipynb"),
             *ROOT.glob("book/*.md")]
    found: dict[str, set[str]] = {}
    for path in files:
        for group in CITE.findall(path.read_text()):
            for key in group.split(","):
                found.setdefault(key.strip(), set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_cited_key_is_in_the_bibliography():
    known = bib_keys()
    missing = {key: sorted(paths) for key, paths in cited_keys().items() if key not in known}
    assert not missing, f"cited but not in book/references.bib: {missing}"


def test_the_scan_finds_citations():
    cited = cited_keys()
    assert "vaswani2017attention" in cited and len(cited) > 10
