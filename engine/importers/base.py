"""The importer contract, its registry, and the checks every imported row goes through."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..attacks import known_attacks, normalize_attack
from ..config import error_message
from ..io import StorageOptions
from ..records import Label, TestCase
from ..registry import Registry
from ..taxonomy import RiskTree, UnknownRiskError, get_taxonomy


class ImportConfig(BaseModel):
    """Everything an import needs; the CLI's ``assay import`` builds one of these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(
        description="Importer name: s-eval, aegis1, aegis2, safety-j, harmbench, "
        "jsonl, csv, parquet (or one registered by a plugin)."
    )
    source: str = Field(description="File, folder, glob or zip archive, as a path or fsspec URL.")
    output: str = Field(description="URL of the suite folder to write.")
    name: str | None = Field(default=None, description="Suite name (default: the output's name).")
    on_error: Literal["fail", "skip"] = Field(
        default="fail",
        description="fail: any bad row fails the import and nothing is written; skip: bad rows "
        "go to the rejects file next to the output and the rest is imported.",
    )
    max_chars: int = Field(
        default=32_000,
        ge=1,
        description="Longest prompt (and fixed response) accepted, in characters.",
    )
    lang: str | None = Field(
        default=None,
        description="Language of rows that do not say (for s-eval and safety-j the file name or "
        "the script of the text is used when this is not given).",
    )
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Generic formats: TestCase field -> source column, e.g. {'text': 'question'}.",
    )
    taxonomy: str | None = Field(
        default=None, description="URL of a YAML extending the S-Eval taxonomy with L3/L4 nodes."
    )
    risk_taxonomy: str | None = Field(
        default=None,
        description="Generic formats: the risk column holds categories of this taxonomy (aegis, "
        "nemoguard, mlcommons, qwen3guard, harmbench); they are mapped onto S-Eval L1.",
    )
    extra_attacks: tuple[str, ...] = Field(
        default=(), description="Attack keys accepted besides the known ones."
    )
    overwrite: bool = Field(default=False, description="Replace a suite already at the output.")
    keep_duplicates: bool = Field(
        default=False,
        description="Import rows whose test_id an earlier row has (the same prompt, language, "
        "risk, attack and response) instead of skipping them, as datasets that count such "
        "rows do (SAFETY-J's BeaverTails). The n-th occurrence (n >= 2) gets the test_id "
        "content_id(<first test_id>, 'occurrence', n) and meta duplicate_of / occurrence.",
    )
    max_rejects: int = Field(
        default=10_000,
        ge=0,
        description="Most rows listed in the rejects file (every row is counted by reason in "
        "the report whatever this is).",
    )
    max_rejects_bytes: int = Field(
        default=32 << 20, ge=0, description="Most bytes written to the rejects file."
    )
    storage_options: StorageOptions = Field(
        default_factory=dict, description="fsspec options for the source and output."
    )
    rows_per_file: int = Field(default=100_000, ge=1, description="Rows per suite Parquet file.")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in importer_names():
            raise ValueError(f"unknown format {value!r}; known: {', '.join(importer_names())}")
        return value

    @property
    def max_record_bytes(self) -> int:
        """Longest source record read at all; longer ones are rejected unread."""
        # A character is at most 6 bytes as a JSON escape; allow a response and other fields.
        return 2 * 6 * self.max_chars + (1 << 20)


class RowError(Exception):
    """A source row that cannot become a test case; ``reason`` is shown to the user."""

    def __init__(self, reason: str):
        """Carries the reason."""
        super().__init__(reason)
        self.reason = reason


@dataclass
class RowContext:
    """What a converter knows besides the record itself."""

    config: ImportConfig
    tree: RiskTree
    file: str
    line: int
    file_lang: str | None


