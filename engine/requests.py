"""Typed structs at the model boundary: what a backend is asked, and what it answers.

Judges (in engine) build :class:`GenerationRequest` objects; backends (in actors) turn a list of
them into the same number of :class:`GenerationResult` objects, in order. Nothing here imports a
model library.

Label probabilities: a request may name ``label_tokens`` (e.g. ``("safe", "unsafe")``). The backend
maps each label string to the first token of its tokenization (without special tokens) and returns
the log-probability of each of those tokens at the first generated position, i.e. right after the
rendered prompt plus ``assistant_prefix``, over the full vocabulary (no renormalisation). Judges
whose label is not the first output token put the fixed text before it in ``assistant_prefix``
(teacher forcing), so one prefill yields the risk score.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .records import FinishReason


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: str = Field(description="What they say.")


class SamplingParams(BaseModel):
    """Decoding parameters of one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(default=0, description="Sampling seed (None: nondeterministic).")
    stop: tuple[str, ...] = Field(default=(), description="Strings that end generation.")


class GenerationRequest(BaseModel):
    """One request to a model: chat messages (rendered with the model's chat template) or a raw
    prompt, an optional forced start of the answer, and optional label tokens to score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(description="Caller's id, echoed in the result.")
    messages: tuple[ChatMessage, ...] = Field(
        default=(), description="Chat turns, rendered with the model's chat template."
    )
    prompt: str | None = Field(
        default=None, description="Raw prompt text used as is (instead of messages)."
    )
    assistant_prefix: str = Field(
        default="",
        description="Text appended after the rendered prompt (the start of the answer); "
        "generation continues it and the result's text does not repeat it.",
    )
    sampling: SamplingParams = Field(default_factory=SamplingParams, description="Decoding.")
    label_tokens: tuple[str, ...] = Field(
        default=(),
        description="Label strings whose first tokens' log-probabilities are wanted at the "
        "first generated position (each label's first token in context: after the rendered "
        "prompt and assistant prefix).",
    )
    template: str | None = Field(
        default=None,
        description="A built-in plain turn format (a name in assay.engine.judges.templates."
        "PLAIN_TEMPLATES) that renders ``messages`` instead of the model's own chat template: "
        "the judge format's rendering contract.",
    )
    add_bos: bool | None = Field(
        default=None,
        description="Raw prompts: True puts the tokenizer's BOS token first (exactly once, "
        "where the model has one), False none; None tokenizes as the tokenizer would any text.",
    )
    conversation: tuple[ChatMessage, ...] = Field(
        default=(),
        description="The raw conversation, for a model whose own chat template builds the "
        "moderation prompt (see ``own_template_marker``).",
    )
    own_template_marker: str | None = Field(
        default=None,
        description="When the model's own chat template holds this text, it renders "
        "``conversation`` instead of ``messages`` being rendered (guard models' own templates).",
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerationRequest:
        if bool(self.messages) == (self.prompt is not None):
            raise ValueError("a request needs exactly one of messages or prompt")
        if self.prompt is not None and (self.template or self.conversation):
            raise ValueError("a raw prompt has no chat template or conversation")
        if self.messages and self.add_bos is not None:
            raise ValueError("add_bos is for raw prompts; a chat template places BOS itself")
        if bool(self.conversation) != (self.own_template_marker is not None):
            raise ValueError("conversation and own_template_marker come together")
        return self


class GenerationResult(BaseModel):
    """A backend's answer to one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(description="The request answered.")
    text: str = Field(default="", description="Generated text (after the assistant prefix).")
    finish_reason: FinishReason = Field(default="stop", description="Why generation ended.")
    prompt_tokens: int | None = Field(default=None, description="Tokens in the rendered prompt.")
    output_tokens: int | None = Field(default=None, description="Tokens generated.")
    label_logprobs: dict[str, float] = Field(
        default_factory=dict, description="Label string -> log-probability of its first token."
    )
    latency_ms: float | None = Field(default=None, description="Wall time of the request.")
    error: str | None = Field(default=None, description="Why the request failed, if it did.")
