"""The S-Eval-style risk tree: up to four levels under the eight S-Eval L1 dimensions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._text import close_match, normalize, split_path
from .dimensions import EXTENDED_L1
from .errors import UnknownRiskError

MAX_LEVEL = 4
"""The deepest level a risk tree may have (S-Eval's L4)."""

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
"""What a node key looks like: letters, digits and underscores, as in ``Drug_Crimes``."""


def check_key(key: str) -> str:
    """A node key: letters, digits and underscores only."""
    if not KEY_PATTERN.match(key):
        raise ValueError(
            f"key {key!r} must use only letters, digits and underscores (like 'Drug_Manufacturing')"
        )
    return key


class RiskNode(BaseModel):
    """One node of a risk tree, addressed by its canonical path."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    key: str
    """The node's key, unique among its siblings (``Drug_Crimes``)."""

    name: str = Field(min_length=1)
    """English display name (``Drug Crimes``)."""

    name_zh: str = ""
    """Chinese display name (``毒品犯罪``); empty when a user node gives none."""

    path: str
    """Canonical path: the keys from L1 down to this node joined by ``/``."""

    level: int = Field(ge=1, le=MAX_LEVEL)
    """Depth in the tree: 1 for an S-Eval dimension, 2 for an S-Eval category, 3 and 4 below."""

    description: str = ""
    """One-line description of what the node covers."""

    published_count: int | None = Field(default=None, ge=0)
    """Base prompts per language in the released S-Eval data; None where S-Eval publishes none."""

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str) -> str:
        return check_key(key)

    @model_validator(mode="after")
    def _check_path(self) -> RiskNode:
        segments = self.path.split("/")
        if len(segments) != self.level or segments[-1] != self.key:
            raise ValueError(
                f"path {self.path!r} does not end in key {self.key!r} at level {self.level}"
            )
        return self

    @property
    def parent(self) -> str | None:
        """The parent's path, or None for an L1 node."""
        head, _, _ = self.path.rpartition("/")
        return head or None

    @property
    def l1(self) -> str:
        """The key of the L1 dimension this node belongs to."""
        return self.path.split("/", 1)[0]


