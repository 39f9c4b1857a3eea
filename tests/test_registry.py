"""The one registry type: lookup, aliases, duplicates refused, unknown names listed."""

import pytest

from nas.core.errors import NasError
from nas.core.registry import Registry


def test_register_get_alias():
    reg = Registry("widget")
    reg.register("a", 1, aliases=("alpha",))

    @reg.register("b")
    def b():
        return 2

    assert reg.get("a") == 1 and reg.get("alpha") == 1 and reg.get("b") is b
    assert reg.canonical("alpha") == "a"
    assert reg.names() == ["a", "b"] and reg.names(aliases=True) == ["a", "b", "alpha"]
    assert reg.aliases_of("a") == ["alpha"]
    assert "alpha" in reg and "c" not in reg and len(reg) == 2


@pytest.mark.parametrize("name", ["a", "alpha"])
def test_duplicate_names_raise(name):
    reg = Registry("widget")
    reg.register("a", 1, aliases=("alpha",))
    with pytest.raises(ValueError, match="already registered"):
        reg.register(name, 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("z", 2, aliases=(name,))


def test_unknown_name_lists_known():
    reg = Registry("widget")
    reg.register("a", 1, aliases=("alpha",))
    with pytest.raises(NasError, match=r"unknown widget 'zz'; known: a, alpha"):
        reg.get("zz")
