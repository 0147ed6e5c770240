"""The one command line of every page generator in tools/: write its files, or with ``--check`` exit 1 when one is stale.

Each generator calls :func:`run` from its ``main`` with a ``build()`` that returns ``{path: text}``; a generator
that owns a whole folder passes it as ``folder``, so pages whose source is gone are reported and removed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def run(build: Callable[[], dict[Path, str]], argv: list[str] | None, *, script: str, description: str,
        folder: Path | None = None) -> int:
    """Parse ``--check``, then compare or write the files ``build()`` returns; returns the exit status."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date or left over")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
    pages = build()
    stale = [p for p, text in pages.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    extra = sorted(set(folder.glob("*.md")) - set(pages)) if folder is not None and folder.exists() else []
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(ROOT)} (run `python tools/{script}`)", file=sys.stderr)
        for p in extra:
            print(f"left over: {p.relative_to(ROOT)} (its source is gone; run `python tools/{script}`)", file=sys.stderr)
        return 1 if stale or extra else 0
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for p in extra:
        p.unlink()
    for p, text in pages.items():
        p.write_text(text, encoding="utf-8")
    print(f"wrote {len(pages)} file(s): {', '.join(sorted(str(p.relative_to(ROOT)) for p in pages)[:4])}"
          f"{', ...' if len(pages) > 4 else ''}")
    return 0
