"""Attack keys and the attack registry: built-ins by decorator, third-party ones by entry point.

Built-in attacks register with :func:`register_attack`. Installed packages add attacks through
the ``assay.attacks`` entry-point group: the entry point's name is the attack key and its value an
:class:`~assay.engine.attacks.base.Attack` subclass or a factory (a callable without arguments)
returning an attack. Entry points are loaded only when their attack is asked for, so listing the
keys (:func:`known_attacks`, :func:`list_attacks`) imports nothing.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..errors import ConfigError
from ..registry import Registry
from .base import Attack

ENTRY_POINT_GROUP = "assay.attacks"
"""The entry-point group third-party attacks register in."""

SEVAL_ATTACKS: tuple[str, ...] = (
    "positive_induction",
    "reverse_induction",
    "code_injection",
    "instruction_jailbreak",
    "goal_hijacking",
    "instruction_encryption",
    "deepinception",
    "in_context_attack",
    "chain_of_utterances",
    "compositional_instructions",
)
"""S-Eval's 10 attacks, by the keys used in its data, in its order."""

AttackFactory = Callable[[], Attack]
"""What the registry holds: a callable that builds an attack (usually its class)."""

A = TypeVar("A", bound=type[Attack])


def normalize_attack(value: str) -> str:
    """An attack key in canonical form: 'Goal Hijacking' -> 'goal_hijacking'."""
    return "_".join(value.strip().lower().replace("-", " ").split())


def _is_factory(obj: object) -> bool:
    # a class must be an Attack; any other callable is a factory, checked when it is called
    return issubclass(obj, Attack) if isinstance(obj, type) else callable(obj)


ATTACKS: Registry[AttackFactory] = Registry(
    "attack",
    ENTRY_POINT_GROUP,
    check=_is_factory,
    expected="an Attack class or factory",
    normalize=normalize_attack,
)
"""Attack factories by key: the built-ins (registered on import) and ``assay.attacks``."""


def register_attack(cls: A) -> A:
    """Class decorator: registers an attack under its ``name``.

    Raises:
        ConfigError: The class has no name, the name is not in canonical form, or another class
            holds it.
    """
    name = getattr(cls, "name", "")
    if name and name != normalize_attack(name):
        raise ConfigError(f"attack name {name!r} is not canonical ({normalize_attack(name)!r})")
    ATTACKS.register(cls)
    known_attacks.cache_clear()
    return cls


def refresh_plugins() -> None:
    """Forgets the entry points seen so far (after installing a package in a running process)."""
    ATTACKS.refresh()
    known_attacks.cache_clear()


@functools.cache
def known_attacks() -> frozenset[str]:
    """The S-Eval attacks plus those registered in code or by installed packages."""
    return frozenset(SEVAL_ATTACKS) | frozenset(ATTACKS.names())


def list_attacks() -> list[str]:
    """All attack keys: S-Eval's 10 in their order, then the others sorted."""
    others = sorted(known_attacks() - frozenset(SEVAL_ATTACKS))
    return [*SEVAL_ATTACKS, *others]


def get_attack(name: str) -> Attack:
    """Builds the attack registered under ``name`` (any spelling :func:`normalize_attack` takes).

    Raises:
        ConfigError: The name is unknown (the message lists the known ones), or its entry point
            does not give an attack of that name.
    """
    key = normalize_attack(name)
    if key not in known_attacks():
        raise ConfigError(_unknown(name))
    factory = ATTACKS.get(key)
    attack = factory()
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack {key!r}: {_describe(factory)} did not return an Attack")
    if attack.name != key:
        raise ConfigError(
            f"attack {key!r}: {_describe(factory)} builds an attack named {attack.name!r}"
        )
    return attack


def resolve_attacks(spec: str | Sequence[str]) -> list[Attack]:
    """The attacks named by ``spec``: ``"all"`` (S-Eval's 10, in order), a comma-separated list
    of keys, or a sequence of keys; repeats are dropped, the order kept.

    ``"all"`` means S-Eval's 10 only, so installing a package never changes what it derives;
    third-party attacks are named explicitly (``"all,my_attack"`` adds one).

    Raises:
        ConfigError: No attack is named, or a name is unknown (the message lists the known ones).
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    keys: list[str] = []
    for part in parts:
        key = normalize_attack(part)
        if not key:
            continue
        keys.extend(SEVAL_ATTACKS if key == "all" else (key,))
    keys = list(dict.fromkeys(keys))
    if not keys:
        raise ConfigError(f"no attack named in {spec!r} (known: all, {', '.join(list_attacks())})")
    return [get_attack(key) for key in keys]


def _unknown(name: str) -> str:
    known = list_attacks()
    message = f"unknown attack {name!r}"
    close = difflib.get_close_matches(normalize_attack(name), known, n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return f"{message} (known: {', '.join(known)})"


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{qualname}" if module else str(qualname)