class Importer:
    """Turns records of one source format into test cases.

    Subclasses set ``name`` and implement :meth:`convert`; they may override :meth:`file_lang` to
    take the language from a file name.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, config: ImportConfig):
        """Keeps the config."""
        self.config = config

    def file_lang(self, file: str) -> str | None:
        """The language of every row of ``file``, if the format tells it by the file."""
        return None

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """One test case from one source record; raises :class:`RowError` for a bad record."""
        raise NotImplementedError


def _is_importer(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Importer)


# "format" is the word users see (``assay import --format``), so the messages use it
IMPORTERS: Registry[type[Importer]] = Registry(
    "format", "assay.importers", check=_is_importer, expected="an Importer subclass"
)
"""Importers by format name: the built-ins (registered on import) and ``assay.importers``."""


def register_importer(cls: type[Importer]) -> type[Importer]:
    """Class decorator: registers an importer under its ``name``.

    Raises:
        ConfigError: The class has no name, or another class holds the name.
    """
    return IMPORTERS.register(cls)


def importer_names() -> list[str]:
    """Names of all importers, built-in and from installed plugins."""
    return IMPORTERS.names()


def get_importer(name: str) -> type[Importer]:
    """The importer class registered under ``name``.

    Raises:
        ConfigError: The name is unknown (the message lists the known ones).
    """
    return IMPORTERS.get(name)


# -- checks shared by all formats ---------------------------------------------------------------

_LABELS: dict[str, Label] = {
    "safe": "safe",
    "unsafe": "unsafe",
    "controversial": "controversial",
    "needs caution": "controversial",
    "needs_caution": "controversial",
    "安全": "safe",
    "不安全": "unsafe",
    "有争议": "controversial",
    "争议": "controversial",
    "0": "safe",
    "1": "unsafe",
    "false": "safe",
    "true": "unsafe",
}

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def normalize_label(value: Any) -> Label:
    """A source label as safe/unsafe/controversial (Safe, 安全, Needs Caution, 0/1, ...)."""
    key = str(value).strip().lower()
    if key in _LABELS:
        return _LABELS[key]
    raise RowError(f"unknown label {value!r} (expected safe, unsafe or controversial)")


def detect_lang(text: str) -> str:
    """'zh' when Chinese characters make up at least a fifth of the letters, else 'en'."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk * 5 >= cjk + latin else "en"


def lang_from_filename(file: str) -> str | None:
    """'zh' or 'en' when the file name says so (s-eval_base_risk_zh_v0.1.0.jsonl)."""
    name = file.rsplit("!", 1)[-1].rsplit("/", 1)[-1].lower()
    tokens = set(re.split(r"[^a-z]+", name))
    if tokens & {"zh", "cn", "chinese", "zho", "chi"}:
        return "zh"
    if tokens & {"en", "english", "eng"}:
        return "en"
    return None


def required_text(data: dict[str, Any], *keys: str, what: str = "prompt") -> str:
    """The first of ``keys`` present in the record, as a string; RowError when missing."""
    for key in keys:
        if key in data and data[key] is not None:
            value = data[key]
            if not isinstance(value, str):
                raise RowError(f"{what} ({key!r}) is a {type(value).__name__}, not text")
            return value
    raise RowError(f"missing {what} (field {' or '.join(repr(k) for k in keys)})")


def resolve_risk(value: Any, ctx: RowContext) -> str | None:
    """A risk value as a canonical S-Eval path (through ``risk_taxonomy`` when configured)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise RowError(f"risk is a {type(value).__name__}, not text")
    if ctx.config.risk_taxonomy:
        return map_category(ctx.config.risk_taxonomy, value)
    try:
        return ctx.tree.resolve(value)
    except UnknownRiskError as exc:
        raise RowError(f"unknown risk {value!r}: {exc}") from None


def map_category(taxonomy: str, value: str) -> str | None:
    """A category of another taxonomy as the S-Eval L1 it maps to (the first, if several)."""
    tax = get_taxonomy(taxonomy)
    category = tax.find(value)
    if category is None:
        raise RowError(f"unknown risk {value!r}: not a {tax.name} category")
    return category.seval_l1[0] if category.seval_l1 else None


def check_attack(value: Any, ctx: RowContext) -> str | None:
    """A known attack key in canonical form, or None for base prompts."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise RowError(f"attack is a {type(value).__name__}, not text")
    key = normalize_attack(value)
    allowed = known_attacks() | {normalize_attack(a) for a in ctx.config.extra_attacks}
    if key not in allowed:
        raise RowError(
            f"unknown attack {value!r} (known: {', '.join(sorted(allowed))}; "
            "add others with --attack-key)"
        )
    return key


def check_size(text: str, what: str, ctx: RowContext) -> None:
    """Rejects text over the configured size limit, and text that is not valid Unicode."""
    if len(text) > ctx.config.max_chars:
        raise RowError(
            f"{what} is {len(text):,} characters, over the limit of {ctx.config.max_chars:,} "
            "(--max-chars)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(f"{what} is not valid UTF-8 (it holds an unpaired surrogate)") from None


def build_case(ctx: RowContext, **fields: Any) -> TestCase:
    """Builds and validates a test case, turning validation errors into one-line reasons."""
    text = fields.get("text")
    if isinstance(text, str):
        if not text.strip():
            raise RowError("empty prompt")
        check_size(text, "prompt", ctx)
    response = fields.get("response")
    if isinstance(response, str):
        check_size(response, "response", ctx)
    lang = fields.get("lang")
    if isinstance(lang, str):
        fields["lang"] = lang.strip().replace("_", "-").lower() if len(lang) <= 3 else lang.strip()
    try:
        return TestCase(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RowError(f"invalid {where}: {error_message(err)}") from None


ImporterFactory = Callable[[ImportConfig], Importer]
