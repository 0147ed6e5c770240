"""Show minilib's own source in a notebook, so the book and the library never drift."""

import inspect
import re
import textwrap

__all__ = ["source_markdown", "show", "show_table"]


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


def show(obj) -> None:
    """Display the source of ``obj`` as a highlighted code block in the notebook and the book."""
    from IPython.display import Markdown, display

    display(Markdown(source_markdown(obj)))


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
