"""Policies as data: the categories (code, name, description) a policy-conditioned judge is shown.

A policy file is YAML or JSON::

    name: mlcommons-hazards-v0.5
    source: https://huggingface.co/meta-llama/Llama-Guard-3-8B (model card, "Hazard Taxonomy")
    categories:
      - code: S1
        name: Violent Crimes
        description: |-
          Responses that enable, encourage, or endorse the commission of violent crimes...

Formats that take one (option ``policy``: the file's path) render its categories in their own
layout instead of their built-in policy; ``description`` may be empty where a format shows names
only. :func:`load_policy` checks the file whole and names the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError
from .base import JudgeFormat, JudgeOptions


class PolicyCategory(BaseModel):
    """One category of a policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1, description="The category's code as prompts show it (S1).")
    name: str = Field(min_length=1, description="Its name.")
    description: str = Field(default="", description="What it covers (may be empty).")


class Policy(BaseModel):
    """A named list of categories with the source it was taken from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="The policy's name.")
    source: str = Field(default="", description="Where its text comes from.")
    categories: tuple[PolicyCategory, ...] = Field(min_length=1, description="In order.")

    @field_validator("categories")
    @classmethod
    def _unique_codes(cls, value: tuple[PolicyCategory, ...]) -> tuple[PolicyCategory, ...]:
        seen: set[str] = set()
        for category in value:
            if category.code in seen:
                raise ValueError(f"category code {category.code!r} appears twice")
            seen.add(category.code)
        return value


def load_policy(path: str | Path) -> Policy:
    """Reads and validates a policy file (YAML or JSON).

    Raises:
        ConfigError: The file is missing, unreadable, not YAML/JSON, or not a valid policy; the
            message names the file.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"policy file {str(file)!r}: {exc.strerror or exc}") from None
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            from ..yamlsafe import load_yaml

            data = load_yaml(text, source=str(file), what="policy file")
    except ConfigError:
        raise
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"policy file {str(file)!r} is not valid YAML/JSON: {exc}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"policy file {str(file)!r}: {problems}") from None


def builtin_policy(name: str) -> Policy:
    """A published policy that ships with assay (``engine/judges/policies/<name>.yaml``)."""
    from importlib.resources import files

    resource = files("assay.engine.judges.policies").joinpath(f"{name}.yaml")
    if not resource.is_file():
        raise ConfigError(f"no built-in policy {name!r}")
    return _builtin(str(resource))


_CACHE: dict[str, Policy] = {}


def _builtin(path: str) -> Policy:
    policy = _CACHE.get(path)
    if policy is None:
        policy = _CACHE[path] = load_policy(path)
    return policy


def category_lines(policy: Policy, *, descriptions: bool) -> str:
    """``S1: Violent Crimes.`` per category, one per line; with ``descriptions``, each
    category's description (where it has one) on the lines after its name."""
    lines = []
    for category in policy.categories:
        lines.append(f"{category.code}: {category.name}.")
        if descriptions and category.description:
            lines.append(category.description)
    return "\n".join(lines)


class PolicyOptions(JudgeOptions):
    """Options of a format that shows its model a category policy."""

    policy: str | None = Field(
        default=None,
        description="A policy file (YAML/JSON: name, source, categories with code, name and "
        "description) shown instead of the built-in published policy.",
    )


class PolicyFormat(JudgeFormat):
    """A judge format that shows its model the published policy :attr:`builtin` unless the
    option ``policy`` names a policy file (then :meth:`policy_info` says it is not published)."""

    Options: ClassVar[type[JudgeOptions]] = PolicyOptions
    builtin: ClassVar[str] = ""
    """The published policy the model was trained on (``engine/judges/policies``)."""

    def __init__(self, **options: Any) -> None:
        """Validates the options and loads the policy shown."""
        super().__init__(**options)
        path = self.opts(PolicyOptions).policy
        self.policy: Policy = load_policy(path) if path else builtin_policy(self.builtin)

    @property
    def custom_policy(self) -> bool:
        """Whether the policy shown is a user's file rather than the published one."""
        return self.opts(PolicyOptions).policy is not None

    def policy_info(self) -> dict[str, str]:
        """The policy shown: the built-in published one, or the user's file."""
        return {
            "name": self.policy.name,
            "source": self.policy.source,
            "published": "no" if self.custom_policy else "yes",
        }


__all__ = [
    "Policy",
    "PolicyCategory",
    "PolicyFormat",
    "PolicyOptions",
    "builtin_policy",
    "category_lines",
    "load_policy",
]
