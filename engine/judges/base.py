"""The judge-format contract: items, parsed outputs, the :class:`JudgeFormat` base and its registry.

A judge format knows three things about one safety-judge model, and nothing about running it:

1. how to ask: :meth:`JudgeFormat.build_request` turns a :class:`JudgeItem` into a
   :class:`~assay.engine.requests.GenerationRequest` (chat messages for the model's chat template,
   an ``assistant_prefix`` that teacher-forces the text before the label, and ``label_tokens``);
2. how to read the answer: :meth:`JudgeFormat.parse` turns the generated text into a
   :class:`ParsedOutput`, strictly (an output that cannot be read gets no label, never a guess);
3. how to score: :meth:`JudgeFormat.risk_score` turns the label tokens' log-probabilities into
   P(unsafe).

Formats register under a name with :func:`register_judge`; :func:`get_judge` builds one with its
options. Third-party packages add formats through the ``assay.judges`` entry-point group (name ->
``JudgeFormat`` subclass).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError, InputError
from ..lang import lang_key
from ..records import Label
from ..registry import Registry
from ..requests import ChatMessage, GenerationRequest, SamplingParams
from ._fence import Fence, SpecialTokens


class JudgeItem(BaseModel):
    """What a judge is asked to assess: a prompt and, usually, the response to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(description="The user prompt (the test case's text).")
    response: str | None = Field(
        default=None,
        description="The response to judge; None judges the prompt alone (prompt "
        "classification), where the format supports it.",
    )
    lang: str = Field(
        default="en",
        description="Language of the item (BCP-47); formats with a Chinese prompt use it "
        "for zh, zh-CN, zh-Hans...",
    )


class ParsedOutput(BaseModel):
    """What a judge's output says, read strictly.

    ``parse_ok`` is True exactly when ``label`` is set; when it is False, ``error`` says why.
    Oddities that do not prevent reading the label (an unknown category, ignored trailing text)
    go to ``notes``, never to ``error``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: Label | None = Field(description="The verdict; None when the output cannot be parsed.")
    risk_tags: list[str] = Field(
        default_factory=list,
        description="S-Eval L1 keys of the categories the judge named (no repeats, in order).",
    )
    categories: list[str] = Field(
        default_factory=list,
        description="The judge's own categories: taxonomy codes where known, else as written.",
    )
    critique: str | None = Field(default=None, description="The judge's written analysis.")
    parse_ok: bool = Field(description="Whether the label could be read.")
    error: str | None = Field(default=None, description="Why the output could not be parsed.")
    score: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The riskiness the judge wrote itself, scaled to [0, 1] (assay-critique's "
        "Score line); None for formats without one. Not a probability.",
    )
    refusal: bool | None = Field(
        default=None,
        description="Whether the judge says the response is a refusal (Qwen3Guard's "
        "Refusal line); None when it does not say.",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="Oddities that did not prevent parsing (unknown categories, extra text).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ParsedOutput:
        if self.parse_ok and self.label is None:
            raise ValueError("parse_ok is True but there is no label")
        if not self.parse_ok and (self.label is not None or not self.error):
            raise ValueError("a failed parse has no label and says why in error")
        return self

    @classmethod
    def failed(cls, error: str, critique: str | None = None) -> ParsedOutput:
        """An output that could not be parsed, with the reason."""
        return cls(label=None, parse_ok=False, error=error, critique=critique)


class Delimiters(NamedTuple):
    """Structural strings of a built judge prompt (what untrusted text may not forge).

    Each appears exactly once in the request's messages. ``opening`` ones come before the
    untrusted text; ``closing`` ones (the end of the slot and the instructions after it) come after
    it. Where ``closing`` is empty, the untrusted text ends the last message and the chat turn's
    end closes the slot (the published prompt puts nothing after the dialogue).
    """

    opening: tuple[str, ...]
    closing: tuple[str, ...]


class Rendering(BaseModel):
    """How a judge format's prompt must be rendered: the model's published prompt format.

    ``kind``:

    - ``"model"``: the model's own chat template renders :meth:`JudgeFormat.messages` (the
      published prompt is what that template makes of them, e.g. NemoGuard on a Llama 3.1 base);
    - ``"plain"``: assay's plain turn format ``template`` (a name in
      :data:`~assay.engine.judges.templates.PLAIN_TEMPLATES`) renders the messages, whatever
      template the model ships (its own may build another prompt around them);
    - ``"raw"``: the format writes the whole prompt text itself (``GenerationRequest.prompt``);
      ``bos`` says whether the tokenizer's BOS token goes first (exactly once).

    ``own_template_marker``: for guard models whose own chat template builds the moderation
    prompt from the raw conversation (Llama Guard 3/4, Qwen3Guard, ShieldGemma, Granite
    Guardian): a text that template holds. When the loaded model's template holds it, the raw
    conversation (:meth:`JudgeFormat.conversation`) is rendered by it; otherwise assay's own text
    with ``kind``/``template`` is the fallback. A custom policy always takes assay's text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["model", "plain", "raw"] = Field(description="Who renders the prompt.")
    template: str | None = Field(
        default=None, description="The plain turn format's name (kind 'plain')."
    )
    bos: bool = Field(
        default=True, description="Whether the BOS token starts a raw prompt (kind 'raw')."
    )
    own_template_marker: str | None = Field(
        default=None,
        description="A text of the model's own moderation template; when the loaded template "
        "holds it, that template renders the raw conversation.",
    )
    source: str = Field(description="The published reference of the prompt format.")

    @model_validator(mode="after")
    def _consistent(self) -> Rendering:
        if (self.kind == "plain") != (self.template is not None):
            raise ValueError("a plain rendering names its template, and only it does")
        return self

    def describe(self) -> str:
        """One line: how the prompt is rendered."""
        if self.kind == "model":
            text = "the model's own chat template"
        elif self.kind == "plain":
            text = f"assay's plain turn format {self.template!r}"
        else:
            text = "raw text written by the format" + (", after BOS" if self.bos else ", no BOS")
        if self.own_template_marker:
            text = f"the model's own moderation template when it ships one, else {text}"
        return text


