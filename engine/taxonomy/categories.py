"""Flat category taxonomies (guard-model codes, dataset labels) and their S-Eval L1 mapping."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ._text import close_match, normalize
from .dimensions import EXTENDED_L1
from .errors import UnknownRiskError

LABEL = "label"
"""The ``group`` of a category that is a verdict label (Safe, None, Needs Caution), not a risk."""


class Category(BaseModel):
    """One category of a flat taxonomy, with the S-Eval L1 dimensions it maps to."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    code: str = Field(min_length=1)
    """Short identifier as the source emits it: ``O1``, ``S14``, ``hate_identity_hate``."""

    name: str = Field(min_length=1)
    """Display name, spelt exactly as the source (model output or dataset label) spells it."""

    name_zh: str | None = None
    """Chinese display name, where one exists."""

    description: str = ""
    """One-line description of what the category covers."""

    seval_l1: tuple[str, ...] = ()
    """S-Eval L1 keys the category counts under, primary first; empty for verdict labels. The
    ninth dimension ``Risks_Involving_Minors`` (:data:`~.dimensions.MINORS_L1`) is accepted too,
    for taxonomies that have it (``xguard``)."""

    group: str = ""
    """Sub-list the category belongs to: ``critical``, ``sparse``, ``label`` or empty."""

    aliases: tuple[str, ...] = ()
    """Other spellings the source uses for the same category (accepted by lookups)."""

    @field_validator("seval_l1")
    @classmethod
    def _check_seval_l1(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [key for key in keys if key not in EXTENDED_L1]
        if unknown:
            raise ValueError(f"not S-Eval L1 keys: {unknown} (known: {', '.join(EXTENDED_L1)})")
        if len(set(keys)) != len(keys):
            raise ValueError(f"repeated S-Eval L1 key in {keys}")
        return keys

    @property
    def is_label(self) -> bool:
        """Whether the category is a verdict label rather than a risk."""
        return self.group == LABEL


class Taxonomy(BaseModel):
    """A named, flat list of categories with lookups by code, name or alias."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1)
    """The taxonomy's name, as :func:`get_taxonomy` knows it."""

    description: str = ""
    """Where the taxonomy comes from and what uses it."""

    categories: tuple[Category, ...]
    """The categories, in the source's order."""

    _index: dict[str, Category] = PrivateAttr(default_factory=dict)
    _labels: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _build_index(self) -> Taxonomy:
        index: dict[str, Category] = {}
        labels: dict[str, str] = {}
        for category in self.categories:
            for label in (category.code, category.name, *category.aliases):
                norm = normalize(label)
                other = index.setdefault(norm, category)
                if other is not category:
                    raise ValueError(
                        f"taxonomy {self.name!r}: {label!r} of {category.code!r} clashes with "
                        f"{other.code!r}"
                    )
                labels.setdefault(norm, label)
        self._index = index
        self._labels = labels
        return self

    def find(self, code_or_name: str) -> Category | None:
        """Returns the category with this code, name or alias, or None.

        Case, spacing, punctuation and the word "and" are ignored, so ``Guns and Illegal
        Weapons`` finds ``Guns/Illegal Weapons``.
        """
        return self._index.get(normalize(code_or_name))

    def get(self, code_or_name: str) -> Category:
        """Returns the category with this code, name or alias (see :meth:`find`).

        Raises:
            UnknownRiskError: No category matches; the message suggests a close one.
        """
        category = self.find(code_or_name)
        if category is None:
            message = f"unknown category {code_or_name!r} in taxonomy {self.name!r}"
            suggestion = close_match(code_or_name, self._labels)
            if suggestion is not None:
                close = self._index[normalize(suggestion)]
                message += f"; did you mean {close.name!r} (code {close.code!r})?"
            codes = ", ".join(self.codes())
            raise UnknownRiskError(f"{message} (codes: {codes})")
        return category

    def codes(self) -> list[str]:
        """Returns the category codes in order."""
        return [category.code for category in self.categories]

    def risks(self) -> list[Category]:
        """Returns the categories that are risks, leaving out verdict labels."""
        return [category for category in self.categories if not category.is_label]

    def to_seval_l1(self, code_or_name: str) -> tuple[str, ...]:
        """Returns the S-Eval L1 keys a category maps to (see :meth:`get`)."""
        return self.get(code_or_name).seval_l1

    def __len__(self) -> int:
        """Returns the number of categories, labels included."""
        return len(self.categories)

    def __contains__(self, code_or_name: object) -> bool:
        """Tells whether a code, name or alias names a category."""
        return isinstance(code_or_name, str) and self.find(code_or_name) is not None
