"""YAML from users, loaded with limits that are checked before anything is expanded.

Every YAML document assay reads from a user (run configs, ``--set`` values, selection plans,
taxonomy files, ``--step`` values) goes through :func:`load_yaml`. PyYAML's ``safe_load`` already
refuses arbitrary objects, but not an *alias bomb*: nine levels of anchors, each a list of nine
aliases of the one before, fit in 600 bytes and load in milliseconds, because an alias is the
same Python object as its anchor. Whatever walks the result as a tree then meets 9**9 (387
million) leaves; pydantic-core's serializer (``model_dump`` in ``RunConfig.result_fields``, which
names the run) grew to 3.7 GB and died in a pyo3 panic, "PyObject pointer is null", when an
allocation failed.

The loader here counts while composing: the bytes of the document, the alias events, the nodes
the aliases stand for once expanded (an alias of a node of N nodes counts N), and the nesting
depth. Past a limit it raises :class:`YamlLimitError`, naming the source and the limit, before a
single Python object is built. Legitimate files with a few anchors (one ``sampling`` block shared
by several targets) are far below every limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from .errors import ConfigError
from .io import Location

__all__ = ["YamlLimitError", "YamlLimits", "load_yaml", "read_yaml_bytes"]


@dataclass(frozen=True)
class YamlLimits:
    """Upper bounds on one YAML document from a user."""

    max_bytes: int = 4 << 20
    """Size of the document in bytes (UTF-8)."""
    max_aliases: int = 1_000
    """Alias events (``*name``) in the document."""
    max_alias_nodes: int = 100_000
    """Nodes that the aliases stand for, counted as if every alias were replaced by a copy."""
    max_depth: int = 100
    """Nesting of sequences and mappings."""


DEFAULT_LIMITS = YamlLimits()


class YamlLimitError(ConfigError):
    """A YAML document is over one of the :class:`YamlLimits`; nothing of it was loaded."""


class _LimitExceeded(Exception):
    """Raised inside the composer; :func:`load_yaml` turns it into a :class:`YamlLimitError`."""


class _CountingComposer(Composer):
    """PyYAML's composer, keeping count of aliases, their expansion and the nesting depth.

    Each composed node's *size* (1 for a scalar, 1 plus its children's sizes for a collection,
    an alias counting the full size of its anchor's node) is kept by node identity while the
    document is composed. Composition shares an alias's node, so it stays cheap however large
    the expansion would be; the counts stop it long before the constructor or anything after it
    could walk the expanded tree.
    """

    limits: YamlLimits = DEFAULT_LIMITS

    def _start_counting(self) -> None:
        self._sizes: dict[int, int] = {}
        self._aliases = 0
        self._alias_nodes = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Composes one node as PyYAML does, counting it first."""
        limits = self.limits
        parser: Any = self  # the parser half of the loader (PyYAML's or libyaml's)
        if parser.check_event(AliasEvent):
            event = parser.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:  # an unknown anchor: PyYAML's own error below
                self._aliases += 1
                if self._aliases > limits.max_aliases:
                    raise _LimitExceeded(
                        f"more than {limits.max_aliases:,} aliases (the limit of aliases)"
                    )
                size = self._sizes.get(id(target))
                if size is None:
                    raise _LimitExceeded(f"alias *{event.anchor} refers to a node that holds it")
                self._alias_nodes += size
                if self._alias_nodes > limits.max_alias_nodes:
                    raise _LimitExceeded(
                        f"{self._aliases:,} aliases expand to more than "
                        f"{limits.max_alias_nodes:,} nodes (the limit of nodes behind aliases); "
                        "this looks like an alias bomb"
                    )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > limits.max_depth:
            raise _LimitExceeded(f"nested deeper than {limits.max_depth:,} levels")
        node = super().compose_node(parent, index)
        self._depth -= 1
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        self._sizes[id(node)] = size
        return node


class _PyLoader(_CountingComposer, yaml.SafeLoader):
    """The pure-Python safe loader with the counting composer."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._start_counting()


_Loader: type[_CountingComposer] = _PyLoader
try:
    from yaml._yaml import CParser as _CParser

    class _CLoader(_CountingComposer, _CParser, SafeConstructor, Resolver):
        """libyaml's event parser (fast) under the counting composer."""

        def __init__(self, stream: str | bytes) -> None:
            _CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_counting()

    _Loader = _CLoader
except ImportError:  # PyYAML without libyaml
    pass


def read_yaml_bytes(
    loc: Location, source: str, limits: YamlLimits | None = None, *, what: str = ""
) -> bytes:
    """The bytes of a YAML file, read no further than one byte past ``limits.max_bytes``.

    Raises:
        YamlLimitError: The file is larger than the limit (it is not read to the end).
        FileNotFoundError: There is no such file (callers word this themselves).
    """
    limits = limits or DEFAULT_LIMITS
    with loc.open("rb") as f:
        data: bytes = f.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        name = f"{what} {source}".strip()
        raise YamlLimitError(
            f"{name} is over the limit of {limits.max_bytes:,} bytes of YAML; is it the right file?"
        )
    return data


def load_yaml(
    data: str | bytes, source: str, limits: YamlLimits | None = None, *, what: str = ""
) -> Any:
    """Parses one YAML document from a user, refusing it when it is over ``limits``.

    Args:
        data: The document.
        source: Where it came from (a file URL, ``--set KEY``), named in every error.
        limits: The bounds (default: :data:`DEFAULT_LIMITS`).
        what: Words put before ``source`` in messages, e.g. ``"taxonomy file"``.

    Raises:
        YamlLimitError: The document is over a limit; the message names the source and the
            limit. Nothing was constructed.
        yaml.YAMLError: The document is not valid YAML (callers word this themselves).
    """
    limits = limits or DEFAULT_LIMITS
    name = f"{what} {source}".strip()
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > limits.max_bytes:
        raise YamlLimitError(
            f"{name} is {size:,} bytes of YAML, over the limit of {limits.max_bytes:,} bytes"
        )
    loader: Any = _Loader(data)  # type: ignore[call-arg]
    loader.limits = limits
    try:
        return loader.get_single_data()
    except _LimitExceeded as exc:
        raise YamlLimitError(f"{name} was refused before loading: {exc}") from None
    except RecursionError:
        raise YamlLimitError(f"{name} was refused: nested too deeply to load") from None
    finally:
        loader.dispose()
