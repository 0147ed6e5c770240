"""Show minilib's own source in a notebook, so the book and the library never drift; draw its tables and timelines."""

import inspect
import re
import sys
import textwrap

__all__ = ["source_markdown", "reference_href", "show", "show_table", "plot_timeline"]

#: Colours of the event kinds :func:`plot_timeline` draws (others get matplotlib's next colour).
TIMELINE_COLOURS = {"compute": "tab:blue", "send": "tab:orange", "all_gather": "tab:green", "all_to_all": "tab:red"}


def _fence(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def source_markdown(obj) -> str:
    """Source of a function, class or module as a Markdown ``python`` code block."""
    try:
        src = textwrap.dedent(inspect.getsource(obj)).rstrip("\n")
    except TypeError as err:
        raise TypeError(f"show: obj must be a function, class or module, got {type(obj).__name__}") from err
    fence = _fence(src)
    return f"{fence}python\n{src}\n{fence}"


def reference_href(obj) -> str | None:
    """Link from a chapter page to ``obj``'s entry in the book's minilib reference, or None if it has none.

    The reference (``tools/api_reference.py``) documents every name of a public module's ``__all__``
    where it is defined; a method links to its class.
    """
    if inspect.ismodule(obj):
        home, name, anchor = obj.__name__, None, f"module-{obj.__name__}"
    else:
        home, qualname = getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "")
        name = qualname.split(".")[0]
        anchor = f"{home}.{name}"
    module = sys.modules.get(home)
    if (not home.startswith("minilib") or any(part.startswith("_") for part in home.split("."))
            or home.startswith("minilib.grade.checks") or module is None or not hasattr(module, "__all__")
            or not any(n in vars(module) for n in module.__all__) or (name is not None and name not in module.__all__)):
        return None
    return f"../book/reference/{home}.html#{anchor}"


def show(obj) -> None:
    """Display the source of ``obj`` as a highlighted code block, with a link to its reference entry in the book."""
    from IPython.display import Markdown, display

    text = source_markdown(obj)
    href = reference_href(obj)
    if href is not None:
        label = href.rpartition("#")[2].removeprefix("module-")
        text += f'\n\n<a class="reference-link" href="{href}">reference: <code>{label}</code></a>'
    display(Markdown(text))


def show_table(rows, headers) -> None:
    """Display ``rows`` (sequences of cells) under ``headers`` as a Markdown table."""
    from IPython.display import Markdown, display

    rows = [list(r) for r in rows]
    headers = list(headers)
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"show_table: rows[{i}] has {len(row)} cells, headers has {len(headers)}")

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    body = [line(headers), "|" + "---|" * len(headers)] + [line(r) for r in rows]
    display(Markdown("\n".join(body)))


def plot_timeline(ax, rows, *, labels=None) -> None:
    """Draw one horizontal lane per row of events, each event a bar from its ``start`` to its ``end``.

    ``rows``: one list of event dicts (``kind``, ``start``, ``end`` in seconds) per lane, e.g. the ``events`` of
    every rank's :class:`minilib.parallel.RankLog`; times are shown in ms from the earliest start. Each kind gets
    its own colour and sub-lane, so overlapping compute and messages stay visible; ``labels`` name the lanes
    (default ``rank 0``, ``rank 1``, ...).
    """
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(r, (list, tuple)) for r in rows):
        raise TypeError("rows must be a non-empty list with one list of events per lane")
    events = [e for row in rows for e in row]
    if not events or not all(isinstance(e, dict) and {"kind", "start", "end"} <= set(e) for e in events):
        raise ValueError("rows must hold events, dicts with 'kind', 'start' and 'end'")
    labels = [f"rank {i}" for i in range(len(rows))] if labels is None else list(labels)
    if len(labels) != len(rows):
        raise ValueError(f"labels must name each of the {len(rows)} lanes, got {len(labels)}")
    t0 = min(e["start"] for e in events)
    kinds = list(dict.fromkeys(e["kind"] for e in events))
    height = 0.8 / len(kinds)
    for lane, row in enumerate(rows):
        for i, kind in enumerate(kinds):
            spans = [((e["start"] - t0) * 1e3, (e["end"] - e["start"]) * 1e3) for e in row if e["kind"] == kind]
            ax.broken_barh(spans, (lane - 0.4 + i * height, height * 0.9), color=TIMELINE_COLOURS.get(kind),
                           label=kind if lane == 0 else None)
    ax.set_yticks(range(len(rows)), labels)
    ax.set_xlabel("time since the first event (ms)")
    ax.legend(loc="upper right", fontsize=8)
