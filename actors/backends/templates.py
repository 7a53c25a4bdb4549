"""Chat templates a backend can use instead of the model's own (option ``chat_template``).

Guard models such as Llama Guard 3/4 and Qwen3Guard-Gen ship chat templates that build their own
moderation prompt from the conversation. assay's judge formats (``assay.engine.judges``) already
write that prompt themselves, into one user message, so those models must be rendered with the
plain turn format of their family instead, or the prompt is wrapped twice. The names below are
those plain formats; any other value is a Jinja template, or a path to a file holding one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from assay.engine.judges import FALLBACK_SPECIAL_TOKENS
from assay.engine.judges.templates import PLAIN_TEMPLATES

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
