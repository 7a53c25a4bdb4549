"""A tiny HTML/SVG builder that escapes by construction.

Model outputs, prompts, critiques and even target and judge names are untrusted text. Nothing
here concatenates a string into markup: :func:`el` escapes every ``str`` child and every
attribute value, and only :class:`Markup` (built by :func:`el` itself, or by :func:`raw` on a
constant the code owns) passes through unescaped. Attribute names must be plain identifiers, so a
name cannot smuggle in an event handler either.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping

_ATTR_RE = re.compile(r"[a-zA-Z_:][-a-zA-Z0-9_:.]*")
_TAG_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9]*")
_VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col"})


class Markup(str):
    """Markup that is already safe (escaped text or tags built here)."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """Text escaped for element content and quoted attribute values."""
    return Markup(html.escape(str(value), quote=True))


def raw(text: str) -> Markup:
    """Markup the code itself owns (a constant stylesheet or script); never for data."""
    return Markup(text)


def render(children: object) -> Markup:
    """Children as markup: Markup as is, other scalars escaped, iterables flattened."""
    if children is None or children is False:
        return Markup("")
    if isinstance(children, Markup):
        return children
    if isinstance(children, (str, int, float)):
        return esc(children)
    if isinstance(children, Iterable):
        return Markup("".join(render(c) for c in children))
    return esc(children)


def el(tag: str, attrs: Mapping[str, object] | None = None, *children: object) -> Markup:
    """An element: ``el("td", {"class": "num"}, "42%")``. None-valued attributes are left out."""
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(f"invalid tag {tag!r}")
    parts = [tag]
    for name, value in (attrs or {}).items():
        if not _ATTR_RE.fullmatch(name) or name.lower().startswith("on"):
            raise ValueError(f"invalid attribute {name!r}")
        if value is None or value is False:
            continue
        parts.append(name if value is True else f'{name}="{esc(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if tag in _VOID:
        return Markup(opening)
    return Markup(f"{opening}{render(children)}</{tag}>")
