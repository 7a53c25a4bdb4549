"""Persisted records: test cases, generations, verdicts and the joined result rows.

Each record is a frozen pydantic model with a description on every field. Its Arrow schema
is derived from the model (never inferred from rows), carries those descriptions as field
metadata, and is stamped with :data:`SCHEMA_VERSION` and the record's name; the stamp lands in
every Parquet file's key-value metadata, so a file can be identified with plain pyarrow::

    pq.read_schema(path).metadata[b"assay.schema_version"]

Dict-valued fields (``meta``) are stored as JSON text, so the files stay readable by any Parquet
reader (DuckDB: ``meta->>'from_traceid'``).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
import types
import typing
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = "1"
"""Version of the record schemas; bumped on any incompatible change to a field."""

SCHEMA_VERSION_KEY = b"assay.schema_version"
RECORD_KEY = b"assay.record"

Label = Literal["safe", "unsafe", "controversial"]
"""A safety label; ``controversial`` is Qwen3Guard's and ShieldLM's third class.

(Aegis calls it Needs Caution.)
"""

FinishReason = Literal["stop", "length", "error", "abort", "given"]
"""Why a generation ended; ``given`` marks a response that came with the test case."""

_LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$")

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """Base of the persisted records: Arrow schema derivation and row conversion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    RECORD_NAME: ClassVar[str] = "Record"

    @classmethod
    def arrow_schema(cls) -> pa.Schema:
        """The explicit Arrow schema of this record, stamped with the schema version."""
        return _schema_for(cls)

    def to_row(self) -> dict[str, Any]:
        """This record as a dict of Arrow-ready values (dicts encoded as JSON text)."""
        row = self.model_dump()
        for name in _json_fields(type(self)):
            row[name] = json.dumps(row[name], ensure_ascii=False, sort_keys=True)
        return row

    @classmethod
    def from_row(cls: type[R], row: dict[str, Any]) -> R:
        """Builds a record from a row read back from Arrow (the inverse of :meth:`to_row`)."""
        data = dict(row)
        for name in _json_fields(cls):
            value = data.get(name)
            if isinstance(value, str):
                data[name] = json.loads(value)
        return cls.model_validate(data)

    @classmethod
    def to_table(cls: type[R], records: Iterable[R]) -> pa.Table:
        """An Arrow table of the records, with this record's schema."""
        return pa.Table.from_pylist([r.to_row() for r in records], schema=cls.arrow_schema())

    @classmethod
    def from_table(cls: type[R], table: pa.Table | pa.RecordBatch) -> list[R]:
        """Records from an Arrow table or batch with (at least) this record's columns."""
        names = [n for n in cls.model_fields if n in table.schema.names]
        return [cls.from_row(row) for row in table.select(names).to_pylist()]


def content_id(*parts: str | None) -> str:
    """A stable 128-bit hex id of the given strings (None and "" are distinct)."""
    payload = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def make_test_id(
    text: str,
    lang: str,
    risk: str | None,
    attack: str | None,
    response: str | None = None,
) -> str:
    """The content hash that identifies a test: text (NFC), lang, risk and attack.

    A test case that carries a fixed response to judge (label-level datasets) includes it, so two
    responses to one prompt are two tests; for ordinary prompts the id depends on the four fields
    alone, and importing the same prompt twice gives the same id.
    """
    parts: list[str | None] = [unicodedata.normalize("NFC", text), lang, risk, attack]
    if response is not None:
        parts.append(unicodedata.normalize("NFC", response))
    return content_id(*parts)