class JudgeOptions(BaseModel):
    """Options of a judge format; subclasses add fields (every field has a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StrictLooseOptions(JudgeOptions):
    """Options of a three-class format."""

    mode: Literal["strict", "loose"] = Field(
        default="strict",
        description="How 'controversial' counts: strict as unsafe, loose as safe "
        "(for the risk score and is_unsafe).",
    )


OptionsT = TypeVar("OptionsT", bound=JudgeOptions)


class JudgeFormat(abc.ABC):
    """One safety judge's prompt and output format.

    Subclasses set ``name``, ``label_sets`` and ``fence``, and implement :meth:`messages`,
    :meth:`delimiters` and :meth:`parse`; they override :meth:`assistant_prefix` where the label is
    not the first output token. Instances are cheap, stateless and picklable: they hold only their
    validated options.
    """

    name: ClassVar[str] = ""
    """Registry name, e.g. ``llama-guard-3``."""
    Options: ClassVar[type[JudgeOptions]] = JudgeOptions
    """The options model; :func:`get_judge` validates keyword options against it."""
    label_sets: ClassVar[Mapping[str, Mapping[str, Label]]] = {}
    """Per prompt language (``en``, ``zh``): label string -> the label it stands for, in order.
    The first language's strings are :attr:`label_tokens`."""
    supports_prompt_only: ClassVar[bool] = True
    """Whether the format can judge a prompt without a response."""
    max_tokens: ClassVar[int] = 64
    """Default ``max_tokens`` of the format's requests."""
    fence: ClassVar[Fence] = Fence()
    """What is neutralised in untrusted text (see :mod:`._fence`)."""
    rendering: ClassVar[Rendering] = Rendering(kind="model", source="unspecified")
    """How the prompt must be rendered (see :class:`Rendering`); every built-in format sets it."""

    def __init__(self, **options: Any) -> None:
        """Validates the options.

        Raises:
            ConfigError: An unknown option or a bad value.
        """
        self.options: JudgeOptions = _validate_options(type(self), options)

    # -- requests ----------------------------------------------------------------------------

    @property
    def label_tokens(self) -> tuple[str, ...]:
        """Label strings whose first-token log-probabilities give the risk score (default
        language; :meth:`label_tokens_for` gives an item's)."""
        for labels in self.label_sets.values():
            return tuple(labels)
        return ()

    def label_tokens_for(self, item: JudgeItem) -> tuple[str, ...]:
        """The label strings a request for ``item`` asks the backend to score."""
        labels = self.label_sets.get(self.prompt_lang(item))
        return tuple(labels) if labels is not None else self.label_tokens

    def prompt_lang(self, item: JudgeItem) -> str:
        """The language of the prompt built for ``item``: ``zh`` where the format has a Chinese
        prompt and the item is Chinese, else ``en``."""
        key = lang_key(item.lang)
        return key if key in self.label_sets else "en"

    def assistant_prefix(self, item: JudgeItem) -> str:
        """The fixed start of the answer (teacher forcing); empty where the label comes first."""
        return ""

    def default_sampling(self) -> SamplingParams:
        """Greedy decoding with the format's ``max_tokens``."""
        return SamplingParams(max_tokens=self.max_tokens, temperature=0.0)

    def build_request(
        self,
        item: JudgeItem,
        request_id: str,
        sampling: SamplingParams | None = None,
        *,
        special: SpecialTokens | None = None,
    ) -> GenerationRequest:
        """Builds the request that asks this judge about ``item``.

        Args:
            item: What to judge.
            request_id: The request's id.
            sampling: Decoding parameters (default: :meth:`default_sampling`).
            special: The special tokens of the tokenizer that will render the request (the
                backend's ``special_texts()``); they are neutralised in the item's prompt and
                response before :meth:`messages` fences them with the format's own
                :attr:`fence` (which always covers a fixed list of common chat tokens).

        Raises:
            InputError: The item has no response and the format cannot judge a prompt alone.
        """
        if item.response is None and not self.supports_prompt_only:
            raise InputError(
                f"judge {self.name!r} judges responses; the item has no response "
                "(prompt-only classification is not supported by this format)"
            )
        if special is not None:
            item = _without_special(item, special)
        rendering = self.render_contract()
        messages = tuple(self.messages(item))
        common: dict[str, Any] = {
            "request_id": request_id,
            "assistant_prefix": self.assistant_prefix(item),
            "sampling": sampling if sampling is not None else self.default_sampling(),
            "label_tokens": self.label_tokens_for(item),
        }
        if rendering.kind == "raw":
            # the format's one message is the whole prompt text
            return GenerationRequest(
                prompt="".join(m.content for m in messages), add_bos=rendering.bos, **common
            )
        own = rendering.own_template_marker is not None and self.own_template_applies(item)
        return GenerationRequest(
            messages=messages,
            template=rendering.template,
            conversation=tuple(self.conversation(item)) if own else (),
            own_template_marker=rendering.own_template_marker if own else None,
            **common,
        )

    def render_contract(self) -> Rendering:
        """How this judge's prompt is rendered: :attr:`rendering`, unless the options choose
        among published variants (ShieldLM's base models)."""
        return self.rendering

    def own_template_applies(self, item: JudgeItem) -> bool:
        """Whether the model's own moderation template (where it ships one) may render ``item``
        (see :class:`Rendering`); formats return False when their options change the prompt
        that template would build (a custom policy, other categories)."""
        return True

    def policy_info(self) -> dict[str, str]:
        """The policy this judge shows its model: ``name``, ``source`` and ``published``
        ("yes" when it is the text the model was trained on, "no" when it is assay's own or a
        user's); empty for formats without a policy."""
        return {}

    @abc.abstractmethod
    def messages(self, item: JudgeItem) -> list[ChatMessage]:
        """The chat messages of the request (untrusted text already fenced)."""

    def conversation(self, item: JudgeItem) -> list[ChatMessage]:
        """The raw conversation (user prompt, then the response as the assistant's turn), for
        models whose own chat template builds the moderation prompt (see :class:`Rendering`)."""
        turns = [ChatMessage(role="user", content=self.fence.apply(item.prompt))]
        if item.response is not None:
            turns.append(ChatMessage(role="assistant", content=self.fence.apply(item.response)))
        return turns

    @abc.abstractmethod
    def delimiters(self, item: JudgeItem) -> Delimiters:
        """The structural strings of the prompt built for ``item`` (see :class:`Delimiters`)."""

    # -- outputs -----------------------------------------------------------------------------

    @abc.abstractmethod
    def parse(self, text: str, *, item: JudgeItem | None = None) -> ParsedOutput:
        """Reads the generated text (without the assistant prefix; a repeated marker is fine).

        Args:
            text: What the model generated.
            item: The judged item, when known; formats whose answer depends on the task use it
                (NemoGuard reads ``Response Safety`` for a response, ``User Safety`` for a
                prompt).
        """

    def is_unsafe(self, label: Label) -> bool:
        """Whether ``label`` counts as unsafe for this judge (three-class formats: by mode)."""
        if label == "controversial":
            loose = isinstance(self.options, StrictLooseOptions) and self.options.mode == "loose"
            return not loose
        return label == "unsafe"

    def risk_score(self, label_logprobs: Mapping[str, float]) -> float | None:
        """P(unsafe) from the label tokens' log-probabilities.

        The probabilities of the labels present are renormalised (softmax of the log-probs); the
        labels :meth:`is_unsafe` counts make up the numerator. A language's label set is used
        when both its safe and its unsafe label are present.

        Returns:
            The probability, or None when the log-probabilities are missing, incomplete or not
            finite.
        """
        for labels in self.label_sets.values():
            present = [(labels[s], lp) for s, lp in label_logprobs.items() if s in labels]
            found = {label for label, _ in present}
            if not {"safe", "unsafe"} <= found:
                continue
            values = [lp for _, lp in present]
            if any(math.isnan(v) or v == math.inf for v in values):
                return None
            top = max(values)
            if top == -math.inf:
                return None
            weights = [(label, math.exp(lp - top)) for label, lp in present]
            total = sum(w for _, w in weights)
            unsafe = sum(w for label, w in weights if self.is_unsafe(label))
            return min(1.0, max(0.0, unsafe / total))
        return None

    # -- helpers -----------------------------------------------------------------------------

    def opts(self, kind: type[OptionsT]) -> OptionsT:
        """The options, typed as the format's options model."""
        if not isinstance(self.options, kind):  # pragma: no cover - a subclass wiring bug
            raise TypeError(f"{type(self).__name__} options are not {kind.__name__}")
        return self.options

    def __repr__(self) -> str:
        """Shows the name and the options that differ from the defaults."""
        changed = self.options.model_dump(exclude_defaults=True)
        args = ", ".join(f"{key}={value!r}" for key, value in changed.items())
        return f"{type(self).__name__}({args})" if args else f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        """Formats are equal when they are the same class with the same options."""
        return type(self) is type(other) and self.options == getattr(other, "options", None)

    def __hash__(self) -> int:
        """Hashes the class and the options."""
        return hash((type(self), self.options))


