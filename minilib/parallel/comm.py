r"""What a rank did and when: the bytes it sent and received, and a timeline of compute and communication.

Every distributed function in :mod:`minilib.parallel` takes an optional :class:`RankLog` and records in it
the tensors it actually passed (their ``numel() * element_size()``), so the bytes a chapter states are
counted, not assumed, and the timestamps draw each rank's timeline.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["RankLog"]


@dataclass
class RankLog:
    """Events of one rank: ``kind`` (``"compute"``, ``"send"``, ``"recv"``, ``"all_gather"``, ``"all_to_all"``),
    ``step``, ``start``/``end`` (``time.perf_counter`` seconds) and ``bytes``: for ``send``/``recv`` the tensors
    passed, for ``all_gather`` the gathered result (every rank's piece), for ``all_to_all`` what this rank sent."""

    events: list[dict] = field(default_factory=list)

    def record(self, kind: str, step: int, start: float, *, tensors=(), **info) -> None:
        """Add one event ending now; ``tensors`` are those it moved (their bytes are summed); ``info`` is kept."""
        moved = sum(t.numel() * t.element_size() for t in tensors)
        self.events.append(dict(kind=kind, step=step, start=start, end=time.perf_counter(), bytes=moved, **info))

    @contextmanager
    def timed(self, kind: str, step: int, **info):
        """``with log.timed("compute", step): ...`` records the block's start and end."""
        start = time.perf_counter()
        yield
        self.record(kind, step, start, **info)

    def bytes(self, kind: str) -> int:
        """Total bytes of the events of ``kind`` (e.g. ``"send"``)."""
        return sum(e["bytes"] for e in self.events if e["kind"] == kind)
