"""The generic registry: registration forms, lazy built-ins, entry points, messages."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import ClassVar

import pytest

from assay.engine.errors import ConfigError
from assay.engine.registry import Registry

GROUP = "assay.test_registry"
MODULE = "assay_fake_registry_plugin"


class Plugin:
    """A registrable class."""

    name: ClassVar[str] = ""


class Alpha(Plugin):
    name: ClassVar[str] = "alpha"


class Beta(Plugin):
    name: ClassVar[str] = "beta"


class Nameless(Plugin):
    pass


def _is_plugin(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Plugin)


def _registry(builtins: dict[str, str] | None = None) -> Registry[type[Plugin]]:
    return Registry("plugin", GROUP, builtins=builtins, check=_is_plugin, expected="a Plugin")


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module that is in sys.modules only once something imports it through the finder."""
    module = types.ModuleType(MODULE)

    class Gamma(Plugin):
        name: ClassVar[str] = "gamma"

    class Delta(Plugin):
        name: ClassVar[str] = "delta"

    module.__dict__.update(Gamma=Gamma, Delta=Delta, NotAPlugin=object)
    monkeypatch.setitem(sys.modules, MODULE, module)
    return module


@pytest.fixture
def entry_points(
    monkeypatch: pytest.MonkeyPatch, fake_module: types.ModuleType
) -> Iterator[list[str]]:
    """Installs fake entry points in GROUP; yields the groups asked for."""
    asked: list[str] = []
    eps = [
        EntryPoint(name="gamma", value=f"{MODULE}:Gamma", group=GROUP),
        EntryPoint(name="bogus", value=f"{MODULE}:NotAPlugin", group=GROUP),
        EntryPoint(name="missing", value=f"{MODULE}:Nothing", group=GROUP),
        EntryPoint(name="alpha", value=f"{MODULE}:Delta", group=GROUP),  # taken in code
        EntryPoint(name="other", value=f"{MODULE}:Delta", group="another.group"),
    ]

    def fake(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    yield asked


# -- registration -----------------------------------------------------------------------------


def test_register_as_a_bare_decorator_takes_the_name_attribute() -> None:
    reg = _registry()
    assert reg.register(Alpha) is Alpha
    decorated = reg.register(name="a2")(Beta)
    assert decorated is Beta
    assert reg.get("alpha") is Alpha and reg.get("a2") is Beta


def test_register_as_a_call_with_a_name() -> None:
    reg: Registry[Callable[[int], int]] = Registry("factory")

    def double(x: int) -> int:
        return 2 * x

    reg.register(double, name="double")
    assert reg.get("double")(3) == 6
    assert reg.names() == ["double"]


def test_register_without_a_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="has no plugin name"):
        _registry().register(Nameless)


def test_a_duplicate_name_names_both_holders() -> None:
    reg = _registry()
    reg.register(Alpha)
    reg.register(Alpha)  # the same object again is fine

    class Impostor(Plugin):
        name: ClassVar[str] = "alpha"

    with pytest.raises(ConfigError, match="plugin name 'alpha' is taken") as info:
        reg.register(Impostor)
    assert f"{__name__}.Alpha" in str(info.value)
    assert "Impostor" in str(info.value)


def test_a_builtin_name_cannot_be_registered_over() -> None:
    reg = _registry(builtins={"gamma": f"{MODULE}:Gamma"})
    with pytest.raises(ConfigError, match=f"taken by the built-in '{MODULE}:Gamma'"):
        reg.register(Alpha, name="gamma")


def test_unregister_forgets_a_registration() -> None:
    reg = _registry()
    reg.register(Alpha)
    reg.unregister("alpha")
    assert reg.names() == []


# -- lazy built-ins ---------------------------------------------------------------------------


def test_a_builtin_is_imported_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    real_import = importlib.import_module

    def spy(name: str, package: str | None = None) -> types.ModuleType:
        imported.append(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", spy)
    module = types.ModuleType("assay_lazy_builtin")

    class Lazy(Plugin):
        name: ClassVar[str] = "lazy"

    module.__dict__["Lazy"] = Lazy
    monkeypatch.setitem(sys.modules, module.__name__, module)
    reg = _registry(builtins={"lazy": "assay_lazy_builtin:Lazy"})
    assert reg.names() == ["lazy"] and "lazy" in reg
    assert imported == []
    assert reg.get("lazy") is Lazy
    assert reg.get("lazy") is Lazy
    assert imported == ["assay_lazy_builtin"]  # once


def test_a_builtin_is_type_checked(fake_module: types.ModuleType) -> None:
    reg = _registry(builtins={"odd": f"{MODULE}:NotAPlugin"})
    with pytest.raises(ConfigError, match=f"plugin 'odd': built-in '{MODULE}:NotAPlugin' is not"):
        reg.get("odd")


# -- lookup messages --------------------------------------------------------------------------


def test_unknown_names_get_a_did_you_mean_and_the_known_names() -> None:
    reg = _registry()
    reg.register(Alpha)
    reg.register(Beta)
    with pytest.raises(ConfigError) as info:
        reg.get("alpah")
    assert str(info.value) == "unknown plugin 'alpah'; did you mean 'alpha'? (known: alpha, beta)"
    with pytest.raises(ConfigError) as info:
        reg.get("zzz")
    assert str(info.value) == "unknown plugin 'zzz' (known: alpha, beta)"


# -- entry points -----------------------------------------------------------------------------


def test_entry_points_are_listed_without_loading_and_read_once(
    entry_points: list[str], fake_module: types.ModuleType
) -> None:
    reg = _registry()
    reg.register(Alpha)
    assert entry_points == []  # nothing read before the first lookup
    assert reg.names() == ["alpha", "bogus", "gamma", "missing"]
    assert reg.names() == ["alpha", "bogus", "gamma", "missing"]
    assert entry_points == [GROUP]
    assert reg.get("gamma") is fake_module.Gamma
    assert reg.get("alpha") is Alpha  # the code registration wins over the entry point
    assert entry_points == [GROUP]
    reg.refresh()
    reg.names()
    assert entry_points == [GROUP, GROUP]


def test_entry_points_are_type_checked(entry_points: list[str]) -> None:
    reg = _registry()
    with pytest.raises(ConfigError, match=f"plugin 'bogus': entry point '{MODULE}:NotAPlugin'"):
        reg.get("bogus")
    with pytest.raises(ConfigError, match="plugin 'missing': cannot load entry point"):
        reg.get("missing")


def test_a_registry_without_a_group_reads_no_entry_points(entry_points: list[str]) -> None:
    reg: Registry[object] = Registry("thing")
    assert reg.names() == []
    assert entry_points == []
