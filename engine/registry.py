"""One generic registry of named plugins: built-ins, in-code registrations and entry points.

A :class:`Registry` maps names to objects (judge format classes, backend factories, ...). Names
come from three places:

- lazy built-ins, given as ``"module:attribute"`` strings and imported only when their name is
  first asked for (a backend's torch or vllm import happens only when that backend is built);
- :meth:`Registry.register`, as a class decorator (the name read from an attribute, ``name`` by
  default) or as a call with an explicit name;
- installed packages, through an entry-point group; the group is read once, on first use, and an
  entry point is loaded only when its name is asked for.

A name is held once: registering another object under a taken name is a
:class:`~assay.engine.errors.ConfigError` naming both holders (registering the same object again
is a no-op). An entry point whose name is already taken is ignored with a warning, so installing a
package never replaces a built-in.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar, cast, overload

from .errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, from built-ins, registrations and an entry-point group."""

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        *,
        builtins: Mapping[str, str] | None = None,
        name_attr: str = "name",
        check: Callable[[object], bool] | None = None,
        expected: str = "",
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        """Creates an empty registry.

        Args:
            kind: What the registry holds, for messages ("judge", "backend").
            group: The entry-point group installed packages add to; None for none.
            builtins: Name -> ``"module:attribute"`` of built-ins, imported on first use.
            name_attr: The attribute :meth:`register` reads a name from when none is given.
            check: Checks what a built-in or an entry point yields (objects registered in code
                are checked by the type checker); a False result is a ConfigError.
            expected: What ``check`` accepts, for its message ("a JudgeFormat subclass").
            normalize: Maps a spelling to its key ("Goal Hijacking" -> "goal_hijacking"), on
                registration, lookup and entry-point names; default: names are kept as given.
        """
        self.kind = kind
        self.group = group
        self._builtins: dict[str, str] = dict(builtins or {})
        self._name_attr = name_attr
        self._check = check
        self._expected = expected or f"a valid {kind}"
        self._normalize: Callable[[str], str] = normalize or _same
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}  # built-ins and entry points imported so far
        self._entry_points: dict[str, importlib.metadata.EntryPoint] | None = None

    # -- registration ----------------------------------------------------------------------------

    @overload
    def register(self, obj: T, /, *, name: str | None = None) -> T: ...

    @overload
    def register(self, obj: None = None, /, *, name: str | None = None) -> Callable[[T], T]: ...

    def register(self, obj: T | None = None, /, *, name: str | None = None) -> T | Callable[[T], T]:
        """Registers ``obj`` under ``name`` (default: its ``name_attr`` attribute).

        Used bare as a class decorator (``@registry.register``), with a name
        (``@registry.register(name="x")``), or called (``registry.register(factory, name="x")``).

        Raises:
            ConfigError: No name is given and the object has none, or another object holds it.
        """
        if obj is None:

            def decorator(target: T) -> T:
                return self.register(target, name=name)

            return decorator
        key = name if name is not None else getattr(obj, self._name_attr, "")
        if not key or not isinstance(key, str):
            raise ConfigError(f"{_describe(obj)} has no {self.kind} name")
        key = self._normalize(key)
        holder = self._holder(key)
        if holder is not None and holder is not obj:
            where = f"the built-in {holder!r}" if isinstance(holder, str) else _describe(holder)
            raise ConfigError(
                f"{self.kind} name {key!r} is taken by {where}; cannot register {_describe(obj)}"
            )
        self._registered[key] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Forgets an object registered in code (tests, plugins being reloaded)."""
        self._registered.pop(self._normalize(name), None)

    def refresh(self) -> None:
        """Forgets the entry points read so far (after installing a package in a process)."""
        self._entry_points = None
        for name in list(self._loaded):
            if name not in self._builtins:
                del self._loaded[name]

    # -- lookup ----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """All names: built-ins, registered and from entry points, sorted."""
        return sorted(set(self._builtins) | set(self._registered) | set(self._plugins()))

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is known (nothing is imported)."""
        return isinstance(name, str) and self._normalize(name) in self.names()

    def get(self, name: str) -> T:
        """The object registered under ``name``, importing a built-in or entry point on first use.

        Raises:
            ConfigError: The name is unknown (with a did-you-mean and the known names), or a
                built-in or entry point cannot be loaded or fails the check.
        """
        key = self._normalize(name)
        if key not in self._registered and key not in self._loaded:
            if key in self._builtins:
                self._loaded[key] = self._import_builtin(key, self._builtins[key])
            else:
                ep = self._plugins().get(key)
                if ep is None:
                    raise ConfigError(self.unknown_message(name))
                self._loaded[key] = self._load_entry_point(key, ep)
        return self._registered[key] if key in self._registered else self._loaded[key]

    def unknown_message(self, name: str) -> str:
        """``unknown <kind> 'x'; did you mean 'y'? (known: ...)``."""
        known = self.names()
        message = f"unknown {self.kind} {name!r}"
        close = difflib.get_close_matches(self._normalize(name).lower(), known, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return f"{message} (known: {', '.join(known)})"

    # -- internals -------------------------------------------------------------------------------

    def _holder(self, name: str) -> object | None:
        """What holds ``name`` now: an object, or a built-in's target string."""
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        return self._builtins.get(name)

    def _plugins(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self._entry_points is None:
            found: dict[str, importlib.metadata.EntryPoint] = {}
            if self.group is not None:
                for ep in importlib.metadata.entry_points(group=self.group):
                    key = self._normalize(ep.name)
                    if key in self._builtins or key in self._registered:
                        logger.warning(
                            "ignoring entry point %r of %s: %s name %r is taken",
                            ep.value,
                            self.group,
                            self.kind,
                            ep.name,
                        )
                        continue
                    found.setdefault(key, ep)
            self._entry_points = found
        return self._entry_points

    def _import_builtin(self, name: str, target: str) -> T:
        module, _, attr = target.partition(":")
        # a built-in that fails to import is a bug or a missing extra: let its error through
        obj: object = getattr(importlib.import_module(module), attr)
        return self._checked(name, obj, f"built-in {target!r}")

    def _load_entry_point(self, name: str, ep: importlib.metadata.EntryPoint) -> T:
        try:
            obj: object = ep.load()
        except Exception as exc:  # a broken plugin: say which one
            raise ConfigError(
                f"{self.kind} {name!r}: cannot load entry point {ep.value!r}: {exc}"
            ) from exc
        return self._checked(name, obj, f"entry point {ep.value!r}")

    def _checked(self, name: str, obj: object, source: str) -> T:
        if self._check is not None and not self._check(obj):
            raise ConfigError(f"{self.kind} {name!r}: {source} is not {self._expected}")
        return cast(T, obj)  # checked above where a check is given


def _same(name: str) -> str:
    return name


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{qualname}" if module else str(qualname)
