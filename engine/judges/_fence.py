"""Keeps untrusted text (the judged prompt and response) inside its slot of a judge prompt.

A judged response is written by the model under test, and an attack prompt by an attacker; either
may contain text that looks like the judge's own prompt structure (``<END CONVERSATION>``, a fake
``Agent:`` turn, ``[Answer] safe``) or a chat template's special tokens (``<|im_end|>``,
``</think>``), which most tokenizers turn back into real control tokens. :class:`Fence` rewrites
such strings in untrusted text into a visibly altered form before the text is placed in the
prompt, so that the judge's delimiters and instructions appear exactly once, where the format
puts them.

Matching is done on a normalised view of the text, so look-alike spellings are caught too:

* each character is NFKC-normalised (full-width ``［Ａｎｓｗｅｒ］`` and ``＜END CONVERSATION＞``
  read as ``[Answer]`` and ``<END CONVERSATION>``; a few colon look-alikes such as ``∶`` read as
  ``:``);
* invisible characters are ignored: format characters (Unicode category Cf: zero-width spaces
  and joiners U+200B-U+200F, U+2060-U+2064, U+FEFF, the soft hyphen, bidi controls, tags),
  other default-ignorable code points (variation selectors, Hangul fillers, U+034F) and control
  characters other than tab and line breaks, so ``<END\\u200bRESPONSE>`` is still a delimiter;
* every line break counts as the start of a line: ``\\n``, ``\\r``, ``\\v``, ``\\f``, U+001C-U+001E,
  U+0085, U+2028 and U+2029;
* any Unicode whitespace (U+00A0, U+3000, ...) before a line label, and markdown emphasis
  (``**Agent:**``), still leaves the label at the start of its line;
* case is ignored, and so is the amount of whitespace between the words of a delimiter and just
  inside its brackets or quotes (``< end  conversation >``).

What is rewritten, deterministically (re-fencing fenced text changes nothing):

* chat special tokens (a fixed list of common spellings, plus the tokens of the tokenizer the
  backend loads, see :class:`SpecialTokens`) and the format's delimiter tokens anywhere in the
  text: the matched span is written in its normalised form with its bracket characters swapped
  for look-alikes (``<END CONVERSATION>`` becomes ``‹END CONVERSATION›``, ``[Answer]`` becomes
  ``⟦Answer⟧``, ``【答案】`` becomes ``〖答案〗``, ``<|im_end|>`` becomes ``‹¦im_end¦›``,
  ``</think>`` becomes ``‹/think›``); invisible characters inside the span are dropped. A
  special token without any bracket character (a word such as ``sop``) is matched as a whole
  word only and gets a middle dot after its first character (``s·op``);
* the format's JSON keys (NemoGuard's ``"User Safety"``) as a JSON parser would read them (blanks
  inside the quotes, any case, ``\\u`` escapes): the quotes become ``”``;
* the format's instruction phrases (``Provide your safety assessment for``) anywhere in the
  text: their whitespace becomes middle dots (``Provide·your·safety·assessment·for``; a phrase
  without spaces gets a middle dot after its first character);
* the format's line labels (``User:``, ``Agent:``, ``Safety:``, ``A:``) at the start of a line are
  quoted with ``> `` (``> Agent: ...``), so the text cannot open a new turn or answer line; the
  label itself is kept as written.

Everything else in the text is kept exactly as it is. One pass over the normalised text finds
every match (the patterns are fixed per format, and the tokenizer's special tokens form one
trie-shaped pattern), so the cost is linear in the text's length.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

# Look-alikes for the characters that make up delimiters; each is visibly different from the
# ASCII original, tokenizes differently and is left as it is by NFKC.
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
        "【": "〖",
        "】": "〗",
    }
)
_ALTERABLE = frozenset('<>[]{}|｜"【】')
_OPENERS_CLOSERS = frozenset('<>[]{}|"【】')

# Special-token spellings of common chat templates: Llama 3/4 and ChatML (<|...|>), DeepSeek
# (<｜...｜>), Llama 2 ([INST], <<SYS>>, <s>), Gemma (<start_of_turn>, <bos>), Baichuan
# (<reserved_106>) and ChatGLM ([gMASK]). Matched on the normalised text.
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

FALLBACK_SPECIAL_TOKENS: tuple[str, ...] = (
    # Qwen3 / QwQ / DeepSeek-R1 reasoning and Hermes-style tool calls (added, not "special")
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    # Gemma 3
    "<start_of_image>",
    "<end_of_image>",
    # Mistral (v3 / tekken) control tokens
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_CALLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[THINK]",
    "[/THINK]",
    # ChatGLM / GLM-4
    "[MASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
)
"""Special-token spellings neutralised in untrusted text whatever the backend, in addition to
:data:`CHAT_TOKENS`: the list used where the backend has no tokenizer to ask (the openai
backend), and a floor under a tokenizer's own list."""

