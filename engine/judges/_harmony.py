"""The harmony response format of the gpt-oss models, as text: rendering a prompt and reading a
completion.

openai-harmony (OpenAI's package) is the reference for both, but it cannot be called here: loading
its encoding needs the ``o200k_base`` vocabulary file, which it downloads from a public blob store
(or reads from ``TIKTOKEN_ENCODINGS_BASE``) and checks by hash, and offline machines have neither.
The text it renders does not depend on the vocabulary, so this module writes the same text
(openai-harmony's ``render_conversation_for_completion`` for a system, a developer and a user
message, decoded), and the tests compare it with openai-harmony's own golden files
(``test-data/test_simple_convo_*_effort.txt`` of openai/harmony) and, where its encoding loads,
with openai-harmony itself.

A completion is read strictly from either spelling a backend may return:

* with the special tokens kept (``skip_special_tokens=False``)::

      <|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...

  ending in ``<|return|>``, ``<|end|>`` or nothing (the stop token removed);
* with them stripped (the default of vLLM and transformers decoding)::

      analysis...assistantfinal...

  split at the last ``assistantfinal`` (a final message is short: a label or a JSON object);
* a final message alone (a server whose reasoning parser moved the analysis elsewhere).

A tool call (a header with ``to=``), a role other than the assistant, or a completion that ends
before a final message is an error, never a guess.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

ReasoningEffort = Literal["low", "medium", "high"]
Spelling = Literal["tokens", "stripped", "final-only"]

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
RETURN, CALL, CONSTRAIN = "<|return|>", "<|call|>", "<|constrain|>"
SPECIAL = (START, END, MESSAGE, CHANNEL, RETURN, CALL, CONSTRAIN)

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
"""openai-harmony's default model identity (``SystemContent.new()``)."""
KNOWLEDGE_CUTOFF = "2024-06"
"""openai-harmony's default knowledge cutoff."""
VALID_CHANNELS = ("analysis", "commentary", "final")
"""openai-harmony's default required channels."""

STRIPPED_FINAL = "assistantfinal"
"""What ``<|start|>assistant<|channel|>final<|message|>`` reads as with special tokens stripped."""


def system_text(effort: ReasoningEffort) -> str:
    """The system message content openai-harmony renders for ``SystemContent.new()`` with the
    reasoning effort set (no conversation date, no tools)."""
    return (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\n\n"
        f"Reasoning: {effort}\n\n"
        f"# Valid channels: {', '.join(VALID_CHANNELS)}. "
        "Channel must be included for every message."
    )


def developer_text(instructions: str) -> str:
    """The developer message content of ``DeveloperContent.new().with_instructions(...)``."""
    return f"# Instructions\n\n{instructions}"


def render_prompt(effort: ReasoningEffort, instructions: str, user: str) -> str:
    """A system, a developer and a user message, then the assistant's turn opened: the text of
    ``render_conversation_for_completion(conversation, Role.ASSISTANT)``."""
    return (
        f"{START}system{MESSAGE}{system_text(effort)}{END}"
        f"{START}developer{MESSAGE}{developer_text(instructions)}{END}"
        f"{START}user{MESSAGE}{user}{END}"
        f"{START}assistant"
    )


class HarmonyMessage(NamedTuple):
    """One assistant message of a completion."""

    channel: str
    """``analysis``, ``final`` or ``commentary``."""
    content: str
    """The message text (not stripped)."""


class Completion(NamedTuple):
    """A completion read into messages, or why it could not be."""

    messages: list[HarmonyMessage]
    error: str | None
    spelling: Spelling
    """How the completion was spelt: with special tokens, stripped of them, or a final
    message alone."""

    def channel(self, name: str) -> list[HarmonyMessage]:
        """The messages of one channel, in order."""
        return [m for m in self.messages if m.channel == name]


_HEADER = re.compile(r"^\s*(?P<channel>[A-Za-z_]+)\s*(?:<\|constrain\|>\s*(?P<type>\S+)\s*)?$")


def read_completion(text: str) -> Completion:
    """Reads a completion (the text after ``<|start|>assistant``) into its messages."""
    if any(token in text for token in SPECIAL):
        return _read_tokens(text)
    body = text.strip()
    if body.startswith(("{", "```")) or not body.startswith("analysis"):
        kind: Spelling = "final-only"
        if not body:
            return Completion([], "empty output", kind)
        return Completion([HarmonyMessage("final", body)], None, kind)
    at = body.rfind(STRIPPED_FINAL)
    if at < 0:
        return Completion(
            [HarmonyMessage("analysis", body[len("analysis") :])],
            "no final message: the output ends in the analysis channel (cut off by max_tokens?)",
            "stripped",
        )
    analysis = body[len("analysis") : at]
    final = body[at + len(STRIPPED_FINAL) :]
    return Completion(
        [HarmonyMessage("analysis", analysis), HarmonyMessage("final", final)], None, "stripped"
    )


def _read_tokens(text: str) -> Completion:
    messages: list[HarmonyMessage] = []
    rest = text.lstrip()
    if rest.startswith(f"{START}assistant"):  # a backend that echoes the opened turn
        rest = rest[len(f"{START}assistant") :]
    first = True
    while True:
        if not first:
            if not rest.strip():
                break
            if not rest.startswith(START):
                return Completion(
                    messages, f"unexpected text between messages: {rest[:40]!r}", "tokens"
                )
            role, sep, rest = rest[len(START) :].partition(CHANNEL)
            if not sep or role.strip() != "assistant":
                return Completion(
                    messages, f"a message from {role.strip()[:40]!r}, not the assistant", "tokens"
                )
        elif rest.startswith(CHANNEL):
            rest = rest[len(CHANNEL) :]
        else:
            return Completion(
                messages, f"the completion does not open a channel: {rest[:40]!r}", "tokens"
            )
        first = False
        header, sep, rest = rest.partition(MESSAGE)
        if not sep:
            return Completion(messages, "a message header without <|message|> (cut off?)", "tokens")
        if "to=" in header:
            return Completion(
                messages, f"a tool call ({header.strip()[:60]!r}), not a verdict", "tokens"
            )
        parsed = _HEADER.match(header)
        if parsed is None:
            return Completion(messages, f"unreadable message header: {header[:60]!r}", "tokens")
        ends = [(rest.find(t), t) for t in (END, RETURN, CALL) if t in rest]
        if not ends:  # the stop token was removed, or generation was cut off
            messages.append(HarmonyMessage(parsed.group("channel"), rest))
            break
        at, token = min(ends)
        content, rest = rest[:at], rest[at + len(token) :]
        if any(t in content for t in (START, CHANNEL, MESSAGE, CONSTRAIN)):
            return Completion(messages, "a special token inside a message", "tokens")
        messages.append(HarmonyMessage(parsed.group("channel"), content))
        if token == CALL:
            return Completion(messages, "the completion ends in a tool call", "tokens")
        if token == RETURN:
            if rest.strip():
                return Completion(messages, "text after <|return|>", "tokens")
            break
    return Completion(messages, None, "tokens")
