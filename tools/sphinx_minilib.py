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
5. Chapter openings: under each chapter's title, a box with its prerequisites and learning goals
   (book/data/chapters.yml) and "what you will build": the minilib names the chapter ``show()``s, read
   from its code cells and linked to their reference entries. The first use of each glossary term in
   a chapter's prose links to the glossary.
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
    # a type alias imported into a signature (``mixer: str | MixerFactory``) names typing's object, not
    # minilib's: link it to the one minilib entry of that name
    same_name = [name for name in py.objects if name.startswith("minilib.") and name.endswith("." + target)]
    if "." not in target and len(same_name) == 1:
        return py.resolve_xref(env, node["refdoc"], app.builder, "obj", same_name[0], node, contnode)
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


def _shown_names(nb: dict) -> list[str]:
    """Dotted minilib names a notebook passes to ``show()``, resolved through its imports, in order."""
    import ast

    aliases, shown = {}, []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("\n".join(ln for ln in "".join(cell["source"]).splitlines()
                                       if not ln.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show" and node.args
                  and isinstance(node.args[0], (ast.Name, ast.Attribute))):
                head, _, rest = ast.unparse(node.args[0]).partition(".")
                dotted = aliases.get(head, head) + ("." + rest if rest else "")
                if dotted.startswith("minilib") and dotted not in shown:
                    shown.append(dotted)
    return shown


def chapter_opening(app, doctree):
    """The "In this chapter" box under a chapter's title (see the module docstring)."""
    import json
    from pathlib import Path

    import yaml
    from docutils import nodes
    from sphinx import addnodes

    docname = app.env.docname
    if not docname.startswith("chapters/"):
        return
    data_file = Path(app.srcdir) / "book" / "data" / "chapters.yml"
    info = (yaml.safe_load(data_file.read_text(encoding="utf-8")) or {}).get(docname, {}) if data_file.exists() else {}
    nb = json.loads(Path(app.env.doc2path(docname)).read_text(encoding="utf-8"))
    built = []
    for dotted in _shown_names(nb):
        obj = _lookup(dotted)
        name = canonical_name(obj) if obj is not None else None
        if name is None or any(p.startswith("_") for p in name.split(".")):
            continue
        module = _lookup(name.rsplit(".", 1)[0]) if not inspect.ismodule(obj) else obj
        if not inspect.ismodule(obj) and name.rsplit(".", 1)[1] not in getattr(module, "__all__", ()):
            continue
        label = name.rsplit(".", 1)[1]
        ref = addnodes.pending_xref("", nodes.literal(label, label), refdomain="py",
                                    reftype="mod" if inspect.ismodule(obj) else "obj", reftarget=name,
                                    refexplicit=True, refwarn=True, refdoc=docname)
        if all(r["reftarget"] != name for r in built):
            built.append(ref)
    box = nodes.admonition(classes=["chapter-opening", "tip"])
    box += nodes.title("", "In this chapter")
    items = nodes.bullet_list()
    if info.get("prerequisites"):
        items += nodes.list_item("", nodes.paragraph("", "", nodes.strong("", "Prerequisites: "),
                                                     nodes.Text(info["prerequisites"])))
    if info.get("goals"):
        goals = nodes.bullet_list()
        for goal in info["goals"]:
            goals += nodes.list_item("", nodes.paragraph("", goal))
        items += nodes.list_item("", nodes.paragraph("", "", nodes.strong("", "You will learn to:")), goals)
    if built:
        para = nodes.paragraph("", "", nodes.strong("", "What you will build in minilib: "))
        for i, ref in enumerate(built):
            para += [nodes.Text(", ")] if i else []
            para += ref
        items += nodes.list_item("", para)
    if not len(items):
        return
    box += items
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is not None:
        section.insert(1, box)


def glossary_first_uses(app, doctree, docname):
    """Link the first use of each glossary term in a chapter's prose to its glossary entry."""
    from docutils import nodes

    if not docname.startswith("chapters/"):
        return
    std = app.env.get_domain("std")
    terms = {name: (doc, anchor) for (kind, name), (doc, anchor) in std.objects.items() if kind == "term"}
    skip = (nodes.literal, nodes.literal_block, nodes.reference, nodes.title, nodes.math, nodes.math_block,
            nodes.raw, nodes.image)
    for term, (doc, anchor) in sorted(terms.items(), key=lambda kv: -len(kv[0])):
        pattern = re.compile(rf"(?<![\w-]){re.escape(term)}(?![\w-])", re.I)
        for text in doctree.findall(nodes.Text):
            parent = text.parent
            if (not isinstance(parent, nodes.paragraph) or any(isinstance(a, skip) for a in _ancestors(text))
                    or {"cell", "chapter-opening"} & set(_classes(text))):
                continue
            match = pattern.search(text.astext())
            if not match:
                continue
            uri = app.builder.get_relative_uri(docname, doc) + "#" + anchor
            before, word, after = text.astext()[:match.start()], match.group(0), text.astext()[match.end():]
            link = nodes.reference("", word, refuri=uri, classes=["glossary-link"], reftitle="glossary")
            index = next(i for i, child in enumerate(parent.children) if child is text)
            del parent.children[index]  # by identity: Text nodes compare equal by their string
            for j, piece in enumerate(p for p in (nodes.Text(before), link, nodes.Text(after)) if p.astext()):
                parent.insert(index + j, piece)
            break


def _ancestors(node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def _classes(node):
    return [c for a in _ancestors(node) for c in a.get("classes", [])]


def setup(app):
    app.connect("doctree-read", chapter_opening)
    app.connect("doctree-resolved", glossary_first_uses)
    app.connect("doctree-resolved", figure_alt_text)
    app.connect("config-inited", _launch_buttons_need_a_repository)
    app.connect("autodoc-process-docstring", _process)
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