# Line breaks (what str.splitlines splits on), all read as "\n".
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Default-ignorable code points outside category Cf (which is ignored as a whole).
_IGNORABLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
# Colon look-alikes that NFKC leaves alone: ratio, modifier letter colons.
_EXTRA_FOLD = str.maketrans({"∶": ":", "꞉": ":", "˸": ":", "ː": ":"})
# ASCII text free of these needs no normalisation (its view is the text itself).
_ASCII_ODD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@functools.lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """What one character reads as when matching: '' for an invisible one."""
    if char in _LINE_BREAKS:
        return "\n"
    if char == "\t":
        return char
    if unicodedata.category(char) in ("Cf", "Cc", "Cs") or char in _IGNORABLE:
        return ""
    if 0xE0100 <= ord(char) <= 0xE01EF:  # variation selectors supplement
        return ""
    folded = unicodedata.normalize("NFKC", char).translate(_EXTRA_FOLD)
    # NFKC may produce an ignorable character itself (rare); drop those too
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


@functools.lru_cache(maxsize=1)
def _odd() -> re.Pattern[str]:
    """The characters the view changes: every one of the Basic Multilingual Plane whose
    :func:`_fold_char` differs from it (found once, in ranges), and every character beyond it."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        char = chr(code)
        if char in "\n\t" or 0xD800 <= code < 0xE000 or _fold_char(char) == char:
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = [
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        for lo, hi in ranges
    ]
    return re.compile("[" + "".join(parts) + "\U00010000-\U0010ffff]")


class _View:
    """The normalised view of a text, and where each of its characters came from."""

    __slots__ = ("length", "src", "text")

    def __init__(self, text: str):
        self.length = len(text)
        self.src: list[int] | None = None
        if text.isascii() and not _ASCII_ODD.search(text):
            self.text = text
            return
        pieces: list[str] = []
        src: list[int] = []
        at = 0
        for match in _odd().finditer(text):
            index = match.start()
            if index > at:
                pieces.append(text[at:index])
                src.extend(range(at, index))
            folded = _fold_char(text[index])
            if folded:
                pieces.append(folded)
                src.extend([index] * len(folded))
            at = index + 1
        if at == 0:  # nothing changed: the view is the text
            self.text = text
            return
        pieces.append(text[at:])
        src.extend(range(at, len(text)))
        self.text = "".join(pieces)
        self.src = src

    def span(self, start: int, end: int) -> tuple[int, int, str]:
        """The original span ``[a, b)`` of the characters behind view ``[start, end)``, and the
        normalised text of those whole characters."""
        if self.src is None:
            return start, end, self.text[start:end]
        src = self.src
        a, last = src[start], src[end - 1]
        while start > 0 and src[start - 1] == a:
            start -= 1
        while end < len(src) and src[end] == last:
            end += 1
        return a, last + 1, self.text[start:end]

    def position(self, index: int) -> int:
        """The original position of view position ``index`` (for insertions)."""
        if self.src is None:
            return index
        return self.src[index] if index < len(self.src) else self.length


def normalize_for_matching(text: str) -> str:
    """The view of ``text`` the fence matches on (NFKC, invisible characters dropped, every
    line break as ``\\n``); for tests and diagnostics."""
    return _View(text).text


def _alter(text: str) -> str:
    return text.translate(_LOOKALIKE)


def _dot(text: str) -> str:
    dotted = re.sub(r"\s+", "·", text)
    return dotted if dotted != text else text[:1] + "·" + text[1:]


def _flex(text: str, gap: str) -> str:
    """A pattern for ``text``: ``gap`` wherever it has whitespace, and blanks allowed just inside
    its brackets and quotes."""
    out: list[str] = []
    previous = ""
    for char in text.strip():
        if char.isspace():
            if out and out[-1] != gap:
                out.append(gap)
        else:
            bracket = char in _OPENERS_CLOSERS or previous in _OPENERS_CLOSERS
            if out and out[-1] != gap and bracket:
                out.append(r"\s*")
            out.append(re.escape(char))
        previous = char
    return "".join(out)


_Trie = dict[str, "_Trie"]


def _trie(words: Iterable[str]) -> str:
    """One alternation for many literal words, shaped as a trie (linear matching)."""
    root: _Trie = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: _Trie) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            return "(?:" + body + ")?"
        return body

    return emit(root)


_MAX_TOKEN = 128  # longer "tokens" are not control tokens; they are left out


class SpecialTokens:
    """The special-token spellings of one tokenizer, compiled once for :meth:`Fence.apply`.

    Built from the strings a backend reports (``all_special_tokens`` and the added tokens of the
    tokenizer it loads). Blank and one-character strings and strings with whitespace are left
    out (they cannot be neutralised without rewriting ordinary text). Strings with a bracket,
    bar or quote character are matched anywhere and get look-alike brackets; others (``sop``)
    are matched as whole words only and get a middle dot after their first character. Matching
    is on the normalised text and ignores case.
    """

    def __init__(self, texts: Iterable[str] = ()):
        """Keeps the usable strings of ``texts`` and compiles their patterns."""
        kept: set[str] = set()
        marked: set[str] = set()
        words: set[str] = set()
        for text in texts:
            folded = _View(text).text.strip().lower()
            if len(folded) < 2 or len(folded) > _MAX_TOKEN or any(c.isspace() for c in folded):
                continue
            kept.add(text)
            if _ALTERABLE.intersection(folded):
                marked.add(folded)
            else:
                words.add(folded)
        self.texts: tuple[str, ...] = tuple(sorted(kept))
        """The strings kept, as the tokenizer spells them."""
        parts = []
        if marked:
            parts.append(_trie(marked))
        if words:
            parts.append(r"(?<!\w)" + _trie(words) + r"(?!\w)")
        self.pattern: re.Pattern[str] | None = (
            re.compile("|".join(parts), re.IGNORECASE) if parts else None
        )
        self._hash = hash(self.texts)

    def __repr__(self) -> str:
        """Shows how many strings are kept."""
        return f"SpecialTokens({len(self.texts)} strings)"

    def __eq__(self, other: object) -> bool:
        """Equal when they keep the same strings."""
        return isinstance(other, SpecialTokens) and self.texts == other.texts

    def __hash__(self) -> int:
        """Hashes the strings kept (computed once: a tokenizer may have thousands)."""
        return self._hash


_FALLBACK = SpecialTokens(FALLBACK_SPECIAL_TOKENS)


def _neutral_token(text: str) -> str:
    altered = _alter(text)
    return altered if altered != text else text[:1] + "·" + text[1:]


@functools.lru_cache(maxsize=16)
def _json_key_pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    """JSON keys as a JSON parser reads them: any case, blanks around and between the words,
    ``\\u`` escapes for any character (escaped blanks and case variants included)."""
    if not keys:
        return None
    blank = r"(?:\s|\\[tnrfb/]|\\u[0-9a-f]{4})"
    alternatives = []
    for key in sorted(keys, key=len, reverse=True):
        chars = []
        for char in key.strip():
            if char.isspace():
                chars.append(blank + "+")
                continue
            variants = {char, char.lower(), char.upper(), *_casefold_twins(char)}
            escapes = "|".join(sorted(f"\\\\u{ord(v):04x}" for v in variants))
            chars.append(f"(?:{re.escape(char)}|{escapes})")
        alternatives.append("".join(chars))
    return re.compile(f'"{blank}*(?:{"|".join(alternatives)}){blank}*"', re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _casefold_classes() -> dict[str, tuple[str, ...]]:
    """Case folding -> the characters of the Basic Multilingual Plane that fold to it."""
    classes: dict[str, list[str]] = {}
    for code in range(0x10000):
        char = chr(code)
        classes.setdefault(char.casefold(), []).append(char)
    return {fold: tuple(chars) for fold, chars in classes.items()}


def _casefold_twins(char: str) -> tuple[str, ...]:
    """Characters of the Basic Multilingual Plane whose case folding is ``char``'s."""
    return _casefold_classes().get(char.casefold(), ())


