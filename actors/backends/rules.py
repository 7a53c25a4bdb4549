"""The ``rules`` backend: answers ``rule-match`` judge requests by rule, with no model.

Each request's raw prompt must be the JSON document the ``rule-match`` judge format builds
(:class:`~assay.engine.judges.rule_match.RuleInput`); the backend applies
:func:`~assay.engine.judges.rule_match.match` to its response and answers ``Label: safe|unsafe``
and ``Matched: {...}``, with the label log-probabilities ``safe`` -> log(1 - score) and
``unsafe`` -> log(score). A request in any other form (chat messages, another prompt, an
assistant prefix, label tokens other than ``safe``/``unsafe``) comes back with ``error`` set.

Configuration: ``backend: rules``; ``model`` is not read (write ``model: rules``). Sampling
parameters are not read either (the rule is deterministic). Options (``BackendSpec.options``):

- ``phrases``: a YAML file (any fsspec URL) that replaces the built-in phrase lists, with the
  keys ``refusal`` and ``compliance``, each mapping a language to a list of phrases::

      refusal: {en: ["I can't help with"], zh: ["我不能"]}
      compliance: {en: ["Step 1"], zh: ["首先"]}
"""

from __future__ import annotations

import time

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.engine.errors import ConfigError, InputError, StorageError
from assay.engine.io import Location
from assay.engine.judges.rule_match import DEFAULT_PHRASES, PhraseSet, RuleInput, match
from assay.engine.requests import GenerationRequest, GenerationResult
from assay.engine.yamlsafe import load_yaml, read_yaml_bytes

from .base import BackendSpec

_LABELS = frozenset({"safe", "unsafe"})


class RulesOptions(BaseModel):
    """Options of the rules backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phrases: str | None = Field(
        default=None,
        description="A YAML file with 'refusal' and 'compliance' lists per language, replacing "
        "the built-in lists (None: the built-in lists).",
    )


class RulesBackend:
    """Applies the rule-match rule to each request; see the module docstring."""

    def __init__(self, spec: BackendSpec):
        """Validates the options and reads the phrase file, if one is given.

        Raises:
            ConfigError: An unknown option, or a phrase file that is missing or malformed.
        """
        self.spec = spec
        try:
            self.options = RulesOptions.model_validate(spec.options)
        except ValidationError as exc:
            known = ", ".join(RulesOptions.model_fields)
            raise ConfigError(f"rules backend options ({known}): {exc}") from None
        path = self.options.phrases
        self.phrases = DEFAULT_PHRASES if path is None else _read_phrases(path)

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order."""
        return [self._one(req) for req in requests]

    def _one(self, req: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        doc = _read_request(req)
        if isinstance(doc, str):
            return GenerationResult(
                request_id=req.request_id,
                finish_reason="error",
                error=f"rules backend: {doc}",
                latency_ms=(time.perf_counter() - start) * 1000,
            )
        verdict = match(doc.response, doc.prompt, doc.lang, phrases=self.phrases)
        logprobs = verdict.label_logprobs()
        return GenerationResult(
            request_id=req.request_id,
            text=verdict.output(),
            finish_reason="stop",
            label_logprobs={label: logprobs[label] for label in req.label_tokens},
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    async def close(self) -> None:
        """Nothing to release."""


def _read_request(req: GenerationRequest) -> RuleInput | str:
    """The rule-match document of ``req``, or why it is not a rule-match request."""
    if req.prompt is None:
        return (
            "takes the raw prompt the rule-match judge format builds, not chat messages "
            "(use format: rule-match with backend: rules)"
        )
    if req.assistant_prefix:
        return "cannot continue an assistant prefix (the rule writes its whole answer)"
    unknown = sorted(set(req.label_tokens) - _LABELS)
    if unknown:
        return f"scores only the labels safe and unsafe, not {unknown}"
    try:
        return RuleInput.read(req.prompt)
    except InputError as exc:
        return str(exc)


def _read_phrases(url: str) -> PhraseSet:
    """The phrase lists of a YAML file.

    Raises:
        ConfigError: The file cannot be read, is not YAML, or does not hold two lists of
            phrases per language.
    """
    try:
        data = load_yaml(read_yaml_bytes(Location.parse(url), url, what="phrase file"), url)
    except ConfigError:
        raise  # over the YAML limits; the message names the file
    except yaml.YAMLError as exc:
        raise ConfigError(f"rules backend: phrase file {url} is not valid YAML: {exc}") from None
    except (OSError, ValueError, StorageError) as exc:
        raise ConfigError(f"rules backend: cannot read phrase file {url}: {exc}") from None
    try:
        return PhraseSet.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"rules backend: phrase file {url}: {problems}") from None


def create(spec: BackendSpec) -> RulesBackend:
    """Factory used by the backend registry."""
    return RulesBackend(spec)


__all__ = ["RulesBackend", "RulesOptions", "create"]
