"""Suite selection: strategies that decide which test cases to keep, composed as a plan.

A :class:`SelectionPlan` is a list of steps; each step is one strategy with its config, and sees
only the rows the steps before it kept::

    plan = SelectionPlan.parse([{"strategy": "dedup", "threshold": 0.85},
                                {"strategy": "balance", "quota": 100}])
    report = select_suite("file:///data/seval", "file:///data/seval-small", plan)

Strategies:

- ``dedup`` (:class:`DedupConfig`): near-duplicate removal with MinHash over character n-grams
  plus LSH, verified by the signature agreement; within each language by default. Rows are taken
  in ``test_id`` order and the first of a group of near-duplicates is kept.
- ``diversity`` (:class:`DiversityConfig`): greedy k-center over text embeddings keeps ``k`` (or
  a fraction) of the rows of each stratum (default: per language).
- ``effectiveness`` (:class:`EffectivenessConfig`): keeps the prompts that drew enough unsafe
  verdicts in earlier runs (read from their run folders).
- ``balance`` (:class:`BalanceConfig`): at most ``quota`` rows per stratum of risk x language x
  attack, chosen by a seeded hash of the test id.

**Attack rows.** ``dedup`` and ``diversity`` decide over base prompts (``attack`` is None); an
attack row whose ``base_id`` names a base prompt they dropped is dropped with it (reason
``base dropped``); attack rows are themselves compared only when the step asks for it
(``dedup_attacks`` / ``include_attacks``). ``effectiveness`` and ``balance`` decide every row on
its own: an attack that worked is kept even when its base prompt did not.

**Determinism.** Every choice depends on the rows' content and the config only, not on their
order in the suite: rows are processed in ``test_id`` order (the content hash), ties go to the
smaller ``test_id``, and ``balance`` orders rows by a seeded hash of the ``test_id``.

**Passes and memory.** :func:`select_suite` streams the input twice: the first pass reads the
small columns (ids, language, risk, attack, base id) and the texts of the rows a text strategy
needs, turning texts into features chunk by chunk (``map_fn`` may compute chunks in parallel,
e.g. on Ray); the second pass copies the kept rows into the new suite. Held in memory per row:
about 150 bytes of ids and codes, plus ``4 * num_perm`` bytes of MinHash signature (512 B at the
default 128) for every row a ``dedup`` step compares, plus ``4 * dim`` bytes of embedding (2 KiB
at the default 512) for every row a ``diversity`` step compares. For an S-Eval-sized suite
(20,000 base prompts, 200,000 attacks, base prompts compared) that is about 33 MB + 10 MB + 40 MB.

The dropped rows are written next to the new suite, as ``_dropped.parquet`` (columns
:data:`DROPPED_SCHEMA`: test id, step, strategy, reason code, human-readable detail); the suite
manifest records the plan (``provenance["select"]``) and the input suite's fingerprint
(``parents``).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assay.kernels import (  # type: ignore[import-not-found, unused-ignore]
    embed as _embed,
)
from assay.kernels import (  # type: ignore[import-not-found, unused-ignore]
    kcenter as _kcenter,
)
from assay.kernels import (  # type: ignore[import-not-found, unused-ignore]
    lsh as _lsh,
)
from assay.kernels import (  # type: ignore[import-not-found, unused-ignore]
    minhash as _minhash,
)

from .config import error_message
from .errors import ConfigError, InputError
from .io import Location, StorageOptions, read_parquet, write_parquet_atomic
from .records import RECORD_KEY, SCHEMA_VERSION, SCHEMA_VERSION_KEY, TestCase
from .runfolder import RunFolder
from .suite import Fingerprint, Suite, SuiteManifest, SuiteWriter, open_suite

DROPPED_FILE = "_dropped.parquet"
"""Name of the dropped-rows file written next to a selected suite."""

VERDICTS_STAGE = "verdicts"
"""The run-folder stage whose parts hold :class:`~.records.Verdict` rows."""

DROPPED_SCHEMA = pa.schema(
    [
        pa.field("test_id", pa.string(), nullable=False, metadata={"description": "The row."}),
        pa.field(
            "step",
            pa.int32(),
            nullable=False,
            metadata={"description": "Position (0-based) of the plan step that dropped it."},
        ),
        pa.field(
            "strategy",
            pa.string(),
            nullable=False,
            metadata={"description": "Strategy of that step: dedup, diversity, ..."},
        ),
        pa.field(
            "reason",
            pa.string(),
            nullable=False,
            metadata={
                "description": "Short reason code: near-duplicate, base dropped, redundant, "
                "ineffective, not evaluated, over quota."
            },
        ),
        pa.field(
            "detail",
            pa.string(),
            nullable=False,
            metadata={"description": "The reason in words, naming the rows and numbers."},
        ),
    ],
    metadata={RECORD_KEY: b"SelectionDrop", SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
)
"""Arrow schema of ``_dropped.parquet``."""

StratumKey = Literal["risk", "lang", "attack"]
MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]
"""``map_fn(fn, items) -> [fn(item) for item in items]``, possibly in parallel (same order)."""

_CJK_NGRAM = {"zh": 2, "ja": 2, "ko": 2}


# -- configs -----------------------------------------------------------------------------------


class _StepConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _keys(*keys: StratumKey) -> list[StratumKey]:
    return list(keys)


def _check_by(value: list[StratumKey]) -> list[StratumKey]:
    if len(set(value)) != len(value):
        raise ValueError(f"repeated stratum key in {value}")
    return value


class DedupConfig(_StepConfig):
    """Near-duplicate removal: MinHash over character n-grams, LSH, verified agreement."""

    strategy: Literal["dedup"] = Field(default="dedup", description="The strategy: dedup.")
    threshold: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Estimated Jaccard similarity of the n-gram sets at or above which two "
        "rows are near-duplicates.",
    )
    ngram: int = Field(
        default=5, ge=1, le=32, description="Shingle length in characters for most languages."
    )
    ngram_by_lang: dict[str, int] = Field(
        default_factory=lambda: dict(_CJK_NGRAM),
        description="Shingle length per primary language subtag, overriding `ngram`. Chinese, "
        "Japanese and Korean carry more per character and their prompts are short: character "
        "bigrams by default, so a one-character edit of a 30-character prompt still scores "
        "about 0.87.",
    )
    num_perm: int = Field(
        default=128,
        ge=8,
        le=1024,
        description="MinHash permutations (signature length; 4 bytes per row each).",
    )
    bands: int | None = Field(
        default=None,
        ge=1,
        description="LSH bands; None: chosen with `rows` by weighting missed near-duplicates "
        "0.9 and spurious candidates 0.1 (candidates are verified, so they cost time only).",
    )
    rows: int | None = Field(default=None, ge=1, description="Signature columns per LSH band.")
    seed: int = Field(default=1, description="Seed of the MinHash permutations.")
    across_languages: bool = Field(
        default=False,
        description="Compare rows of different languages too (every row then uses `ngram`).",
    )
    dedup_attacks: bool = Field(
        default=False,
        description="Also compare attack rows, among rows of the same language and attack; "
        "attack rows of a dropped base prompt are dropped either way.",
    )

    @model_validator(mode="after")
    def _check_bands(self) -> DedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if (
            self.bands is not None
            and self.rows is not None
            and self.bands * self.rows > self.num_perm
        ):
            raise ValueError(
                f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}"
            )
        for lang, n in self.ngram_by_lang.items():
            if not 1 <= n <= 32:
                raise ValueError(f"ngram_by_lang[{lang!r}] must be in 1..32, not {n}")
        return self

    def lsh_params(self) -> tuple[int, int]:
        """``(bands, rows)``: as set, or the optimum for the threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return _optimal_params(self.threshold, self.num_perm)


