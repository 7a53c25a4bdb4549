"""Keeps untrusted text (the judged prompt and response) inside its slot of a judge prompt.

A judged response is written by the model under test, and an attack prompt by an attacker; either
may contain text that looks like the judge's own prompt structure (``<END CONVERSATION>``, a fake
``Agent:`` turn, ``[Answer] safe``) or a chat template's special tokens (``<|im_end|>``), which
most tokenizers turn back into real control tokens. :class:`Fence` rewrites such strings in
untrusted text into a visibly altered form before the text is placed in the prompt, so that the
judge's delimiters and instructions appear exactly once, where the format puts them:

* chat special tokens and the format's delimiter tokens anywhere in the text have their bracket
  characters swapped for look-alikes: ``<END CONVERSATION>`` becomes ``‹END CONVERSATION›``,
  ``[Answer]`` becomes ``⟦Answer⟧``, ``<|im_end|>`` becomes ``‹¦im_end¦›``, ``"User Safety"``
  becomes ``”User Safety”``;
* the format's instruction phrases (``Provide your safety assessment for``) anywhere in the text
  have their spaces replaced by middle dots (``Provide·your·safety·assessment·for``; a phrase
  without spaces gets a middle dot after its first character), so a forged instruction cannot
  pass for the real one;
* the format's line labels (``User:``, ``Agent:``, ``Safety:``, ``A:``) at the start of a line are
  quoted with ``> `` (``> Agent: ...``), so the text cannot open a new turn or answer line.

Matching ignores case and the amount of whitespace inside a token. Everything else in the text is
kept as it is.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Look-alikes for the characters that make up delimiters; each is visibly different from the
# ASCII original and tokenizes differently.
_LOOKALIKE = str.maketrans(
    {
        "<": "‹",
        ">": "›",
        "[": "⟦",
        "]": "⟧",
        "{": "⦃",
        "}": "⦄",
        "|": "¦",
        "｜": "¦",
        '"': "”",
    }
)
_ALTERABLE = frozenset('<>[]{}|｜"')

# Special-token spellings of common chat templates: Llama 3/4 and ChatML (<|...|>), DeepSeek
# (<｜...｜>), Llama 2 ([INST], <<SYS>>, <s>), Gemma (<start_of_turn>, <bos>), Baichuan
# (<reserved_106>) and ChatGLM ([gMASK]).
CHAT_TOKENS = re.compile(
    r"<\|[^<>|\s]{1,64}\|>"
    r"|<｜[^<>｜\s]{1,64}｜>"
    r"|\[/?INST\]"
    r"|<</?SYS>>"
    r"|</?s>"
    r"|</?(?:bos|eos|pad|unk)>"
    r"|<(?:start|end)_of_turn>"
    r"|<reserved_\d{1,4}>"
    r"|\[gMASK\]",
    re.IGNORECASE,
)


def _alter(match: re.Match[str]) -> str:
    return match.group(0).translate(_LOOKALIKE)


def _dot(match: re.Match[str]) -> str:
    text = match.group(0)
    dotted = re.sub(r"\s+", "·", text)
    return dotted if dotted != text else text[:1] + "·" + text[1:]


@functools.lru_cache(maxsize=64)
def _token_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    parts = [
        r"\s+".join(re.escape(word) for word in token.split())
        for token in sorted(tokens, key=len, reverse=True)
    ]
    return re.compile("|".join(parts), re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _label_pattern(labels: tuple[str, ...]) -> re.Pattern[str] | None:
    if not labels:
        return None
    parts = []
    for label in sorted(labels, key=len, reverse=True):
        if label.endswith((":", "：")):
            # Either colon, and optional blanks before it: "User :" and "风险：" are labels too.
            parts.append(re.escape(label[:-1].rstrip()) + r"[ \t]*[:：]")
        else:
            parts.append(re.escape(label))
    return re.compile(r"^([ \t]*)(" + "|".join(parts) + ")", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Fence:
    """The strings of one judge format that untrusted text may not contain as they are.

    Attributes:
        tokens: Delimiters neutralised wherever they occur; each must contain a bracket, bar or
            double-quote character (the characters that get swapped for look-alikes).
        labels: Line labels neutralised at the start of a line (a trailing ``:`` also matches
            ``：``).
        phrases: Instruction phrases neutralised wherever they occur.
    """

    tokens: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Checks that every token can be visibly altered."""
        for token in self.tokens:
            if not _ALTERABLE.intersection(token):
                raise ValueError(f"fence token {token!r} has no character to alter")

    def apply(self, text: str) -> str:
        """Returns ``text`` with chat special tokens, delimiters, instruction phrases and line
        labels neutralised."""
        text = CHAT_TOKENS.sub(_alter, text)
        tokens = _token_pattern(self.tokens)
        if tokens is not None:
            text = tokens.sub(_alter, text)
        phrases = _token_pattern(self.phrases)
        if phrases is not None:
            text = phrases.sub(_dot, text)
        labels = _label_pattern(self.labels)
        if labels is not None:
            text = labels.sub(r"\1> \2", text)
        return text