class RiskTree:
    """An immutable risk tree whose L1 nodes are S-Eval dimensions.

    Nodes are kept in pre-order: L1 nodes in :data:`EXTENDED_L1` order (S-Eval's eight, then
    XGuard's ninth where a tree has it), children in the order given. Every lookup method
    accepts anything :meth:`resolve` accepts.

    Args:
        nodes: The nodes, in any order; every non-L1 node's parent must be among them.
        name: The tree's name (``s-eval`` for the built-in tree, a user file's ``name``).
        description: What the tree is for.

    Raises:
        ValueError: A node repeats a path, lacks its parent, has an L1 that is not an S-Eval
            dimension, or shares a key or name with a sibling.
    """

    def __init__(
        self, nodes: Iterable[RiskNode], *, name: str = "s-eval", description: str = ""
    ) -> None:
        """Builds the tree and its lookup indexes; see the class docstring."""
        self._name = name
        self._description = description
        given: dict[str, RiskNode] = {}
        for node in nodes:
            if node.path in given:
                raise ValueError(f"risk tree {name!r}: duplicate path {node.path!r}")
            given[node.path] = node
        children: dict[str | None, list[RiskNode]] = {}
        for node in given.values():
            if node.level == 1 and node.key not in EXTENDED_L1:
                raise ValueError(
                    f"risk tree {name!r}: {node.key!r} is not an S-Eval L1 dimension "
                    f"({', '.join(EXTENDED_L1)})"
                )
            if node.parent is not None and node.parent not in given:
                raise ValueError(f"risk tree {name!r}: {node.path!r} has no parent node")
            children.setdefault(node.parent, []).append(node)
        children.get(None, []).sort(key=lambda n: EXTENDED_L1.index(n.key))
        for siblings in children.values():
            _check_siblings(name, siblings)

        self._children: dict[str | None, tuple[RiskNode, ...]] = {
            parent: tuple(kids) for parent, kids in children.items()
        }
        self._nodes: dict[str, RiskNode] = {}
        self._walk(None)
        # normalised key/name -> paths carrying it, and -> a label to suggest on a near miss
        self._index: dict[str, list[str]] = {}
        self._labels: dict[str, str] = {}
        for node in self._nodes.values():
            for label in _labels_of(node):
                paths = self._index.setdefault(normalize(label), [])
                if node.path not in paths:
                    paths.append(node.path)
                self._labels.setdefault(normalize(label), label)

    def _walk(self, parent: str | None) -> None:
        for node in self._children.get(parent, ()):
            self._nodes[node.path] = node
            self._walk(node.path)

    @property
    def name(self) -> str:
        """The tree's name."""
        return self._name

    @property
    def description(self) -> str:
        """What the tree is for."""
        return self._description

    @property
    def nodes(self) -> tuple[RiskNode, ...]:
        """All nodes in pre-order."""
        return tuple(self._nodes.values())

    @property
    def depth(self) -> int:
        """The deepest level present (2 for the built-in S-Eval tree)."""
        return max((node.level for node in self._nodes.values()), default=0)

    def __len__(self) -> int:
        """Returns the number of nodes at all levels."""
        return len(self._nodes)

    def __iter__(self) -> Iterator[RiskNode]:
        """Iterates over the nodes in pre-order."""
        return iter(self._nodes.values())

    def __contains__(self, value: object) -> bool:
        """Tells whether ``value`` resolves to a node of this tree."""
        return isinstance(value, str) and self.try_resolve(value) is not None

    def __repr__(self) -> str:
        """Returns a short summary: name, node count and depth."""
        return f"RiskTree(name={self._name!r}, nodes={len(self)}, depth={self.depth})"

    def resolve(self, value: str) -> str:
        """Normalises a user-given risk value to its canonical path.

        Accepted: the canonical path (``Crimes_and_Illegal_Activities/Drug_Crimes``); any key,
        English name or Chinese name, case-insensitively and with spaces, underscores and
        hyphens alike (``drug crimes``, ``毒品犯罪``); a path of such segments separated by
        ``/``, `` > `` or ``::``, whose first segment may be any node that is unique in the
        tree. A bare value that names an L1 dimension always means that dimension; any other
        bare value must be unique in the tree.

        Args:
            value: The user's value.

        Returns:
            The canonical path, e.g. ``Cybersecurity/Hacker_Attack``.

        Raises:
            UnknownRiskError: The value matches no node, or several.
        """
        if value in self._nodes:
            return value
        segments = split_path(value)
        if not segments:
            raise UnknownRiskError(f"empty risk value {value!r}")
        path = self._resolve_segment(value, segments[0])
        for segment in segments[1:]:
            path = self._resolve_child(value, path, segment)
        return path

    def try_resolve(self, value: str) -> str | None:
        """Like :meth:`resolve`, but returns None instead of raising."""
        try:
            return self.resolve(value)
        except UnknownRiskError:
            return None

    def node(self, path: str) -> RiskNode:
        """Returns the node that ``path`` (anything :meth:`resolve` accepts) names."""
        return self._nodes[self.resolve(path)]

    def l1(self, path: str) -> str:
        """Returns the L1 key above (or at) the node that ``path`` names."""
        return self.resolve(path).split("/", 1)[0]

    def ancestor(self, path: str, level: int) -> str:
        """Returns the path of the node's ancestor at ``level``, or its own when it is shallower.

        Useful to roll L3/L4 results up to L2 (``level=2``) or L1 (``level=1``).
        """
        if level < 1:
            raise ValueError(f"level must be at least 1, got {level}")
        return "/".join(self.resolve(path).split("/")[:level])

    def children(self, path: str | None = None) -> list[RiskNode]:
        """Returns the children of the node ``path`` names, or the L1 nodes when it is None."""
        parent = None if path is None else self.resolve(path)
        return list(self._children.get(parent, ()))

    def leaves(self, max_level: int | None = None) -> list[RiskNode]:
        """Returns the deepest nodes, in pre-order.

        Args:
            max_level: When given, the tree is cut at this level: the result holds the nodes at
                ``max_level`` plus the leaves above it.
        """
        if max_level is not None and max_level < 1:
            raise ValueError(f"max_level must be at least 1, got {max_level}")
        return [
            node
            for node in self._nodes.values()
            if (max_level is not None and node.level == max_level)
            or ((max_level is None or node.level < max_level) and not self._children.get(node.path))
        ]

    def _resolve_segment(self, value: str, segment: str) -> str:
        paths = self._index.get(normalize(segment), [])
        if not paths:
            raise UnknownRiskError(self._unknown_message(value, segment, self._labels))
        dimensions = [p for p in paths if "/" not in p]
        if dimensions:
            return dimensions[0]
        if len(paths) > 1:
            raise UnknownRiskError(
                f"risk {value!r} is ambiguous: {segment!r} matches "
                f"{', '.join(repr(p) for p in paths)}; give the full path"
            )
        return paths[0]

    def _resolve_child(self, value: str, parent: str, segment: str) -> str:
        wanted = normalize(segment)
        labels: dict[str, str] = {}
        for child in self._children.get(parent, ()):
            for label in _labels_of(child):
                if normalize(label) == wanted:
                    return child.path
                labels.setdefault(normalize(label), label)
        known = ", ".join(child.key for child in self._children.get(parent, ())) or "none"
        message = self._unknown_message(value, segment, labels)
        raise UnknownRiskError(f"{message} (no {segment!r} under {parent!r}; children: {known})")

    def _unknown_message(self, value: str, segment: str, labels: dict[str, str]) -> str:
        message = f"unknown risk {value!r} in risk tree {self._name!r}"
        suggestion = close_match(segment, labels)
        if suggestion is not None:
            paths = self._index.get(normalize(suggestion), [])
            where = f" ({paths[0]})" if len(paths) == 1 and paths[0] != suggestion else ""
            message += f"; did you mean {suggestion!r}{where}?"
        return message


def _labels_of(node: RiskNode) -> list[str]:
    return [label for label in (node.key, node.name, node.name_zh) if normalize(label)]


def _check_siblings(tree: str, siblings: list[RiskNode]) -> None:
    seen: dict[str, str] = {}
    for node in siblings:
        for label in {normalize(label) for label in _labels_of(node)}:
            other = seen.setdefault(label, node.path)
            if other != node.path:
                raise ValueError(
                    f"risk tree {tree!r}: {node.path!r} and {other!r} share the key or name "
                    f"{label!r}"
                )
