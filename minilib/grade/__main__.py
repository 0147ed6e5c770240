"""``python -m minilib.grade``: see :mod:`minilib.grade.cli`."""
import sys

from minilib.grade.cli import main

if __name__ == "__main__":
    sys.exit(main())
