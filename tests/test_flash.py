"""minilib.flash as a package: every public function of its submodules is re-exported and listed in __all__."""
import ast
import inspect
from pathlib import Path

import pytest

import minilib.flash as fl

SUBMODULES = ["io_numpy", "kernel", "decode", "packed", "block_sparse"]


def public_functions(module_name):
    """Names of the public top-level functions a submodule's source defines (read by ast, not by import)."""
    path = Path(fl.__file__).parent / f"{module_name}.py"
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]


def test_every_public_function_is_exported_and_listed():
    defined = [name for m in SUBMODULES for name in public_functions(m)]
    assert sorted(defined) == sorted(fl.__all__)
    for name in defined:
        assert inspect.isfunction(getattr(fl, name)), name


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_kernel"):
        fl.no_such_kernel  # noqa: B018
