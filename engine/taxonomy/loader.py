"""User risk trees: the built-in S-Eval L1/L2 plus the user's own L3/L4 from a YAML file.

S-Eval does not publish its L3 and L4 names, so a user who wants finer reporting writes them::

    name: my-taxonomy
    extends: s-eval
    nodes:
      - parent: Crimes_and_Illegal_Activities/Drug_Crimes
        key: Drug_Manufacturing
        name: Drug manufacturing
        name_zh: 制毒
        children:
          - {key: Precursor_Chemicals, name: Precursor chemicals, name_zh: 易制毒化学品}

Each top-level entry names an existing ``parent`` (anything :meth:`RiskTree.resolve` accepts,
including nodes added by earlier entries); nested ``children`` sit one level lower. An entry may
add an L2 under an S-Eval dimension, never a new L1: the eight dimensions are the common
reporting axis. The format is documented in ``docs/taxonomies.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import StorageError
from ..io import Location
from ..yamlsafe import YamlLimitError, load_yaml, read_yaml_bytes
from ._text import normalize
from .dimensions import SEVAL_L1
from .errors import TaxonomyFileError, UnknownRiskError
from .seval import seval_tree
from .tree import MAX_LEVEL, RiskNode, RiskTree, check_key

_BUILT_IN = "the built-in S-Eval tree"


class RiskNodeSpec(BaseModel):
    """A node of a taxonomy file, below an entry (its parent is where it is nested)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    key: str
    """Key unique among the node's siblings: letters, digits and underscores."""

    name: str
    """English display name."""

    name_zh: str = ""
    """Chinese display name (optional)."""

    description: str = ""
    """One-line description (optional)."""

    children: tuple[RiskNodeSpec, ...] = ()
    """Nodes one level lower."""

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str) -> str:
        return check_key(key)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("name must not be empty")
        return name.strip()


class RiskEntrySpec(RiskNodeSpec):
    """A top-level entry of a taxonomy file: a node attached to an existing ``parent``."""

    parent: str | None = None
    """Path or name of an existing node: an S-Eval dimension, category or an earlier entry."""


class RiskTreeFile(BaseModel):
    """The schema of a taxonomy file."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1)
    """The tree's name, recorded with results."""

    description: str = ""
    """What the tree is for."""

    extends: Literal["s-eval"] = "s-eval"
    """The built-in tree the file extends; only ``s-eval`` exists."""

    nodes: tuple[RiskEntrySpec, ...] = ()
    """The nodes to add, processed in order."""


