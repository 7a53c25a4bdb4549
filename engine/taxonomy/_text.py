"""Text helpers shared by risk-tree and category lookups: normalisation and close matches."""

from __future__ import annotations

import difflib
import re
import unicodedata

# Runs of letters and digits (any script); everything else, underscores included, separates.
_TOKEN = re.compile(r"[^\W_]+")
# "and" is dropped so that "Guns and Illegal Weapons" matches "Guns/Illegal Weapons" and
# "Suicide & Self-Harm" matches "Suicide and Self Harm".
_STOP_WORDS = frozenset({"and"})
_PATH_SEPARATOR = re.compile(r"\s*(?:::|>|/)\s*")


def normalize(text: str) -> str:
    """Returns the lookup form of a key or name: case, spacing and punctuation removed.

    Args:
        text: A key, code or display name in any script.

    Returns:
        The casefolded letter and digit runs of ``text`` (NFKC-normalised), joined without
        separators, with the word "and" left out. May be empty.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(tok for tok in _TOKEN.findall(folded) if tok not in _STOP_WORDS)


def split_path(value: str) -> list[str]:
    """Splits a risk path on ``/``, ``>`` or ``::`` into its non-empty, stripped segments."""
    text = unicodedata.normalize("NFKC", value).strip()
    return [seg for seg in _PATH_SEPARATOR.split(text) if seg]


def close_match(value: str, labels: dict[str, str]) -> str | None:
    """Returns the label closest to ``value``, or None when nothing is close.

    Args:
        value: What the user typed.
        labels: Normalised form -> label to suggest.
    """
    hits = difflib.get_close_matches(normalize(value), list(labels), n=1, cutoff=0.6)
    return labels[hits[0]] if hits else None