class TestCase(Record):
    """One test prompt of a suite."""

    __test__ = False  # not a pytest test class
    RECORD_NAME: ClassVar[str] = "TestCase"

    test_id: str = Field(
        default="",
        description="Stable content hash of (text, lang, risk, attack[, response]); "
        "computed when not given.",
    )
    suite: str = Field(default="", description="Name of the suite the test belongs to.")
    text: str = Field(description="The prompt sent to the model under test.", min_length=1)
    lang: str = Field(description="Language of the prompt, a BCP-47 tag such as 'en' or 'zh'.")
    risk: str | None = Field(
        default=None,
        description="Risk as a taxonomy path of up to 4 levels, 'L1/L2[/L3[/L4]]' "
        "(S-Eval keys); None for a prompt without a risk (a benign control).",
    )
    attack: str | None = Field(
        default=None,
        description="Key of the attack that derived this prompt; None for base prompts.",
    )
    base_id: str | None = Field(
        default=None,
        description="test_id of the base prompt this attack was derived from, if known.",
    )
    response: str | None = Field(
        default=None,
        description="A fixed response to judge instead of asking the targets (label-level "
        "datasets such as SAFETY-J or Aegis 2.0); None for ordinary prompts.",
    )
    label: Label | None = Field(
        default=None,
        description="The source's human label: of the response when one is given, "
        "else of the prompt.",
    )
    source: str = Field(
        default="", description="Where the test came from, e.g. 's-eval:file.jsonl'."
    )
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="Source-specific extras (stored as JSON text), e.g. S-Eval's from_traceid.",
    )

    @field_validator("lang")
    @classmethod
    def _check_lang(cls, value: str) -> str:
        if not _LANG_RE.match(value):
            raise ValueError(f"not a BCP-47 language tag: {value!r}")
        return value

    @field_validator("text")
    @classmethod
    def _check_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only")
        return value

    @model_validator(mode="after")
    def _fill_test_id(self) -> TestCase:
        if not self.test_id:
            tid = make_test_id(self.text, self.lang, self.risk, self.attack, self.response)
            object.__setattr__(self, "test_id", tid)
        return self

    @property
    def l1(self) -> str | None:
        """The first level of the risk path."""
        return self.risk.split("/", 1)[0] if self.risk else None


class Generation(Record):
    """A target model's answer to one test case."""

    RECORD_NAME: ClassVar[str] = "Generation"

    test_id: str = Field(description="The test case answered.")
    target: str = Field(description="Name of the target model, as in the run config.")
    params_hash: str = Field(
        default="", description="Hash of the target's model and sampling parameters."
    )
    response: str | None = Field(default=None, description="The answer text; None on error.")
    finish_reason: FinishReason = Field(default="stop", description="Why generation ended.")
    prompt_tokens: int | None = Field(default=None, ge=0, description="Tokens in the prompt.")
    output_tokens: int | None = Field(default=None, ge=0, description="Tokens generated.")
    latency_ms: float | None = Field(default=None, ge=0, description="Wall time of the request.")
    error: str | None = Field(default=None, description="Why the generation failed, if it did.")


class Verdict(Record):
    """A judge's verdict on one (test case, response) pair."""

    RECORD_NAME: ClassVar[str] = "Verdict"

    test_id: str = Field(description="The test case judged.")
    target: str = Field(description="The target whose response was judged.")
    judge: str = Field(description="Name of the judge, as in the run config.")
    label: Label | None = Field(
        default=None, description="The judge's label; None when its output could not be parsed."
    )
    risk_score: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Probability that the response is unsafe, from the judge's label-token "
        "probabilities where it has them.",
    )
    risk_tags: list[str] = Field(
        default_factory=list, description="Risk categories the judge named, mapped to the taxonomy."
    )
    critique: str | None = Field(default=None, description="The judge's written analysis.")
    raw: str | None = Field(default=None, description="The judge's full output, verbatim.")
    parse_ok: bool = Field(default=True, description="Whether the judge's output could be parsed.")
    latency_ms: float | None = Field(default=None, ge=0, description="Wall time of the judge call.")
    error: str | None = Field(default=None, description="Why judging failed, if it did.")


