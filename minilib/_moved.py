"""Lazy aliases for public names that moved: the old module keeps answering, with a DeprecationWarning."""
from __future__ import annotations

import importlib
import warnings
from typing import Callable


def moved_names(old_module: str, new_homes: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``old_module``: ``name`` in ``new_homes`` is imported from its new module.

    The import happens on first access, so the old module gains no import-time dependency on the new one.
    """
    def __getattr__(name: str):
        if name not in new_homes:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(f"{old_module}.{name} moved to {new_homes[name]}.{name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new_homes[name]), name)

    return __getattr__