class DiversityConfig(_StepConfig):
    """Greedy k-center over text embeddings: keep the most spread-out rows of each stratum."""

    strategy: Literal["diversity"] = Field(
        default="diversity", description="The strategy: diversity."
    )
    k: int | None = Field(
        default=None, ge=1, description="Rows to keep per stratum (set this or `fraction`)."
    )
    fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Share of each stratum's rows to keep, rounded up (set this or `k`).",
    )
    by: list[StratumKey] = Field(
        default_factory=lambda: _keys("lang"), description="Columns whose values make a stratum."
    )
    risk_level: int | None = Field(
        default=None,
        ge=1,
        le=4,
        description="Risk path depth used when `by` has risk (None: the whole path, the leaf).",
    )
    embedder: str = Field(
        default="hashing",
        description="'hashing' (character n-gram feature hashing, offline), "
        "'transformers:<model path>' (mean-pooled hidden states of a local model) or "
        "'python:<module>:<callable>' (texts -> array of shape (n, d)).",
    )
    dim: int = Field(default=512, ge=8, le=65536, description="Dimension of 'hashing'.")
    metric: Literal["cosine", "l2"] = Field(default="cosine", description="Distance.")
    include_attacks: bool = Field(
        default=False,
        description="Also select among attack rows (in their strata); attack rows of a "
        "dropped base prompt are dropped either way.",
    )

    _check_by = field_validator("by")(_check_by)

    @field_validator("embedder")
    @classmethod
    def _check_embedder(cls, value: str) -> str:
        _embed.make_embedder(value)  # raises ValueError on an unknown form
        return value

    @model_validator(mode="after")
    def _check_size(self) -> DiversityConfig:
        if (self.k is None) == (self.fraction is None):
            raise ValueError("set exactly one of k and fraction")
        return self

    def keep_count(self, rows: int) -> int:
        """How many of a stratum's ``rows`` to keep."""
        if self.k is not None:
            return min(self.k, rows)
        assert self.fraction is not None
        return min(rows, math.ceil(self.fraction * rows - 1e-9))


class EffectivenessConfig(_StepConfig):
    """Keep the prompts that drew enough unsafe verdicts in earlier runs."""

    strategy: Literal["effectiveness"] = Field(
        default="effectiveness", description="The strategy: effectiveness."
    )
    runs: list[str] = Field(
        default_factory=list,
        description="Run folders (URLs of <output>/<run_id>) whose committed verdicts count.",
    )
    min_unsafe: int = Field(
        default=1,
        ge=1,
        description="Unsafe verdicts (over all targets, judges and runs) a prompt needs.",
    )
    min_unsafe_share: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="If set, replaces `min_unsafe`: the share of the targets that judged the "
        "prompt with at least one unsafe verdict on it.",
    )
    judges: list[str] | None = Field(
        default=None, description="Count only these judges' verdicts (None: all)."
    )
    count_controversial: bool = Field(
        default=False, description="Count 'controversial' verdicts as unsafe."
    )
    unevaluated: Literal["drop", "keep"] = Field(
        default="drop", description="What to do with prompts no counted verdict covers."
    )

    @model_validator(mode="after")
    def _check_runs(self) -> EffectivenessConfig:
        if not self.runs:
            raise ValueError("effectiveness needs at least one run folder in runs")
        return self