class ResultRow(Record):
    """The joined row written to storage, keyed by (run_id, test_id, target, judge)."""

    RECORD_NAME: ClassVar[str] = "ResultRow"

    run_id: str = Field(description="The run that produced this row.")
    test_id: str = Field(description="TestCase.test_id.")
    suite: str = Field(default="", description="TestCase.suite.")
    text: str = Field(description="TestCase.text, the prompt.")
    lang: str = Field(description="TestCase.lang.")
    risk: str | None = Field(default=None, description="TestCase.risk.")
    attack: str | None = Field(default=None, description="TestCase.attack.")
    base_id: str | None = Field(default=None, description="TestCase.base_id.")
    expected_label: Label | None = Field(default=None, description="TestCase.label.")
    target: str = Field(description="Generation.target.")
    params_hash: str = Field(default="", description="Generation.params_hash.")
    response: str | None = Field(default=None, description="Generation.response.")
    finish_reason: FinishReason = Field(default="stop", description="Generation.finish_reason.")
    prompt_tokens: int | None = Field(default=None, description="Generation.prompt_tokens.")
    output_tokens: int | None = Field(default=None, description="Generation.output_tokens.")
    generation_latency_ms: float | None = Field(default=None, description="Generation.latency_ms.")
    generation_error: str | None = Field(default=None, description="Generation.error.")
    judge: str = Field(description="Verdict.judge.")
    label: Label | None = Field(default=None, description="Verdict.label.")
    risk_score: float | None = Field(default=None, description="Verdict.risk_score.")
    risk_tags: list[str] = Field(default_factory=list, description="Verdict.risk_tags.")
    critique: str | None = Field(default=None, description="Verdict.critique.")
    raw: str | None = Field(default=None, description="Verdict.raw.")
    parse_ok: bool = Field(default=True, description="Verdict.parse_ok.")
    judge_latency_ms: float | None = Field(default=None, description="Verdict.latency_ms.")
    judge_error: str | None = Field(default=None, description="Verdict.error.")

    @classmethod
    def join(
        cls, run_id: str, case: TestCase, generation: Generation, verdict: Verdict
    ) -> ResultRow:
        """Joins a test case, its generation and one verdict on it."""
        if not (case.test_id == generation.test_id == verdict.test_id):
            raise ValueError(
                f"cannot join rows of different tests: {case.test_id}, "
                f"{generation.test_id}, {verdict.test_id}"
            )
        if generation.target != verdict.target:
            raise ValueError(
                f"cannot join a generation of {generation.target!r} with a verdict on "
                f"{verdict.target!r}"
            )
        return cls(
            run_id=run_id,
            test_id=case.test_id,
            suite=case.suite,
            text=case.text,
            lang=case.lang,
            risk=case.risk,
            attack=case.attack,
            base_id=case.base_id,
            expected_label=case.label,
            target=generation.target,
            params_hash=generation.params_hash,
            response=generation.response,
            finish_reason=generation.finish_reason,
            prompt_tokens=generation.prompt_tokens,
            output_tokens=generation.output_tokens,
            generation_latency_ms=generation.latency_ms,
            generation_error=generation.error,
            judge=verdict.judge,
            label=verdict.label,
            risk_score=verdict.risk_score,
            risk_tags=list(verdict.risk_tags),
            critique=verdict.critique,
            raw=verdict.raw,
            parse_ok=verdict.parse_ok,
            judge_latency_ms=verdict.latency_ms,
            judge_error=verdict.error,
        )


RECORD_TYPES: dict[str, type[Record]] = {
    c.RECORD_NAME: c for c in (TestCase, Generation, Verdict, ResultRow)
}


def schema_version_of(schema: pa.Schema) -> tuple[str | None, str | None]:
    """The (record name, schema version) stamped on a schema, or Nones if absent."""
    meta = schema.metadata or {}
    record = meta.get(RECORD_KEY)
    version = meta.get(SCHEMA_VERSION_KEY)
    return (
        record.decode() if record is not None else None,
        version.decode() if version is not None else None,
    )


def conform(table: pa.Table, record: type[Record]) -> pa.Table:
    """Casts a table read from storage to ``record``'s schema (column order and types)."""
    schema = record.arrow_schema()
    missing = [n for n in schema.names if n not in table.schema.names]
    if missing:
        raise ValueError(f"not a {record.RECORD_NAME} table: missing columns {missing}")
    return table.select(schema.names).cast(schema)


# -- Arrow schema derivation ------------------------------------------------------------------


@functools.cache
def _schema_for(cls: type[Record]) -> pa.Schema:
    fields = []
    for name, info in cls.model_fields.items():
        arrow_type, nullable = _arrow_type(info.annotation)
        meta = {"description": info.description or ""}
        fields.append(pa.field(name, arrow_type, nullable=nullable, metadata=meta))
    return pa.schema(
        fields,
        metadata={
            SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode(),
            RECORD_KEY: cls.RECORD_NAME.encode(),
        },
    )


@functools.cache
def _json_fields(cls: type[Record]) -> tuple[str, ...]:
    return tuple(
        name
        for name, info in cls.model_fields.items()
        if typing.get_origin(_strip_optional(info.annotation)[0]) is dict
    )


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        raise TypeError(f"unions other than Optional are not storable: {annotation}")
    return annotation, False


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    inner, nullable = _strip_optional(annotation)
    origin = typing.get_origin(inner)
    scalar: dict[Any, pa.DataType] = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
    }
    if inner in scalar:
        return scalar[inner], nullable
    if origin is Literal:
        return pa.string(), nullable
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return pa.string(), nullable
    if origin in (list, tuple, Sequence):
        (item, *_rest) = typing.get_args(inner)
        item_type, _ = _arrow_type(item)
        return pa.list_(item_type), nullable
    if origin is dict:
        return pa.string(), nullable  # JSON text
    raise TypeError(f"no Arrow type for annotation {annotation!r}")
