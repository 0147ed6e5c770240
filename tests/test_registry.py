"""Registry: names resolve to their factories in registration order; bad names, clashes and non-callables fail clearly."""
import pytest

from minilib.registry import Registry


def test_names_resolve_and_factories_pass_through():
    reg = Registry("widget", "part")

    def first(config, layer):
        return ("first", layer)

    def second(config, layer):
        return ("second", layer)

    assert reg.register("b", first) is first and reg.register("a", second) is second
    assert reg.names() == ["b", "a"]  # registration order, not sorted
    assert reg.factory("a") is second and reg.factory(first) is first
    assert reg.factory("b")(None, 3) == ("first", 3)
    assert reg.register("b", first) is first  # registering the same factory again is harmless


def test_bad_names_clashes_and_factories_fail_naming_the_field():
    reg = Registry("widget", "part")
    reg.register("w", lambda config, layer: None)
    with pytest.raises(ValueError, match=r"a widget named 'w' is already registered"):
        reg.register("w", lambda config, layer: None)
    with pytest.raises(ValueError, match=r"part must be a registered name \['w'\]"):
        reg.factory("nonesuch")
    with pytest.raises(ValueError, match="part must be a registered name"):
        reg.factory(3)
    with pytest.raises(TypeError, match="factory must be callable"):
        reg.register("x", 3)
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        reg.register("", lambda config, layer: None)
    assert reg.names() == ["w"]