class BalanceConfig(_StepConfig):
    """At most ``quota`` rows per stratum, chosen by a seeded hash of the test id."""

    strategy: Literal["balance"] = Field(default="balance", description="The strategy: balance.")
    quota: int = Field(default=100, ge=1, description="Rows to keep per stratum, at most.")
    by: list[StratumKey] = Field(
        default_factory=lambda: _keys("risk", "lang", "attack"),
        description="Columns whose values make a stratum.",
    )
    risk_level: int | None = Field(
        default=None,
        ge=1,
        le=4,
        description="Risk path depth of a stratum (None: the whole path, the taxonomy leaf).",
    )
    seed: int = Field(default=0, description="Seed of the choice within a stratum.")

    _check_by = field_validator("by")(_check_by)


StepConfig = Annotated[
    DedupConfig | DiversityConfig | EffectivenessConfig | BalanceConfig,
    Field(discriminator="strategy"),
]
"""One step of a plan; its ``strategy`` field says which."""


class SelectionPlan(BaseModel):
    """Strategies applied in order, each to the rows the previous ones kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: list[StepConfig] = Field(
        default_factory=list, description="The steps, in the order they apply."
    )

    @classmethod
    def parse(cls, data: SelectionPlan | Sequence[Any] | Mapping[str, Any] | None) -> SelectionPlan:
        """Validates a plan given as a list of step mappings (as in YAML), or ``{"steps": [...]}``.

        Raises:
            ConfigError: Naming each invalid step and field.
        """
        if isinstance(data, SelectionPlan):
            return data
        if data is None:
            return cls()
        if isinstance(data, Mapping):
            # One step on its own ({"strategy": ...}) or the plan ({"steps": [...]}).
            payload = {"steps": [dict(data)]} if "strategy" in data else dict(data)
        else:
            payload = {"steps": list(data)}
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise ConfigError(_plan_errors(exc, payload)) from None


def _plan_errors(exc: ValidationError, payload: Mapping[str, Any]) -> str:
    steps = payload.get("steps")
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "plan"
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            strategy = loc[2] if len(loc) > 2 else None
            if strategy is None and isinstance(steps, list) and loc[1] < len(steps):
                raw = steps[loc[1]]
                strategy = raw.get("strategy") if isinstance(raw, Mapping) else None
            rest = ".".join(str(p) for p in loc[3:])
            where = f"step {loc[1]}" + (f" ({strategy})" if strategy else "")
            where += f": {rest}" if rest else ""
        lines.append(f"{where}: {error_message(err)}")
    return "invalid selection plan:\n  " + "\n  ".join(lines)


# -- reports -----------------------------------------------------------------------------------


class StratumShortfall(BaseModel):
    """A stratum with fewer rows than its quota."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stratum: str = Field(description="The stratum, as 'risk=...|lang=...|attack=...'.")
    rows: int = Field(description="Rows the stratum had when the step ran.")
    quota: int = Field(description="The quota.")


class StepReport(BaseModel):
    """What one step did."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: int = Field(description="Position of the step in the plan (0-based).")
    strategy: str = Field(description="The step's strategy.")
    seen: int = Field(description="Rows the step saw (kept by the steps before it).")
    kept: int = Field(description="Rows it kept.")
    dropped: int = Field(description="Rows it dropped.")
    by_reason: dict[str, int] = Field(default_factory=dict, description="Drops per reason.")
    warnings: list[str] = Field(default_factory=list, description="Things worth a look.")
    below_quota: list[StratumShortfall] = Field(
        default_factory=list, description="balance: strata with fewer rows than the quota."
    )
    seconds: float = Field(default=0.0, description="Wall time of the decision.")


def read_plan(url: str, storage_options: StorageOptions | None = None) -> SelectionPlan:
    """A plan from a YAML file (any fsspec URL): a list of steps, or ``{steps: [...]}``."""
    import yaml

    from .yamlsafe import load_yaml, read_yaml_bytes

    try:
        raw = read_yaml_bytes(Location.parse(url, storage_options), url, what="selection plan")
    except FileNotFoundError:
        raise ConfigError(f"no selection plan at {url}") from None
    try:
        data = load_yaml(raw, url, what="selection plan")
    except yaml.YAMLError as exc:
        raise ConfigError(f"{url} is not valid YAML: {exc}") from None
    try:
        return SelectionPlan.parse(data)
    except ConfigError as exc:
        raise ConfigError(f"{url}: {exc}") from None


class SelectionReport(BaseModel):
    """The outcome of :func:`select_suite`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_url: str = Field(description="The input suite.")
    input_fingerprint: str = Field(description="Its fingerprint (the new suite's parent).")
    input_rows: int = Field(description="Rows in the input.")
    output_url: str = Field(default="", description="The new suite ('' if nothing was written).")
    output_fingerprint: str = Field(default="", description="The new suite's fingerprint.")
    kept: int = Field(description="Rows kept.")
    dropped: int = Field(description="Rows dropped.")
    dropped_url: str = Field(default="", description="Where the dropped rows are listed.")
    steps: list[StepReport] = Field(default_factory=list, description="Per step.")
    seconds: float = Field(default=0.0, description="Wall time of the whole selection.")

    @property
    def below_quota(self) -> list[StratumShortfall]:
        """Strata below quota over all balance steps."""
        return [s for step in self.steps for s in step.below_quota]

    @property
    def dropped_by_strategy(self) -> dict[str, int]:
        """Rows dropped per strategy (over all its steps)."""
        out: dict[str, int] = {}
        for step in self.steps:
            out[step.strategy] = out.get(step.strategy, 0) + step.dropped
        return out


# -- the rows in memory ------------------------------------------------------------------------