@functools.lru_cache(maxsize=64)
def _token_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    parts = [_flex(token, r"\s*") for token in sorted(tokens, key=len, reverse=True)]
    return re.compile("|".join(parts), re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    parts = [_flex(phrase, r"\s*") for phrase in sorted(phrases, key=len, reverse=True)]
    return re.compile("|".join(parts), re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _label_pattern(labels: tuple[str, ...]) -> re.Pattern[str] | None:
    if not labels:
        return None
    parts = []
    for label in sorted(labels, key=len, reverse=True):
        if label.endswith((":", "：")):
            # Either colon, and optional blanks before it: "User :" and "风险：" are labels too.
            parts.append(_flex(label[:-1], r"[^\S\n]*") + r"[^\S\n]*[:：]")
        else:
            parts.append(_flex(label, r"[^\S\n]*"))
    # Leading blanks of any kind, then optional markdown emphasis (**Agent:**), then the label.
    return re.compile(
        r"^[^\S\n]*(?P<label>[*_`~]*(?:" + "|".join(parts) + "))",
        re.IGNORECASE | re.MULTILINE,
    )


class _Edit(NamedTuple):
    start: int
    end: int
    text: str


Rule = Callable[["_View"], list[_Edit]]


def _replace_all(pattern: re.Pattern[str] | None, make: Callable[[str], str]) -> Rule:
    def rule(view: _View) -> list[_Edit]:
        if pattern is None:
            return []
        edits = []
        for match in pattern.finditer(view.text):
            if match.end() > match.start():
                start, end, text = view.span(match.start(), match.end())
                edits.append(_Edit(start, end, make(text)))
        return edits

    return rule


def _quote_labels(pattern: re.Pattern[str] | None) -> Rule:
    def rule(view: _View) -> list[_Edit]:
        if pattern is None:
            return []
        edits = []
        for match in pattern.finditer(view.text):
            at = view.position(match.start("label"))
            edits.append(_Edit(at, at, "> "))
        return edits

    return rule


def _apply_edits(text: str, edits: list[_Edit]) -> tuple[str, bool]:
    """Applies the edits that do not overlap an earlier one; returns the text and whether every
    edit was applied."""
    covered = bytearray(len(text) + 1)  # characters an accepted replacement rewrites
    inserted = bytearray(len(text) + 1)  # positions of accepted insertions
    accepted: list[_Edit] = []
    complete = True
    for edit in edits:
        start, end = edit.start, edit.end
        if start == end:
            if start > 0 and covered[start - 1] and covered[start]:
                complete = False
                continue
            inserted[start] = 1
        elif any(covered[start:end]) or any(inserted[start + 1 : end]):
            complete = False
            continue
        else:
            covered[start:end] = b"\x01" * (end - start)
        accepted.append(edit)
    if not accepted:
        return text, complete
    accepted.sort(key=lambda e: (e.start, e.end))
    out: list[str] = []
    at = 0
    for edit in accepted:
        out.append(text[at : edit.start])
        out.append(edit.text)
        at = edit.end
    out.append(text[at:])
    return "".join(out), complete


@dataclass(frozen=True)
class Fence:
    """The strings of one judge format that untrusted text may not contain as they are.

    Attributes:
        tokens: Delimiters neutralised wherever they occur; each must contain a bracket, bar or
            double-quote character (the characters that get swapped for look-alikes).
        labels: Line labels neutralised at the start of a line (a trailing ``:`` also matches
            ``：``).
        phrases: Instruction phrases neutralised wherever they occur.
        json_keys: Keys of the format's JSON answer, neutralised where they occur as a JSON
            string (quotes included).
    """

    tokens: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    json_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Checks that every token can be visibly altered."""
        for token in self.tokens:
            if not _ALTERABLE.intersection(token):
                raise ValueError(f"fence token {token!r} has no character to alter")

    def apply(self, text: str, special: SpecialTokens | None = None) -> str:
        """Returns ``text`` with chat special tokens (the built-in ones and ``special``'s),
        delimiters, JSON keys, instruction phrases and line labels neutralised."""
        rules = _rules(self, special)
        # One round applies every edit unless two matches overlap (then the later one waits
        # for the next round); each round removes at least one match and creates none.
        for _ in range(64):
            view = _View(text)
            edits = [edit for rule in rules for edit in rule(view)]
            if not edits:
                return text
            text, complete = _apply_edits(text, edits)
            if complete:
                return text
        raise RuntimeError("fence did not converge")  # pragma: no cover - see above


@functools.lru_cache(maxsize=64)
def _rules(fence: Fence, special: SpecialTokens | None) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    if special is not None:
        rules.append(_replace_all(special.pattern, _neutral_token))
    rules += [
        _replace_all(_FALLBACK.pattern, _neutral_token),
        _replace_all(CHAT_TOKENS, _alter),
        # a JSON string a parser reads as one of the keys: its quotes are altered
        _replace_all(_json_key_pattern(fence.json_keys), _alter),
        _replace_all(_token_pattern(fence.tokens), _alter),
        _replace_all(_phrase_pattern(fence.phrases), _dot),
        _quote_labels(_label_pattern(fence.labels)),
    ]
    return tuple(rules)
