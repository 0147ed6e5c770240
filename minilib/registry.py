"""Names for the swappable parts of a model: a config says ``mixer="retention"`` or ``ffn="moe"`` and the
block builds the part from the factory registered under that name.

A factory is called as ``factory(config, layer)``: ``config`` is the model's config, ``layer`` the index of
the block, so one factory can read the fields it needs (and vary with depth). The module that defines a part
registers it when it is imported. :mod:`minilib.mixing` keeps the token mixers, :mod:`minilib.feedforward`
the channel MLPs; both are a :class:`Registry`.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["Registry"]


class Registry:
    """Unique names -> ``factory(config, layer)`` for one kind of part; ``field`` is the config field naming it."""

    def __init__(self, kind: str, field: str):
        self.kind = kind
        self.field = field
        self.factories: dict[str, Callable] = {}

    def register(self, name: str, factory: Callable) -> Callable:
        """Make ``config.<field> = name`` build ``factory(config, layer)``; returns ``factory``. Names are unique."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if not callable(factory):
            raise TypeError(f"factory must be callable as factory(config, layer), got {type(factory).__name__}")
        if name in self.factories and self.factories[name] is not factory:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self.factories[name] = factory
        return factory

    def factory(self, value: str | Callable) -> Callable:
        """The factory a config field stands for: a registered name, or a factory given directly."""
        if callable(value):
            return value
        if not isinstance(value, str) or value not in self.factories:
            raise ValueError(f"{self.field} must be a registered name {sorted(self.factories)} or a factory(config, "
                             f"layer), got {value!r} (a family registers its {self.kind}s when its module is imported)")
        return self.factories[value]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self.factories)
