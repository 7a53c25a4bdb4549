"""The attack contract: how a base test case becomes an attack variant.

An attack derives one new :class:`~assay.engine.records.TestCase` from one base case and a seed.
There are two kinds:

* a :class:`TemplateAttack` renders a project-written template around the base prompt
  (:meth:`Attack.derive`);
* a :class:`RewriteAttack` (``needs_generator`` True) asks a generator LLM for part of the prompt:
  :meth:`RewriteAttack.build_request` builds the request, a backend generates, and
  :meth:`RewriteAttack.finish` checks the output and renders the row. A missing, empty, failed
  or unusable generation never fails the row: the attack falls back to its own templates and says
  why in ``meta["rewrite"]`` (``"generator"`` or ``"fallback:<reason>"``).

Every derived row has ``attack`` set to the attack's key, ``base_id`` set to the base case's
``test_id``, the base case's suite, language, risk, source and meta, no label and no response, and
these meta keys besides the base ones: ``attack_seed``, ``template`` (the id of the template used)
and ``attack_version`` (the version of the attack's templates). Its ``test_id`` is recomputed from
the new text.

Determinism: every choice an attack makes comes from a :class:`Chooser`, a SHA-256 of the base
``test_id``, the attack key, the seed and the purpose of the choice; never from Python's ``hash()``
or a global random state. The same (case, seed) gives the same row.

Languages: templates exist in English and Chinese. A Chinese case (``zh``, ``zh-CN``, ``zh-Hans``,
...) gets the Chinese templates; every other language gets the English ones.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from ..errors import InputError
from ..lang import lang_key
from ..records import TestCase
from ..requests import ChatMessage, GenerationRequest, SamplingParams

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(template: str, **values: str) -> str:
    """Fills ``{name}`` placeholders in one pass, so text put in is never re-read as a template.

    A base prompt that itself contains ``{request}`` or braces stays as it is.

    Raises:
        KeyError: The template names a placeholder that has no value.
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class Chooser:
    """Deterministic choices for one (base case, attack, seed), from SHA-256.

    Each choice names its purpose (``"template"``, ``"shift"``, ...), so adding a choice to an
    attack does not change the others.
    """

    def __init__(self, *key: str) -> None:
        """Keys the choices, usually with (test_id, attack key, seed)."""
        self._key = key

    def integer(self, purpose: str) -> int:
        """A 64-bit integer for ``purpose``."""
        payload = json.dumps([*self._key, purpose], ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(payload.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big")

    def index(self, n: int, purpose: str) -> int:
        """An index in ``range(n)`` for ``purpose``.

        Raises:
            ValueError: ``n`` is not positive.
        """
        if n < 1:
            raise ValueError(f"cannot choose among {n} options")
        return self.integer(purpose) % n

    def between(self, low: int, high: int, purpose: str) -> int:
        """An integer in ``[low, high]`` (both included) for ``purpose``."""
        return low + self.index(high - low + 1, purpose)

    def sample(self, n: int, k: int, purpose: str) -> list[int]:
        """``k`` distinct indices in ``range(n)``, in the order chosen (a partial shuffle)."""
        pool = list(range(n))
        picked: list[int] = []
        for i in range(min(k, n)):
            j = self.index(len(pool), f"{purpose}#{i}")
            picked.append(pool.pop(j))
        return picked


class Rendered(NamedTuple):
    """An attack prompt ready to become a row: its text, template id and extra meta."""

    text: str
    template: str
    meta: Mapping[str, Any] = {}


class RejectedOutput(Exception):
    """Raised by :meth:`RewriteAttack.compose` when a generated text cannot be used."""

    def __init__(self, reason: str) -> None:
        """Says why the output was rejected (it becomes ``fallback:<reason>``)."""
        super().__init__(reason)
        self.reason = reason


def pick(
    templates: Mapping[str, Sequence[str]], case: TestCase, chooser: Chooser, purpose: str
) -> tuple[str, str]:
    """Picks one of a language's templates: ``(template id, template)``.

    Template ids are ``<lang>-<index>``; languages without templates use English.
    """
    lang = lang_key(case.lang)
    if lang not in templates:
        lang = "en"
    options = templates[lang]
    i = chooser.index(len(options), purpose)
    return f"{lang}-{i}", options[i]


def check_base(case: TestCase) -> None:
    """Rejects a case that is already an attack row.

    Raises:
        InputError: ``case.attack`` is set.
    """
    if case.attack is not None:
        raise InputError(
            f"test {case.test_id} is already an attack row (attack {case.attack!r}); "
            "attacks derive from base prompts only"
        )


class Attack(abc.ABC):
    """One attack: a way to turn a base prompt into an adversarial variant.

    Subclasses set :attr:`name` (the attack key, e.g. ``goal_hijacking``) and :attr:`version`, and
    implement :meth:`derive`; most subclass :class:`TemplateAttack` or :class:`RewriteAttack`
    instead. Instances are cheap, stateless and picklable.
    """

    name: ClassVar[str] = ""
    """The attack key, in canonical form (lower case, underscores)."""
    version: ClassVar[str] = "1"
    """Version of the attack's templates; bump it when a template's text changes."""
    needs_generator: ClassVar[bool] = False
    """Whether the attack asks a generator LLM (see :class:`RewriteAttack`)."""

    @abc.abstractmethod
    def derive(self, case: TestCase, seed: int) -> TestCase:
        """The attack variant of ``case`` for ``seed``, without a generator.

        Raises:
            InputError: ``case`` is already an attack row.
        """

    def chooser(self, case: TestCase, seed: int) -> Chooser:
        """The deterministic choices of this attack on ``case`` for ``seed``."""
        return Chooser(case.test_id, self.name, str(seed))

    def make_row(self, case: TestCase, seed: int, rendered: Rendered) -> TestCase:
        """The attack row for ``case``: the rendered text, linked to its base, with the meta."""
        meta = dict(case.meta)
        meta.update(rendered.meta)
        meta.update(attack_seed=seed, template=rendered.template, attack_version=self.version)
        return TestCase(
            suite=case.suite,
            text=rendered.text,
            lang=case.lang,
            risk=case.risk,
            attack=self.name,
            base_id=case.test_id,
            source=case.source,
            meta=meta,
        )

    def __repr__(self) -> str:
        """Shows the class."""
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        """Attacks are equal when they are the same class."""
        return type(self) is type(other)

    def __hash__(self) -> int:
        """Hashes the class."""
        return hash(type(self))


class TemplateAttack(Attack):
    """An attack that renders templates around the base prompt; no generator needed.

    Subclasses implement :meth:`render`.
    """

    def derive(self, case: TestCase, seed: int) -> TestCase:
        """Renders the attack prompt for ``case`` and ``seed`` into a new row.

        Raises:
            InputError: ``case`` is already an attack row.
        """
        check_base(case)
        return self.make_row(case, seed, self.render(case, self.chooser(case, seed)))

    @abc.abstractmethod
    def render(self, case: TestCase, chooser: Chooser) -> Rendered:
        """The attack prompt for ``case``, every choice made with ``chooser``."""


class SimpleTemplateAttack(TemplateAttack):
    """A template attack whose templates have one ``{request}`` placeholder."""

    templates: ClassVar[Mapping[str, Sequence[str]]] = {}
    """Per language (``en``, ``zh``), the templates to choose from."""

    def render(self, case: TestCase, chooser: Chooser) -> Rendered:
        """Fills a seed-chosen template of the case's language with the base prompt."""
        template_id, template = pick(self.templates, case, chooser, "template")
        return Rendered(fill(template, request=case.text), template_id)


class RewriteAttack(Attack):
    """An attack that asks a generator LLM for (part of) the prompt, with a template fallback.

    Subclasses implement :meth:`instruction` (what the generator is asked), :meth:`compose` (the
    prompt built from a generated text, or :class:`RejectedOutput`) and :meth:`fallback` (the
    prompt built from templates alone). The checks every output goes through first: not empty
    after stripping, and at most ``max_output_factor`` times the base prompt's length plus
    ``max_output_slack`` characters.
    """

    needs_generator: ClassVar[bool] = True
    max_tokens: ClassVar[int] = 512
    """``max_tokens`` of the generator request."""
    temperature: ClassVar[float] = 0.7
    """Sampling temperature of the generator request (its sampling seed comes from the seed)."""
    max_output_factor: ClassVar[int] = 8
    max_output_slack: ClassVar[int] = 2000

    def request_id(self, case: TestCase, seed: int) -> str:
        """The id of the generator request for ``case`` and ``seed``."""
        return f"{case.test_id}:{self.name}:{seed}"

    def build_request(self, case: TestCase, seed: int) -> GenerationRequest:
        """The request that asks the generator for its part of the attack on ``case``.

        Raises:
            InputError: ``case`` is already an attack row.
        """
        check_base(case)
        chooser = self.chooser(case, seed)
        return GenerationRequest(
            request_id=self.request_id(case, seed),
            messages=tuple(self.instruction(case, chooser)),
            sampling=SamplingParams(
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=0.95,
                seed=chooser.integer("sampling") % (1 << 31),
            ),
        )

    def finish(
        self, case: TestCase, seed: int, generated: str | None, error: str | None
    ) -> TestCase:
        """The attack row from the generator's answer, or from the fallback templates.

        Args:
            case: The base case.
            seed: The seed ``build_request`` was called with.
            generated: The generated text; None when there is none.
            error: Why generation failed, if it did (the text is then ignored).

        Raises:
            InputError: ``case`` is already an attack row.
        """
        check_base(case)
        chooser = self.chooser(case, seed)
        reason = self._check_output(case, generated, error)
        if reason is None and generated is not None:
            try:
                rendered = self.compose(case, chooser, generated.strip())
            except RejectedOutput as exc:
                reason = exc.reason
            else:
                return self.make_row(case, seed, _with_rewrite(rendered, "generator"))
        return self.fallback_row(case, seed, reason or "no output")

    def derive(self, case: TestCase, seed: int) -> TestCase:
        """The fallback row, for use without a generator (``meta["rewrite"]`` says so).

        Raises:
            InputError: ``case`` is already an attack row.
        """
        return self.fallback_row(case, seed, "no generator")

    def fallback_row(self, case: TestCase, seed: int, reason: str) -> TestCase:
        """The row built from the fallback templates, with ``meta["rewrite"]`` giving ``reason``.

        Raises:
            InputError: ``case`` is already an attack row.
        """
        check_base(case)
        rendered = self.fallback(case, self.chooser(case, seed))
        return self.make_row(case, seed, _with_rewrite(rendered, f"fallback:{reason}"))

    def max_output_chars(self, case: TestCase) -> int:
        """The longest generated text accepted for ``case``."""
        return self.max_output_factor * len(case.text) + self.max_output_slack

    def _check_output(self, case: TestCase, generated: str | None, error: str | None) -> str | None:
        if error is not None:
            return f"generator error: {_clip(error)}"
        if generated is None:
            return "no output"
        stripped = generated.strip()
        if not stripped:
            return "empty output"
        limit = self.max_output_chars(case)
        if len(stripped) > limit:
            return f"output too long ({len(stripped)} > {limit} chars)"
        return None

    @abc.abstractmethod
    def instruction(self, case: TestCase, chooser: Chooser) -> list[ChatMessage]:
        """The chat messages asking the generator for its part of the attack on ``case``."""

    @abc.abstractmethod
    def compose(self, case: TestCase, chooser: Chooser, generated: str) -> Rendered:
        """The attack prompt built from the generated text (already stripped).

        Raises:
            RejectedOutput: The text cannot be used (the row then uses the fallback).
        """

    @abc.abstractmethod
    def fallback(self, case: TestCase, chooser: Chooser) -> Rendered:
        """The attack prompt built from templates alone."""


def _with_rewrite(rendered: Rendered, how: str) -> Rendered:
    return rendered._replace(meta={**rendered.meta, "rewrite": how})


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