class _Codes:
    """Interns the values of a small-cardinality column as int32 codes."""

    def __init__(self) -> None:
        self.values: list[str | None] = []
        self._index: dict[str | None, int] = {}

    def code_of(self, value: str | None) -> int:
        """The code of ``value``; -1 if it never occurred."""
        return self._index.get(value, -1)

    def encode(self, column: list[str | None]) -> npt.NDArray[np.int32]:
        index = self._index
        out = np.empty(len(column), dtype=np.int32)
        for i, v in enumerate(column):
            code = index.get(v)
            if code is None:
                code = index[v] = len(self.values)
                self.values.append(v)
            out[i] = code
        return out


@dataclass
class _Rows:
    """The first pass: ids and small columns of every row, and per-step text features."""

    ids: list[str] = field(default_factory=list)
    base_id: list[str | None] = field(default_factory=list)
    lang: _Codes = field(default_factory=_Codes)
    risk: _Codes = field(default_factory=_Codes)
    attack: _Codes = field(default_factory=_Codes)
    lang_parts: list[npt.NDArray[np.int32]] = field(default_factory=list)
    risk_parts: list[npt.NDArray[np.int32]] = field(default_factory=list)
    attack_parts: list[npt.NDArray[np.int32]] = field(default_factory=list)
    lang_codes: npt.NDArray[np.int32] = field(default_factory=lambda: _no_codes())
    risk_codes: npt.NDArray[np.int32] = field(default_factory=lambda: _no_codes())
    attack_codes: npt.NDArray[np.int32] = field(default_factory=lambda: _no_codes())
    # step index -> (row positions in ascending order, one feature row per position)
    features: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[Any]]] = field(
        default_factory=dict
    )
    base_mask: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def finish(self) -> None:
        """Joins the per-batch code arrays."""
        self.lang_codes = _join_codes(self.lang_parts)
        self.risk_codes = _join_codes(self.risk_parts)
        self.attack_codes = _join_codes(self.attack_parts)
        self.lang_parts, self.risk_parts, self.attack_parts = [], [], []
        self.base_mask = np.asarray(self.attack_codes == self.attack.code_of(None))

    @property
    def n(self) -> int:
        return len(self.ids)

    def is_base(self) -> npt.NDArray[np.bool_]:
        return self.base_mask

    def stratum_labels(
        self, by: Sequence[StratumKey], risk_level: int | None
    ) -> tuple[npt.NDArray[np.int64], list[str]]:
        """A stratum code per row and the label of each code."""
        parts: list[tuple[npt.NDArray[np.int32], list[str]]] = []
        for key in by:
            if key == "lang":
                parts.append((self.lang_codes, [f"lang={v}" for v in self.lang.values]))
            elif key == "attack":
                parts.append(
                    (self.attack_codes, [f"attack={v or '(base)'}" for v in self.attack.values])
                )
            else:
                labels = [f"risk={_risk_prefix(v, risk_level)}" for v in self.risk.values]
                parts.append((self.risk_codes, labels))
        if not parts:
            return np.zeros(self.n, dtype=np.int64), ["(all)"]
        combined = np.zeros(self.n, dtype=np.int64)
        for codes, labels in parts:
            combined = combined * (len(labels) + 1) + codes
        uniq, inverse = np.unique(combined, return_inverse=True)
        names = []
        for u in uniq.tolist():
            pieces = []
            for _, labels in reversed(parts):
                pieces.append(labels[u % (len(labels) + 1)])
                u //= len(labels) + 1
            names.append("|".join(reversed(pieces)))
        # Strata that differ only below risk_level share a label: merge them.
        label_codes = {name: i for i, name in enumerate(sorted(set(names)))}
        remap = np.array([label_codes[name] for name in names], dtype=np.int64)
        return remap[inverse.ravel()], sorted(label_codes)


def _no_codes() -> npt.NDArray[np.int32]:
    return np.zeros(0, dtype=np.int32)


def _join_codes(parts: list[npt.NDArray[np.int32]]) -> npt.NDArray[np.int32]:
    return np.concatenate(parts) if parts else _no_codes()


def _risk_prefix(risk: str | None, level: int | None) -> str:
    if not risk:
        return "(none)"
    return risk if level is None else "/".join(risk.split("/")[:level])


# -- feature computation (picklable, so map_fn may run it elsewhere) ---------------------------


@dataclass(frozen=True)
class _SignatureJob:
    ngram_default: int
    ngram_by_lang: tuple[tuple[str, int], ...]
    across_languages: bool
    num_perm: int
    seed: int

    def ngram_for(self, lang: str) -> int:
        if self.across_languages:
            return self.ngram_default
        return dict(self.ngram_by_lang).get(lang.split("-", 1)[0].lower(), self.ngram_default)

    def __call__(self, texts: list[str], langs: list[str]) -> npt.NDArray[np.uint32]:
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        by_n: dict[int, list[int]] = {}
        for i, lang in enumerate(langs):
            by_n.setdefault(self.ngram_for(lang), []).append(i)
        for n, idx in by_n.items():
            sig = _minhash.minhash(
                [texts[i] for i in idx], n=n, num_perm=self.num_perm, seed=self.seed, bits=32
            )
            out[idx] = np.asarray(sig, dtype=np.uint32)
        return out