def load_risk_tree(
    url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> RiskTree:
    """Loads the built-in S-Eval tree extended by the L2-L4 nodes of a YAML taxonomy file.

    Args:
        url: Any fsspec URL (``s3://bucket/tax.yaml``, ``memory://tax.yaml``) or a local path.
        storage_options: Passed to the fsspec filesystem (credentials, endpoint, ...).

    Returns:
        The extended tree, named after the file's ``name``.

    Raises:
        TaxonomyFileError: The file cannot be read, is not YAML, or breaks the format; the
            message names the file and the offending entry.
    """
    source = os.fspath(url)
    try:
        loc = Location.parse(source, dict(storage_options or {}))
        text = read_yaml_bytes(loc, repr(source), what="taxonomy file").decode("utf-8")
    except YamlLimitError as exc:
        raise TaxonomyFileError(str(exc)) from None
    except (OSError, ValueError, StorageError) as exc:
        raise TaxonomyFileError(f"cannot read taxonomy file {source!r}: {exc}") from exc
    return risk_tree_from_yaml(text, source=source)


def risk_tree_from_yaml(text: str, source: str = "<string>") -> RiskTree:
    """Builds an extended risk tree from the YAML text of a taxonomy file.

    Args:
        text: The file's content.
        source: Where the text came from, for error messages.

    Raises:
        TaxonomyFileError: See :func:`load_risk_tree`.
    """
    try:
        data = load_yaml(text, repr(source), what="taxonomy file")
    except YamlLimitError as exc:
        raise TaxonomyFileError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise TaxonomyFileError(f"taxonomy file {source!r} is not valid YAML: {exc}") from exc
    return risk_tree_from_dict(data, source=source)


def risk_tree_from_dict(data: object, source: str = "<dict>") -> RiskTree:
    """Builds an extended risk tree from the parsed content of a taxonomy file.

    Args:
        data: The parsed file: a mapping with ``name`` and ``nodes``.
        source: Where the data came from, for error messages.

    Raises:
        TaxonomyFileError: See :func:`load_risk_tree`.
    """
    if not isinstance(data, Mapping):
        raise TaxonomyFileError(
            f"taxonomy file {source!r} must hold a mapping with 'name' and 'nodes', "
            f"not {type(data).__name__}"
        )
    try:
        spec = RiskTreeFile.model_validate(data)
    except ValidationError as exc:
        raise TaxonomyFileError(_describe(exc, data, source)) from None
    return _Builder(spec, source).build()


class _Builder:
    """Adds a file's entries to the built-in tree, checking each against what exists so far."""

    def __init__(self, spec: RiskTreeFile, source: str) -> None:
        self._spec = spec
        self._prefix = f"taxonomy file {source!r}"
        base = seval_tree()
        self._nodes = list(base.nodes)
        self._tree = self._rebuild()
        # parent path -> normalised key or name of a child -> who defined that child
        self._taken: dict[str, dict[str, str]] = {}
        for node in base.nodes:
            if node.parent is not None:
                self._claim(node, node.parent, _BUILT_IN)

    def build(self) -> RiskTree:
        for index, entry in enumerate(self._spec.nodes):
            loc = f"nodes[{index}]"
            self._add(entry, self._parent_of(entry, _where(loc, entry)), loc)
            self._tree = self._rebuild()  # later entries may name this one as their parent
        return self._tree

    def _rebuild(self) -> RiskTree:
        return RiskTree(self._nodes, name=self._spec.name, description=self._spec.description)

    def _parent_of(self, entry: RiskEntrySpec, where: str) -> RiskNode:
        if entry.parent is None or not entry.parent.strip():
            raise TaxonomyFileError(
                f"{self._prefix}: {where} has no 'parent': a taxonomy file cannot add L1 "
                "dimensions (S-Eval's 8 dimensions are the common reporting axis); attach it "
                f"under one of {', '.join(SEVAL_L1)} or a node below one"
            )
        try:
            return self._tree.node(entry.parent)
        except UnknownRiskError as exc:
            raise TaxonomyFileError(
                f"{self._prefix}: {where}: unknown parent {entry.parent!r}: {exc}"
            ) from None

    def _add(self, spec: RiskNodeSpec, parent: RiskNode, loc: str) -> None:
        where = _where(loc, spec)
        level = parent.level + 1
        if level > MAX_LEVEL:
            raise TaxonomyFileError(
                f"{self._prefix}: {where} would sit at level {level} under {parent.path!r}; "
                f"risk trees have at most {MAX_LEVEL} levels (S-Eval's L1 to L4)"
            )
        taken = self._taken.get(parent.path, {})
        for field in ("key", "name", "name_zh"):
            owner = taken.get(normalize(getattr(spec, field)))
            if owner is not None:
                raise TaxonomyFileError(
                    f"{self._prefix}: {where}: duplicate {field} {getattr(spec, field)!r} "
                    f"under {parent.path!r} (already used by {owner})"
                )
        node = RiskNode(
            key=spec.key,
            name=spec.name,
            name_zh=spec.name_zh,
            path=f"{parent.path}/{spec.key}",
            level=level,
            description=spec.description,
        )
        self._nodes.append(node)
        self._claim(node, parent.path, where)
        for index, child in enumerate(spec.children):
            self._add(child, node, f"{loc}.children[{index}]")

    def _claim(self, node: RiskNode, parent: str, owner: str) -> None:
        taken = self._taken.setdefault(parent, {})
        for label in (node.key, node.name, node.name_zh):
            if normalize(label):
                taken.setdefault(normalize(label), owner)


def _where(loc: str, spec: RiskNodeSpec) -> str:
    return f"{loc} (key {spec.key!r})"


def _describe(exc: ValidationError, data: object, source: str) -> str:
    """Turns a pydantic error into one message naming the file, the entries and the fields."""
    problems: list[str] = []
    for error in exc.errors():
        loc = error["loc"]
        cut = max((i + 1 for i, part in enumerate(loc) if isinstance(part, int)), default=0)
        entry, field = loc[:cut], ".".join(str(part) for part in loc[cut:])
        where = _loc_text(entry) or "top level"
        key = _value_at(data, entry)
        if isinstance(key, Mapping) and isinstance(key.get("key"), str):
            where += f" (key {key['key']!r})"
        if error["type"] == "missing":
            problem = f"missing required field {field!r}"
        elif error["type"] == "extra_forbidden":
            allowed = _allowed_fields(entry)
            problem = f"unknown field {field!r} (allowed: {', '.join(allowed)})"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problem = f"{field}: {message}" if field else message
        problems.append(f"{where}: {problem}")
    shown = "; ".join(problems[:10])
    if len(problems) > 10:
        shown += f"; and {len(problems) - 10} more"
    return f"invalid taxonomy file {source!r}: {shown}"


def _loc_text(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _value_at(data: object, loc: Sequence[int | str]) -> object:
    for part in loc:
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            data = data[part]
            continue
        if not (isinstance(part, str) and isinstance(data, Mapping) and part in data):
            return None
        data = data[part]
    return data


def _allowed_fields(entry: Sequence[int | str]) -> list[str]:
    if not entry:
        model: type[BaseModel] = RiskTreeFile
    elif "children" in entry:
        model = RiskNodeSpec
    else:
        model = RiskEntrySpec
    return list(model.model_fields)
