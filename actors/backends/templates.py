"""Chat templates a backend can use instead of the model's own (option ``chat_template``).

Guard models such as Llama Guard 3/4 and Qwen3Guard-Gen ship chat templates that build their own
moderation prompt from the conversation. assay's judge formats (``assay.engine.judges``) already
write that prompt themselves, into one user message, so those models must be rendered with the
plain turn format of their family instead, or the prompt is wrapped twice. The names below are
those plain formats; any other value is a Jinja template, or a path to a file holding one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from assay.engine.judges import FALLBACK_SPECIAL_TOKENS
from assay.engine.judges.templates import PLAIN_TEMPLATES
from assay.engine.requests import GenerationRequest


def resolve_chat_template(value: str | None) -> str | None:
    """A built-in name, a Jinja file's path, or a Jinja template; None keeps the model's."""
    if value is None:
        return None
    if value in PLAIN_TEMPLATES:
        return PLAIN_TEMPLATES[value]
    if "{" not in value and Path(value).is_file():
        return Path(value).read_text(encoding="utf-8")
    if "{" not in value:
        raise ValueError(
            f"chat_template {value!r} is neither a built-in ({', '.join(PLAIN_TEMPLATES)}), "
            "a file, nor a Jinja template"
        )
    return value


def chat_template_field() -> Any:
    """The ``chat_template`` option, as the transformers and vLLM backends declare it."""
    return Field(
        default=None,
        description="Use this chat template instead of the model's: a built-in plain turn "
        "format (chatml, qwen3-nothink, llama3, llama4, llama2), a Jinja file or a Jinja string. "
        "Guard models whose own template builds a moderation prompt need the plain format.",
    )


# Characters of chat markup: an added token holding one is a control token even when the
# tokenizer does not mark it special (Qwen3's <think>, </think>, <tool_call>).
_MARKUP = frozenset("<>[]|｜")


def tokenizer_special_texts(tokenizer: Any) -> tuple[str, ...]:
    """The special-token spellings of a Hugging Face tokenizer (as transformers and vLLM load it),
    for judges to neutralise in the untrusted text of their prompts.

    They are ``all_special_tokens``, every entry of ``added_tokens_decoder`` marked special, and
    every added token that holds chat markup (``<``, ``>``, ``[``, ``]``, ``|``) although it is
    not marked special, such as Qwen3's ``<think>``/``</think>``/``<tool_call>``; plus
    :data:`~assay.engine.judges.FALLBACK_SPECIAL_TOKENS`. Added tokens that are plain words are
    left out: they are ordinary vocabulary, not control tokens. A tokenizer without these
    attributes gives the fallback list alone.
    """
    texts = set(FALLBACK_SPECIAL_TOKENS)
    for token in getattr(tokenizer, "all_special_tokens", None) or ():
        texts.add(str(token))
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for token in decoder.values():
        content = str(getattr(token, "content", token))
        if getattr(token, "special", False) or _MARKUP.intersection(content):
            texts.add(content)
    return tuple(sorted(text for text in texts if text.strip()))


# -- rendering a request with a tokenizer (the transformers and vLLM backends) -------------------

LABEL_CONTEXT_CHARS = 48
"""How much of the prompt's end is tokenized with each label to find its first token in context
(enough for any tokenizer's merges across the boundary; the cost does not grow with the prompt)."""


@dataclass(frozen=True)
class Rendered:
    """A request rendered for a model: the text it continues, its token ids, and how it was
    rendered (``own-template``, ``plain:<name>``, ``override``, ``model-template``, ``raw``)."""

    text: str
    ids: list[int]
    how: str


def render_request(tokenizer: Any, req: GenerationRequest, override: str | None) -> Rendered:
    """Renders ``req`` with a Hugging Face tokenizer as its judge format's contract says.

    - a raw prompt is tokenized as is (no special tokens added), with the BOS token id first
      exactly once when ``req.add_bos`` asks for it and the tokenizer has one, none when it is
      False, and as the tokenizer adds them by default when it is None (unless the text already
      starts with the BOS text);
    - chat messages: the model's own template renders ``req.conversation`` when it holds
      ``req.own_template_marker`` (a guard model's own moderation template) and no template
      ``override`` was configured; else ``req.template`` (a plain turn format the judge's contract
      names), else the backend's ``override``, else the model's own template renders
      ``req.messages``. The rendered chat holds its special tokens, so it is tokenized without
      adding any.

    Raises:
        ValueError: The model has no chat template and none was given, or a named plain format
            is unknown.
    """
    if req.prompt is not None:
        text = req.prompt + req.assistant_prefix
        bos_id = getattr(tokenizer, "bos_token_id", None)
        if req.add_bos is None:
            bos = getattr(tokenizer, "bos_token", None)
            add = not (bos and text.startswith(bos))
            return Rendered(text, list(tokenizer.encode(text, add_special_tokens=add)), "raw")
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        if req.add_bos and bos_id is not None and ids[:1] != [bos_id]:
            ids.insert(0, bos_id)
        return Rendered(text, ids, "raw")
    own = getattr(tokenizer, "chat_template", None)
    own = own if isinstance(own, str) else None
    marker = req.own_template_marker
    if marker is not None and override is None and own is not None and marker in own:
        messages, template, how = req.conversation, own, "own-template"
    elif req.template is not None:
        if req.template not in PLAIN_TEMPLATES:
            raise ValueError(
                f"unknown plain turn format {req.template!r} (known: {', '.join(PLAIN_TEMPLATES)})"
            )
        messages, template, how = (
            req.messages,
            PLAIN_TEMPLATES[req.template],
            f"plain:{req.template}",
        )
    elif override is not None:
        messages, template, how = req.messages, override, "override"
    elif own is not None:
        messages, template, how = req.messages, own, "model-template"
    else:
        raise ValueError("the model has no chat template and the request names none")
    rendered: str = tokenizer.apply_chat_template(
        [m.model_dump() for m in messages],
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
    )
    text = rendered + req.assistant_prefix
    return Rendered(text, list(tokenizer.encode(text, add_special_tokens=False)), how)


def label_ids_in_context(tokenizer: Any, text: str, labels: tuple[str, ...]) -> dict[str, int]:
    """Each label's first token id as the model would produce it right after ``text``.

    The end of ``text`` is tokenized alone and followed by the label; the label's first token is
    the first one after the tokens of the end alone. A label that merges with the end of the
    prompt (its first token would swallow prompt characters) or encodes to nothing is refused,
    and so are labels sharing their first token: their probabilities could not be told apart.

    Raises:
        ValueError: As above, naming the labels and the token.
    """
    context = text[-LABEL_CONTEXT_CHARS:]
    base = list(tokenizer.encode(context, add_special_tokens=False)) if context else []
    out: dict[str, int] = {}
    for label in labels:
        full = list(tokenizer.encode(context + label, add_special_tokens=False))
        k = 0
        while k < min(len(base), len(full)) and base[k] == full[k]:
            k += 1
        if k < len(base):
            piece = _piece(tokenizer, full[k]) if k < len(full) else ""
            raise ValueError(
                f"label {label!r} merges with the end of the prompt ({context[-12:]!r} + "
                f"{label!r} tokenize into {piece!r}), so its first token is not the next one"
            )
        if k >= len(full):
            raise ValueError(f"label {label!r} encodes to no tokens")
        token = full[k]
        clash = next((other for other, tid in out.items() if tid == token), None)
        if clash is not None:
            raise ValueError(
                f"labels {clash!r} and {label!r} share their first token "
                f"{_piece(tokenizer, token)!r} (id {token}) after the prompt, so their "
                "probabilities cannot be told apart"
            )
        out[label] = token
    return out


class LabelIdCache:
    """:func:`label_ids_in_context` per (prompt end, labels), bounded: a judge's prompts all end
    alike, so a backend needs a handful of entries, not one per request."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._ids: dict[tuple[str, tuple[str, ...]], dict[str, int]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, tokenizer: Any, text: str, labels: tuple[str, ...]) -> dict[str, int]:
        """The labels' first token ids after ``text``; ValueError as the function raises it."""
        key = (text[-LABEL_CONTEXT_CHARS:], labels)
        ids = self._ids.get(key)
        if ids is None:
            ids = label_ids_in_context(tokenizer, text, labels)
            if len(self._ids) >= self.max_entries:
                self._ids.clear()
            self._ids[key] = ids
        return ids


def _piece(tokenizer: Any, token: int) -> str:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    return str(convert(token)) if convert is not None else str(token)