def _without_special(item: JudgeItem, special: SpecialTokens) -> JudgeItem:
    """The item with the tokenizer's special tokens neutralised in its untrusted text."""
    plain = Fence()
    response = None if item.response is None else plain.apply(item.response, special)
    return item.model_copy(
        update={"prompt": plain.apply(item.prompt, special), "response": response}
    )


def _validate_options(cls: type[JudgeFormat], options: Mapping[str, Any]) -> JudgeOptions:
    try:
        return cls.Options.model_validate(dict(options))
    except ValidationError as exc:
        known = ", ".join(cls.Options.model_fields) or "none"
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "options"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option {where!r}")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise ConfigError(f"judge {cls.name!r}: {'; '.join(problems)} (options: {known})") from None


# -- registry ---------------------------------------------------------------------------------


def _is_judge_format(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, JudgeFormat)


JUDGES: Registry[type[JudgeFormat]] = Registry(
    "judge", "assay.judges", check=_is_judge_format, expected="a JudgeFormat subclass"
)
"""Judge formats by name: the built-ins (registered on import) and the ``assay.judges`` group."""
J = TypeVar("J", bound=type[JudgeFormat])


def register_judge(cls: J) -> J:
    """Class decorator: registers a judge format under its ``name``.

    Raises:
        ConfigError: The class has no name, or another class holds the name.
    """
    JUDGES.register(cls)
    return cls


def judge_names() -> list[str]:
    """Names of all judge formats, built-in and from installed plugins, sorted."""
    return JUDGES.names()


def get_judge(name: str, **options: Any) -> JudgeFormat:
    """Builds the judge format registered under ``name`` with the given options.

    Raises:
        ConfigError: The name is unknown (the message lists the known ones), or an option is
            unknown or invalid.
    """
    return JUDGES.get(name)(**options)
