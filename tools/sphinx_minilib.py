"""Sphinx extension of the book: the minilib reference (book/reference/, autodoc), launch buttons, alt text.

1. Math: minilib's docstrings write math as ``$...$`` and ``$$...$$``, as the notebooks do. autodoc parses
   docstrings as reStructuredText, where a dollar is a dollar, so inline math becomes the ``:math:`` role
   and display math on lines of its own a ``.. math::`` block (``code`` literals are left alone); the
   offline MathJax then typesets it like the chapters' math.
2. Names: docstrings refer to objects the way users import them (``minilib.attention.MultiHeadAttention``,
   or ``sdpa`` inside its package), while each object is documented once, under the module that defines
   it. An unresolved ``py`` reference is looked up in the code and resolved to that canonical entry; one
   that names a real but undocumented minilib object (a private helper) renders as code without a link.
   A name that exists nowhere stays a warning, so ``-W -n`` still catches typos.
3. Launch buttons: the Binder and Colab buttons of _config.yml appear only once its one repository
   setting (``repository.url``) is filled in; while it is empty they are switched off here.
4. Alt text: a figure a notebook cell draws has no alt text of its own (docutils would use its file
   path). It gets "Figure: <the titles the cell's code sets>, in <section>" from the cell and the
   heading above it, unless the cell's metadata gives one.
"""
from __future__ import annotations

import importlib
import inspect
import re

_LITERAL = re.compile(r"(``.+?``)", re.S)
_DISPLAY = re.compile(r"^([ \t]*)\$\$(.+?)\$\$[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"(?<![\\$])\$(?=[^\s$])([^$\n]*?[^\s\\$])\$(?!\$)")


def _display(match: re.Match) -> str:
    indent, body = match.group(1), match.group(2).strip("\n")
    lines = [ln.strip() for ln in body.splitlines()]
    inner = "\n".join(f"{indent}   {ln}" if ln else "" for ln in lines)
    return f"\n{indent}.. math::\n\n{inner}\n"


def _inline(text: str) -> str:
    def role(m: re.Match) -> str:
        start, end = m.start(), m.end()
        before = "\\ " if start > 0 and (text[start - 1].isalnum() or text[start - 1] in ")]") else ""
        after = "\\ " if end < len(text) and (text[end].isalnum() or text[end] in "([") else ""
        return f"{before}:math:`{m.group(1)}`{after}"

    return _INLINE.sub(role, text)


def convert(text: str) -> str:
    """``text`` with ``$$...$$`` lines as ``.. math::`` blocks and ``$...$`` as ``:math:`...```."""
    text = _DISPLAY.sub(_display, text)  # first: display math may hold ``literals`` (\\text{``normalized``})
    parts = _LITERAL.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a ``literal``
            out.append(part)
            continue
        part = re.sub(r"\$\$(.+?)\$\$", lambda m: f"${m.group(1)}$" if "\n" not in m.group(1) else m.group(0), part,
                      flags=re.S)  # $$...$$ in the middle of a sentence is inline math
        out.append(_inline(part))
    return "".join(out)


def _process(app, what, name, obj, options, lines):
    new = convert("\n".join(lines)).split("\n")
    lines[:] = new


def _lookup(dotted: str):
    """The object ``dotted`` names (``minilib.x.y.Name.attr``), or None."""
    if not dotted.startswith("minilib"):
        return None
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def canonical_name(obj) -> str | None:
    """``module.qualname`` of the object's definition, or the module's name."""
    if inspect.ismodule(obj):
        return obj.__name__
    obj = inspect.unwrap(getattr(obj, "__func__", obj))
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates += [f"{module}.{cls}.{target}" if cls else None, f"{module}.{target}",
                       f"{module.rpartition('.')[0]}.{target}"]
        mod = _lookup(module)  # a method named bare in its class's summary line
        candidates += [f"{module}.{name}.{target}" for name in getattr(mod, "__all__", [])
                       if inspect.isclass(getattr(mod, name, None)) and hasattr(getattr(mod, name), target)]
    py = env.get_domain("py")
    for dotted in filter(None, candidates):
        obj = _lookup(dotted)
        if obj is None:
            continue
        name = canonical_name(obj) or dotted
        for reftype in (node["reftype"], "obj"):
            found = py.resolve_xref(env, node["refdoc"], app.builder, reftype, name, node, contnode)
            if found is not None:
                return found
        if name.startswith("minilib") and name not in py.objects:
            return contnode  # real, but private: no reference entry to link to
    if module:  # a method named bare inside its class's docstring
        near = [name for name in py.objects if name.startswith(module + ".") and name.endswith("." + target)]
        if len(near) == 1:
            return py.resolve_xref(env, node["refdoc"], app.builder, "obj", near[0], node, contnode)
    return None


def _launch_buttons_need_a_repository(app, config):
    """Binder/Colab buttons are built from ``repository.url`` of _config.yml: while it is empty, none."""
    options = config.html_theme_options
    if not options.get("repository_url"):
        launch = dict(options.get("launch_buttons") or {})
        for key in ("binderhub_url", "jupyterhub_url", "colab_url", "jupyterlite_url"):
            launch.pop(key, None)
        options["launch_buttons"] = launch


_TITLE = re.compile(r"""(?:set_title|suptitle|title)\(\s*(?:rf|fr|f|r)?(["'])(.+?)\1""")


def _text(node) -> str:
    return " ".join(node.astext().split())


def figure_alt_text(app, doctree, docname):
    """Alt text for cell-output images that have none (see the module docstring)."""
    from docutils import nodes

    for image in doctree.findall(nodes.image):
        if image.get("alt"):
            continue
        cell = image.parent
        while cell is not None and "cell" not in cell.get("classes", []):
            cell = cell.parent
        section = image.parent
        while section is not None and not isinstance(section, nodes.section):
            section = section.parent
        code = next(iter(cell.findall(nodes.literal_block)), None) if cell is not None else None
        titles = [re.sub(r"[{}$\\]", "", t[1]) for t in _TITLE.findall(code.astext())] if code is not None else []
        where = _text(section[0]) if section is not None and len(section) else docname
        image["alt"] = "Figure: " + (f"{'; '.join(titles)}, in " if titles else "") + where


def setup(app):
    app.connect("doctree-resolved", figure_alt_text)
    app.connect("config-inited", _launch_buttons_need_a_repository)
    app.connect("autodoc-process-docstring", _process)
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
