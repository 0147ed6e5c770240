"""minilib.display renders library source exactly as it is in the file."""

import ast
from pathlib import Path

import pytest

from minilib import display


def _source_from_file(path, name):
    """The text of top-level definition `name`, cut from the file by its AST line numbers."""
    text = Path(path).read_text(encoding="utf-8")
    node = next(n for n in ast.parse(text).body if getattr(n, "name", None) == name)
    return "\n".join(text.splitlines()[node.lineno - 1:node.end_lineno])


def test_source_markdown_is_the_file_text():
    md = display.source_markdown(display.show_table)
    expected = _source_from_file(display.__file__, "show_table")
    assert md == f"```python\n{expected}\n```"


def test_fence_is_longer_than_any_backtick_run_in_the_source(tmp_path):
    import importlib.util

    mod_path = tmp_path / "fenced.py"
    mod_path.write_text('def f():\n    """Example:\n\n    ````python\n    f()\n    ````\n    """\n')
    spec = importlib.util.spec_from_file_location("fenced", mod_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    md = display.source_markdown(mod.f)
    assert md.startswith("`````python\n") and md.endswith("\n`````")
    assert md[len("`````python\n"):-len("\n`````")] == mod_path.read_text().rstrip("\n")


def test_show_displays_markdown(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    display.show(display.source_markdown)
    assert len(shown) == 1 and shown[0].data.startswith(display.source_markdown(display.source_markdown) + "\n\n")
    assert shown[0].data.endswith('href="../book/reference/minilib.display.html#minilib.display.source_markdown">'
                                  "reference: <code>minilib.display.source_markdown</code></a>")


def test_reference_href_points_at_the_defining_module_of_public_names():
    from minilib import attention, flash
    from minilib.attention.multihead import MultiHeadAttention
    from minilib.flash import kernel

    assert display.reference_href(attention.sdpa) == (
        "../book/reference/minilib.attention.dot_product.html#minilib.attention.dot_product.sdpa")
    assert display.reference_href(MultiHeadAttention.forward).endswith("#minilib.attention.multihead.MultiHeadAttention")
    assert display.reference_href(kernel) == "../book/reference/minilib.flash.kernel.html#module-minilib.flash.kernel"
    assert display.reference_href(kernel._forward) is None  # private: no reference entry
    assert display.reference_href(flash) is not None and display.reference_href(len) is None


def test_show_table_markdown(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    display.show_table([(1, "a|b")], ["n", "s"])
    assert shown[0].data == "| n | s |\n|---|---|\n| 1 | a\\|b |"
    with pytest.raises(ValueError, match=r"rows\[0\] has 1 cells, headers has 2"):
        display.show_table([(1,)], ["n", "s"])


def test_bad_input_is_a_type_error():
    with pytest.raises(TypeError, match="obj must be a function, class or module, got int"):
        display.source_markdown(3)


def test_plot_timeline_draws_one_bar_per_event_in_its_lane():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minilib.display import plot_timeline

    rows = [[{"kind": "compute", "start": 1.0, "end": 1.5}, {"kind": "send", "start": 1.2, "end": 1.3}],
            [{"kind": "compute", "start": 1.1, "end": 1.4}]]
    fig, ax = plt.subplots()
    plot_timeline(ax, rows)
    spans = sorted((round(v[:, 0].min(), 6), round(v[:, 0].max() - v[:, 0].min(), 6))
                   for coll in ax.collections for v in (path.vertices for path in coll.get_paths()))
    assert spans == [(0.0, 500.0), (100.0, 300.0), (200.0, 100.0)]  # ms from the earliest start
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rank 0", "rank 1"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["compute", "send"]
    plt.close(fig)
    with pytest.raises(ValueError, match="labels"):
        plot_timeline(ax, rows, labels=["a"])
    with pytest.raises(ValueError, match="events"):
        plot_timeline(ax, [[{"kind": "compute"}]])
    with pytest.raises(TypeError, match="rows"):
        plot_timeline(ax, [])
