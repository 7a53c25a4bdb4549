"""Parsing helpers shared by the judge formats: label matching, category lists, languages."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from ..records import Label
from ..taxonomy import Category, get_taxonomy
from ..taxonomy._text import normalize

T = TypeVar("T")

# Characters stripped around a label: punctuation and markdown emphasis a model may add.
_LABEL_TRIM = " \t\r\n.。!！,，;；:：*_`'\"“”‘’()（）[]【】"
# Separators of a category list: comma, Chinese comma and enumeration comma, semicolon.
_LIST_SPLIT = re.compile(r"\s*[,，、;；]\s*")
# Category entries that mean "no category".
_NO_CATEGORY = frozenset({"", "none", "无", "没有", "na", "null", "nil"})


def dedupe(items: Iterable[T]) -> list[T]:
    """Returns the items without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def first_line(text: str) -> tuple[str, str]:
    """Splits ``text`` into its first line and the rest (without the newline)."""
    head, _sep, rest = text.partition("\n")
    return head.rstrip("\r"), rest


def short(text: str, limit: int = 60) -> str:
    """Returns ``text`` cut to ``limit`` characters, as a repr for error messages."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class LabelMatch(NamedTuple):
    """The result of reading a label slot: the label, or why there is none."""

    label: Label | None
    error: str | None


@functools.lru_cache(maxsize=64)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for word in sorted(words, key=len, reverse=True):
        if word.isascii():
            parts.append(r"(?<![A-Za-z])" + re.escape(word) + r"(?![A-Za-z])")
        else:
            parts.append(re.escape(word))
    return re.compile("|".join(parts), re.IGNORECASE)


def match_label(segment: str, vocab: Mapping[str, Label], what: str = "label") -> LabelMatch:
    """Reads a label slot that must hold exactly one label word.

    Args:
        segment: The slot's text, e.g. the rest of the line after ``[Answer]``.
        vocab: Accepted words (matched case-insensitively) and the label each means.
        what: How to call the slot in error messages.

    Returns:
        The label; or None and the reason: empty slot, a truncated label word, two different
        labels (contradictory), a label followed by other text, or no label at all.
    """
    text = segment.strip(_LABEL_TRIM)
    folded = {word.casefold(): label for word, label in vocab.items()}
    key = text.casefold()
    if key in folded:
        return LabelMatch(folded[key], None)
    if not text:
        return LabelMatch(None, f"no {what} (empty or truncated output)")
    found = dedupe(
        folded[m.group(0).casefold()] for m in _word_pattern(tuple(vocab)).finditer(text)
    )
    if len(found) > 1:
        return LabelMatch(None, f"contradictory {what}: {short(text)} names {' and '.join(found)}")
    if any(word.startswith(key) for word in folded):
        return LabelMatch(None, f"truncated {what}: {short(text)}")
    if found:
        return LabelMatch(None, f"unexpected text around the {what}: {short(text)}")
    expected = " | ".join(vocab)
    return LabelMatch(None, f"no valid {what}: {short(text)} (expected {expected})")


def strip_marker(text: str, markers: Iterable[str]) -> tuple[str, bool]:
    """Removes a leading answer marker, if the text repeats it.

    Args:
        text: Generated text, either the continuation of an assistant prefix or a full output.
        markers: Marker spellings (compared case-insensitively after leading whitespace).

    Returns:
        The text after the marker (or the whole text, left-stripped) and whether a marker was
        found.
    """
    body = text.lstrip()
    for marker in sorted(markers, key=len, reverse=True):
        if body[: len(marker)].casefold() == marker.casefold():
            return body[len(marker) :], True
    return body, False


def split_list(text: str) -> list[str]:
    """Splits a comma-separated category list into stripped entries (empty ones dropped)."""
    return [item.strip(_LABEL_TRIM) for item in _LIST_SPLIT.split(text.strip()) if item.strip()]


class CategoryMap(NamedTuple):
    """Categories a judge named, resolved against a taxonomy."""

    categories: list[str]
    """Taxonomy codes of the known entries, and unknown entries as written; no repeats."""
    risk_tags: list[str]
    """S-Eval L1 keys the known entries map to; no repeats."""
    unknown: list[str]
    """Entries the taxonomy does not know."""


@functools.lru_cache(maxsize=16)
def _zh_names(taxonomy: str) -> dict[str, Category]:
    return {
        normalize(c.name_zh): c for c in get_taxonomy(taxonomy).categories if c.name_zh is not None
    }


def map_categories(taxonomy: str, entries: Iterable[str]) -> CategoryMap:
    """Resolves category codes or names against a built-in taxonomy.

    Entries that mean "no category" (``None``, ``无``) are skipped. Known entries are replaced by
    their code and contribute their S-Eval L1 keys; unknown ones are kept as written.
    """
    tax = get_taxonomy(taxonomy)
    categories: list[str] = []
    tags: list[str] = []
    unknown: list[str] = []
    for entry in entries:
        text = entry.strip(_LABEL_TRIM)
        if normalize(text) in _NO_CATEGORY:
            continue
        category = tax.find(text) or _zh_names(taxonomy).get(normalize(text))
        if category is None:
            unknown.append(text)
            categories.append(text)
        else:
            categories.append(category.code)
            tags.extend(category.seval_l1)
    return CategoryMap(dedupe(categories), dedupe(tags), dedupe(unknown))


class DuplicateKeyError(ValueError):
    """A JSON object gives one key twice with different values (see :func:`no_duplicate_keys`)."""


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json``: a key given twice must have the same value.

    Raises:
        DuplicateKeyError: It has two different values (an output that contradicts itself).
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result and result[key] != value:
            raise DuplicateKeyError(f"key {key!r} given twice with different values")
        result[key] = value
    return result