@dataclass(frozen=True)
class _EmbedJob:
    embedder: Callable[[Sequence[str]], Any]

    def __call__(self, texts: list[str], langs: list[str]) -> npt.NDArray[np.float32]:
        out = np.asarray(self.embedder(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise InputError(f"the embedder returned shape {out.shape} for {len(texts)} texts")
        return out


@dataclass(frozen=True)
class _FeatureTask:
    """One chunk of texts for one step's feature job."""

    step: int
    job: _SignatureJob | _EmbedJob
    texts: list[str]
    langs: list[str]


def _run_task(task: _FeatureTask) -> npt.NDArray[Any]:
    return task.job(task.texts, task.langs)


def _sequential_map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(item) for item in items]


def _feature_job(cfg: _StepConfig) -> _SignatureJob | _EmbedJob | None:
    if isinstance(cfg, DedupConfig):
        return _SignatureJob(
            ngram_default=cfg.ngram,
            ngram_by_lang=tuple(sorted(cfg.ngram_by_lang.items())),
            across_languages=cfg.across_languages,
            num_perm=cfg.num_perm,
            seed=cfg.seed,
        )
    if isinstance(cfg, DiversityConfig):
        return _EmbedJob(embedder=_embed.make_embedder(cfg.embedder, dim=cfg.dim))
    return None


def _compares_attacks(cfg: _StepConfig) -> bool:
    if isinstance(cfg, DedupConfig):
        return cfg.dedup_attacks
    if isinstance(cfg, DiversityConfig):
        return cfg.include_attacks
    return True


# -- first pass --------------------------------------------------------------------------------

_SMALL_COLUMNS = ["test_id", "lang", "risk", "attack", "base_id"]


def _scan(
    suite: Suite, plan: SelectionPlan, map_fn: MapFn, batch_size: int, map_window: int
) -> _Rows:
    """Reads the small columns of every row and computes the text features the plan needs."""
    rows = _Rows()
    jobs = {i: job for i, step in enumerate(plan.steps) if (job := _feature_job(step)) is not None}
    columns = _SMALL_COLUMNS + (["text"] if jobs else [])
    pending: list[tuple[_FeatureTask, npt.NDArray[np.int64]]] = []
    positions: dict[int, list[npt.NDArray[np.int64]]] = {i: [] for i in jobs}
    results: dict[int, list[npt.NDArray[Any]]] = {i: [] for i in jobs}

    def flush() -> None:
        if not pending:
            return
        outs = map_fn(_run_task, [task for task, _ in pending])
        if len(outs) != len(pending):
            raise InputError(f"map_fn returned {len(outs)} results for {len(pending)} chunks")
        for (task, pos), out in zip(pending, outs, strict=True):
            positions[task.step].append(pos)
            results[task.step].append(out)
        pending.clear()

    for batch in suite.iter_batches(batch_size=batch_size, columns=columns):
        offset = rows.n
        ids = batch.column("test_id").to_pylist()
        attack = batch.column("attack").to_pylist()
        lang = batch.column("lang").to_pylist()
        rows.ids.extend(ids)
        rows.base_id.extend(
            b if a is not None else None
            for a, b in zip(attack, batch.column("base_id").to_pylist(), strict=True)
        )
        rows.lang_parts.append(rows.lang.encode(lang))
        rows.risk_parts.append(rows.risk.encode(batch.column("risk").to_pylist()))
        rows.attack_parts.append(rows.attack.encode(attack))
        if not jobs:
            continue
        texts = batch.column("text").to_pylist()
        for step, job in jobs.items():
            all_rows = _compares_attacks(plan.steps[step])
            local = [i for i, a in enumerate(attack) if all_rows or a is None]
            if not local:
                continue
            task = _FeatureTask(
                step=step,
                job=job,
                texts=[texts[i] for i in local],
                langs=[lang[i] for i in local],
            )
            pending.append((task, np.asarray(local, dtype=np.int64) + offset))
        if len(pending) >= map_window:
            flush()
    flush()
    rows.finish()
    for step in jobs:
        if positions[step]:
            rows.features[step] = (np.concatenate(positions[step]), np.concatenate(results[step]))
        else:
            rows.features[step] = (np.zeros(0, dtype=np.int64), np.zeros((0, 0)))
    return rows


# -- decisions ---------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """One step's drops (row position, reason code, detail) and remarks."""

    drops: list[tuple[int, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    below_quota: list[StratumShortfall] = field(default_factory=list)


@dataclass
class _Context:
    rows: _Rows
    storage_options: StorageOptions | None


def _by_id(rows: _Rows, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``positions`` sorted by (test_id, position): the processing order of every strategy."""
    ids = rows.ids
    return np.array(sorted(positions.tolist(), key=lambda p: (ids[p], p)), dtype=np.int64)


def _follow_base(
    rows: _Rows, alive: npt.NDArray[np.bool_], outcome: _Outcome, strategy: str
) -> None:
    """Drops the live attack rows whose base prompt this step dropped."""
    dropped = {rows.ids[p]: reason for p, reason, _ in outcome.drops}
    if not dropped:
        return
    already = {p for p, _, _ in outcome.drops}
    for p in np.flatnonzero(alive & ~rows.is_base()).tolist():
        base = rows.base_id[p]
        if base is not None and base in dropped and p not in already:
            outcome.drops.append(
                (p, "base dropped", f"base prompt {base} dropped by {strategy} ({dropped[base]})")
            )


def _dedup(cfg: DedupConfig, ctx: _Context, alive: npt.NDArray[np.bool_], step: int) -> _Outcome:
    rows = ctx.rows
    outcome = _Outcome()
    positions, sigs = rows.features[step]
    live = alive[positions] if positions.size else np.zeros(0, dtype=bool)
    bands, band_rows = cfg.lsh_params()
    lang = rows.lang_codes
    attack = rows.attack_codes
    groups: dict[tuple[int, int], list[int]] = {}
    for k in np.flatnonzero(live).tolist():
        p = int(positions[k])
        key = (-1 if cfg.across_languages else int(lang[p]), int(attack[p]))
        groups.setdefault(key, []).append(k)
    for members in groups.values():
        if len(members) < 2:
            continue
        order = _by_id(rows, positions[members])
        local = {int(positions[k]): k for k in members}
        group_sigs = sigs[[local[int(p)] for p in order.tolist()]]
        result = _lsh.dedup(group_sigs, cfg.threshold, bands, band_rows)
        dup_of = np.asarray(result.dup_of, dtype=np.int64)
        matches = np.asarray(result.matches, dtype=np.int64)
        for i in np.flatnonzero(~np.asarray(result.keep, dtype=bool)).tolist():
            kept = rows.ids[int(order[dup_of[i]])]
            jaccard = matches[i] / cfg.num_perm
            outcome.drops.append(
                (
                    int(order[i]),
                    "near-duplicate",
                    f"near-duplicate of {kept} (jaccard {jaccard:.2f})",
                )
            )
    _follow_base(rows, alive, outcome, "dedup")
    _warn_orphans(rows, alive, outcome, cfg.dedup_attacks)
    return outcome


def _warn_orphans(
    rows: _Rows, alive: npt.NDArray[np.bool_], outcome: _Outcome, compared: bool
) -> None:
    if compared:
        return
    attack_rows = np.flatnonzero(alive & ~rows.is_base()).tolist()
    orphans = sum(rows.base_id[p] is None for p in attack_rows)
    if orphans:
        outcome.warnings.append(f"{orphans} attack rows have no base_id: kept without comparison")


def _diversity(
    cfg: DiversityConfig, ctx: _Context, alive: npt.NDArray[np.bool_], step: int
) -> _Outcome:
    rows = ctx.rows
    outcome = _Outcome()
    positions, emb = rows.features[step]
    live = np.flatnonzero(alive[positions]) if positions.size else np.zeros(0, dtype=np.int64)
    strata, labels = rows.stratum_labels(cfg.by, cfg.risk_level)
    feature_row = {int(positions[k]): int(k) for k in live.tolist()}
    members: dict[int, list[int]] = {}
    for p in feature_row:
        members.setdefault(int(strata[p]), []).append(p)
    for code, stratum_rows in sorted(members.items()):
        keep = cfg.keep_count(len(stratum_rows))
        if keep >= len(stratum_rows):
            continue
        order = _by_id(rows, np.asarray(stratum_rows, dtype=np.int64))
        x = emb[[feature_row[p] for p in order.tolist()]]
        result = _kcenter.kcenter(x, keep, metric=cfg.metric, start=0)
        chosen = np.asarray(result.indices, dtype=np.int64)
        assignment = np.asarray(result.assignment, dtype=np.int64)
        distances = np.asarray(result.distances, dtype=np.float64)
        kept = np.zeros(len(order), dtype=bool)
        kept[chosen] = True
        for i in np.flatnonzero(~kept).tolist():
            nearest = rows.ids[int(order[chosen[assignment[i]]])]
            outcome.drops.append(
                (
                    int(order[i]),
                    "redundant",
                    f"not among the {chosen.size} most diverse of {len(order)} rows in "
                    f"{labels[code]}; nearest kept {nearest} ({cfg.metric} distance "
                    f"{distances[i]:.3f})",
                )
            )
    _follow_base(rows, alive, outcome, "diversity")
    _warn_orphans(rows, alive, outcome, cfg.include_attacks)
    return outcome


def _run_folder(url: str, storage_options: StorageOptions | None) -> RunFolder:
    loc = Location.parse(url, storage_options)
    folder = RunFolder(loc.parent().url, loc.name, storage_options)
    if not folder.exists():
        raise InputError(f"no run at {url} (no manifest.json)")
    return folder


def _effectiveness(
    cfg: EffectivenessConfig, ctx: _Context, alive: npt.NDArray[np.bool_], step: int
) -> _Outcome:
    rows = ctx.rows
    outcome = _Outcome()
    slot: dict[str, int] = {}
    row_slot = np.empty(rows.n, dtype=np.int64)
    for p, tid in enumerate(rows.ids):
        row_slot[p] = slot.setdefault(tid, len(slot))
    unsafe = np.zeros(len(slot), dtype=np.int64)
    targets: dict[str, npt.NDArray[np.int8]] = {}  # per target: 0 unjudged, 1 not unsafe, 2 unsafe
    bad = {"unsafe", "controversial"} if cfg.count_controversial else {"unsafe"}
    judges = set(cfg.judges) if cfg.judges is not None else None
    for url in cfg.runs:
        folder = _run_folder(url, ctx.storage_options)
        for shard_id, marker in sorted(folder.markers(VERDICTS_STAGE).items()):
            cols = ["test_id", "target", "judge", "label"]
            table = read_parquet(folder.part(VERDICTS_STAGE, shard_id), columns=cols)
            if table.num_rows != marker.rows:
                raise InputError(
                    f"{folder.part(VERDICTS_STAGE, shard_id).url} has {table.num_rows} rows, "
                    f"its marker says {marker.rows}"
                )
            for tid, target, judge, label in zip(
                *(table.column(c).to_pylist() for c in cols), strict=True
            ):
                s = slot.get(tid)
                if s is None or label is None or (judges is not None and judge not in judges):
                    continue
                state = targets.get(target)
                if state is None:
                    state = targets[target] = np.zeros(len(slot), dtype=np.int8)
                if label in bad:
                    unsafe[s] += 1
                    state[s] = 2
                else:
                    state[s] = max(int(state[s]), 1)
    judged = np.zeros(len(slot), dtype=np.int64)
    hit = np.zeros(len(slot), dtype=np.int64)
    for state in targets.values():
        judged += state > 0
        hit += state == 2
    for p in np.flatnonzero(alive).tolist():
        s = int(row_slot[p])
        n_judged, n_hit, n_unsafe = int(judged[s]), int(hit[s]), int(unsafe[s])
        if n_judged == 0:
            if cfg.unevaluated == "drop":
                outcome.drops.append((p, "not evaluated", "no counted verdict in the runs given"))
            continue
        if cfg.min_unsafe_share is not None:
            ok = n_hit / n_judged >= cfg.min_unsafe_share - 1e-12
            need = f"needs {cfg.min_unsafe_share:.0%} of targets unsafe"
        else:
            ok = n_unsafe >= cfg.min_unsafe
            need = f"needs {cfg.min_unsafe}"
        if not ok:
            outcome.drops.append(
                (
                    p,
                    "ineffective",
                    f"judged safe by {n_judged - n_hit} of {n_judged} targets "
                    f"({n_unsafe} unsafe verdicts; {need})",
                )
            )
    if not targets:
        outcome.warnings.append("no counted verdicts on this suite's rows in the runs given")
    return outcome


def _seeded_key(seed: int, test_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{test_id}".encode(), digest_size=8).digest()


def _balance(
    cfg: BalanceConfig, ctx: _Context, alive: npt.NDArray[np.bool_], step: int
) -> _Outcome:
    rows = ctx.rows
    outcome = _Outcome()
    strata, labels = rows.stratum_labels(cfg.by, cfg.risk_level)
    members: dict[int, list[int]] = {}
    for p in np.flatnonzero(alive).tolist():
        members.setdefault(int(strata[p]), []).append(p)
    for code, stratum_rows in sorted(members.items()):
        n = len(stratum_rows)
        if n < cfg.quota:
            outcome.below_quota.append(
                StratumShortfall(stratum=labels[code], rows=n, quota=cfg.quota)
            )
            continue
        ranked = sorted(stratum_rows, key=lambda p: (_seeded_key(cfg.seed, rows.ids[p]), p))
        for p in ranked[cfg.quota :]:
            outcome.drops.append(
                (p, "over quota", f"{labels[code]} has {n} rows; quota {cfg.quota}")
            )
    if outcome.below_quota:
        outcome.warnings.append(
            f"{len(outcome.below_quota)} of {len(members)} strata have fewer rows than the "
            f"quota of {cfg.quota}"
        )
    return outcome


_Decide = Callable[[Any, _Context, npt.NDArray[np.bool_], int], _Outcome]
_STRATEGIES: dict[str, _Decide] = {
    "dedup": _dedup,
    "diversity": _diversity,
    "effectiveness": _effectiveness,
    "balance": _balance,
}


# -- the selection -----------------------------------------------------------------------------


@dataclass
class Selection:
    """The decisions of a plan over a suite (no output written yet)."""

    ids: list[str]
    """Every input row's test id, in suite order."""
    keep: npt.NDArray[np.bool_]
    """Whether each input row is kept."""
    dropped: pa.Table
    """The dropped rows, with :data:`DROPPED_SCHEMA`, by step then test id."""
    steps: list[StepReport]
    """What each step did."""
    fingerprint: str
    """Fingerprint of the input's test ids."""

    def kept_ids(self) -> list[str]:
        """Test ids of the kept rows, in suite order."""
        return [tid for tid, k in zip(self.ids, self.keep.tolist(), strict=True) if k]


def decide(
    suite: Suite,
    plan: SelectionPlan | Sequence[Any] | Mapping[str, Any],
    storage_options: StorageOptions | None = None,
    map_fn: MapFn | None = None,
    batch_size: int = 4096,
    map_window: int = 8,
) -> Selection:
    """Runs a plan's strategies over a suite (one streaming pass) without writing anything.

    Args:
        suite: The suite (see :func:`~.suite.open_suite`).
        plan: The plan, or its steps as mappings.
        storage_options: fsspec options for the run folders ``effectiveness`` reads.
        map_fn: ``map_fn(fn, chunks) -> results`` computes text features of chunks (MinHash
            signatures, embeddings), possibly in parallel; default: in this process, in order.
        batch_size: Rows per Arrow batch read, and per feature chunk.
        map_window: Chunks handed to ``map_fn`` per call (texts of that many chunks are held).

    Returns:
        The :class:`Selection`.
    """
    plan = SelectionPlan.parse(plan)
    rows = _scan(suite, plan, map_fn or _sequential_map, batch_size, max(1, map_window))
    ctx = _Context(rows=rows, storage_options=storage_options)
    alive = np.ones(rows.n, dtype=bool)
    columns: dict[str, list[Any]] = {name: [] for name in DROPPED_SCHEMA.names}
    reports: list[StepReport] = []
    for step, cfg in enumerate(plan.steps):
        start = time.perf_counter()
        seen = int(alive.sum())
        outcome = _STRATEGIES[cfg.strategy](cfg, ctx, alive, step)
        by_reason: dict[str, int] = {}
        for p, reason, detail in sorted(outcome.drops, key=lambda d: (rows.ids[d[0]], d[0])):
            if not alive[p]:
                continue
            alive[p] = False
            by_reason[reason] = by_reason.get(reason, 0) + 1
            for name, value in zip(
                DROPPED_SCHEMA.names, (rows.ids[p], step, cfg.strategy, reason, detail), strict=True
            ):
                columns[name].append(value)
        dropped = sum(by_reason.values())
        reports.append(
            StepReport(
                step=step,
                strategy=cfg.strategy,
                seen=seen,
                kept=seen - dropped,
                dropped=dropped,
                by_reason=dict(sorted(by_reason.items())),
                warnings=outcome.warnings,
                below_quota=outcome.below_quota,
                seconds=round(time.perf_counter() - start, 3),
            )
        )
    fp = Fingerprint()
    fp.add_many(rows.ids)
    return Selection(
        ids=rows.ids,
        keep=alive,
        dropped=pa.Table.from_pydict(columns, schema=DROPPED_SCHEMA),
        steps=reports,
        fingerprint=fp.hexdigest(),
    )


def select_suite(
    suite_url: str,
    output_url: str,
    plan: SelectionPlan | Sequence[Any] | Mapping[str, Any],
    storage_options: StorageOptions | None = None,
    map_fn: MapFn | None = None,
    *,
    name: str | None = None,
    overwrite: bool = False,
    created_by: list[str] | None = None,
    batch_size: int = 4096,
    map_window: int = 8,
) -> SelectionReport:
    """Selects rows of a suite with a plan and writes them as a new suite.

    Streams the input twice: once to decide (:func:`decide`), once to copy the kept rows into a
    new suite at ``output_url`` whose manifest names the input's fingerprint as its parent and
    the plan as ``provenance["select"]``. The dropped rows go to ``<output>/_dropped.parquet``
    (written after the suite is committed; an old one is removed first).

    Args:
        suite_url: The input suite.
        output_url: Where the new suite goes (not the input's folder).
        plan: The plan, or its steps as mappings (as in YAML).
        storage_options: fsspec options for the input, the output and the run folders.
        map_fn: ``map_fn(fn, chunks) -> results``, to compute text features in parallel.
        name: The new suite's name (default: the output folder's name).
        overwrite: Replace a suite already at ``output_url``.
        created_by: The command recorded in the manifest (default: this process's argv),
            appended to the input's history.
        batch_size: Rows per Arrow batch and per feature chunk.
        map_window: Chunks handed to ``map_fn`` per call.

    Returns:
        The :class:`SelectionReport`.

    Raises:
        ConfigError: The plan is invalid, or the output is the input.
        InputError: The input is not a suite, or it changed between the two passes.
        StorageError: The output exists (without ``overwrite``) or cannot be written.
    """
    start = time.perf_counter()
    plan = SelectionPlan.parse(plan)
    src = Location.parse(suite_url, storage_options)
    dst = Location.parse(output_url, storage_options)
    if src.path.rstrip("/") == dst.path.rstrip("/") and type(src.fs) is type(dst.fs):
        raise ConfigError(f"the output {output_url} is the input suite: choose another folder")
    suite = open_suite(suite_url, storage_options)
    writer = SuiteWriter(
        output_url, name=name, storage_options=storage_options, overwrite=overwrite
    )
    try:
        selection = decide(suite, plan, storage_options, map_fn, batch_size, map_window)
        _copy_kept(suite, selection, writer, batch_size)
        writer.loc.join(DROPPED_FILE).remove()
        history = list(suite.manifest.created_by) if suite.manifest else []
        manifest = writer.commit(
            created_by=history + (created_by or [" ".join(sys.argv)]),
            parents=[selection.fingerprint],
            provenance={"select": plan.model_dump(mode="json")},
        )
    except BaseException:
        writer.abort()
        raise
    dropped_loc = writer.loc.join(DROPPED_FILE)
    write_parquet_atomic(dropped_loc, selection.dropped)
    return _report(suite, selection, manifest, writer.loc.url, dropped_loc.url, start)


def _copy_kept(suite: Suite, selection: Selection, writer: SuiteWriter, batch_size: int) -> None:
    offset = 0
    for batch in suite.iter_batches(batch_size=batch_size):
        n = batch.num_rows
        ids = batch.column("test_id").to_pylist()
        if ids != selection.ids[offset : offset + n]:
            raise InputError(f"the suite at {suite.url} changed while it was being selected")
        mask = selection.keep[offset : offset + n]
        offset += n
        if not mask.any():
            continue
        for case in TestCase.from_table(batch.filter(pa.array(mask))):
            writer.write(case)
    if offset != len(selection.ids):
        raise InputError(f"the suite at {suite.url} changed while it was being selected")


def _report(
    suite: Suite,
    selection: Selection,
    manifest: SuiteManifest,
    output_url: str,
    dropped_url: str,
    start: float,
) -> SelectionReport:
    kept = int(selection.keep.sum())
    return SelectionReport(
        input_url=suite.url,
        input_fingerprint=selection.fingerprint,
        input_rows=len(selection.ids),
        output_url=output_url,
        output_fingerprint=manifest.fingerprint,
        kept=kept,
        dropped=len(selection.ids) - kept,
        dropped_url=dropped_url,
        steps=selection.steps,
        seconds=round(time.perf_counter() - start, 3),
    )


_PARAMS_CACHE: dict[tuple[float, int], tuple[int, int]] = {}


def _optimal_params(threshold: float, num_perm: int) -> tuple[int, int]:
    key = (threshold, num_perm)
    if key not in _PARAMS_CACHE:
        if threshold >= 1.0:
            _PARAMS_CACHE[key] = (1, num_perm)  # identical signatures only
        else:
            bands, rows = _lsh.optimal_params(threshold, num_perm, fp_weight=0.1, fn_weight=0.9)
            _PARAMS_CACHE[key] = (int(bands), int(rows))
    return _PARAMS_CACHE[key]


__all__ = [
    "DROPPED_FILE",
    "DROPPED_SCHEMA",
    "BalanceConfig",
    "DedupConfig",
    "DiversityConfig",
    "EffectivenessConfig",
    "MapFn",
    "Selection",
    "SelectionPlan",
    "SelectionReport",
    "StepConfig",
    "StepReport",
    "StratumShortfall",
    "decide",
    "read_plan",
    "select_suite",
]
