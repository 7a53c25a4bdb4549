"""What a judge format is, in one record: its rendering contract, label tokens, policy, options
and the source of its published format (``assay judges list`` / ``assay judges show``)."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .base import JudgeItem, get_judge, judge_names


class JudgeCard(BaseModel):
    """One judge format, described."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Registry name.")
    summary: str = Field(description="First line of the format's documentation.")
    rendering: str = Field(description="How the prompt is rendered, in words.")
    rendering_kind: str = Field(description="model, plain or raw.")
    template: str | None = Field(default=None, description="The plain turn format, if any.")
    bos: bool | None = Field(default=None, description="Raw prompts: BOS first.")
    own_template_marker: str | None = Field(
        default=None, description="Text of the model's own moderation template, if it has one."
    )
    source: str = Field(description="The published reference of the prompt format.")
    labels: dict[str, dict[str, str]] = Field(
        description="Per prompt language: label token string -> the label it stands for."
    )
    assistant_prefix: str = Field(
        description="The teacher-forced start of the answer for an English response (the label "
        "tokens are read right after it)."
    )
    prompt_only: bool = Field(description="Whether it judges a prompt without a response.")
    max_tokens: int = Field(description="Default max_tokens of its requests.")
    policy: dict[str, str] = Field(description="The policy shown (name, source, published).")
    options: dict[str, dict[str, Any]] = Field(
        description="Option name -> default and description."
    )


def judge_card(name: str, **options: Any) -> JudgeCard:
    """The card of the judge format ``name`` built with ``options``.

    Raises:
        ConfigError: Unknown name or invalid options (as :func:`get_judge`).
    """
    judge = get_judge(name, **options)
    contract = judge.render_contract()
    doc = inspect.getdoc(type(judge)) or ""
    fields = type(judge).Options.model_fields
    return JudgeCard(
        name=name,
        summary=doc.split("\n\n", 1)[0].replace("\n", " "),
        rendering=contract.describe(),
        rendering_kind=contract.kind,
        template=contract.template,
        bos=contract.bos if contract.kind == "raw" else None,
        own_template_marker=contract.own_template_marker,
        source=contract.source,
        labels={
            lang: {token: str(label) for token, label in labels.items()}
            for lang, labels in judge.label_sets.items()
        },
        assistant_prefix=judge.assistant_prefix(JudgeItem(prompt="p", response="r")),
        prompt_only=judge.supports_prompt_only,
        max_tokens=judge.max_tokens,
        policy=judge.policy_info(),
        options={
            key: {"default": field.default, "description": field.description or ""}
            for key, field in fields.items()
        },
    )


def judge_cards() -> list[JudgeCard]:
    """The cards of every registered format (default options), by name."""
    return [judge_card(name) for name in judge_names()]


__all__ = ["JudgeCard", "judge_card", "judge_cards"]
