"""The run folder: the storage contract every run writes and every report reads.

::

    <output>/<run_id>/
      manifest.json                  config, config hash, suite fingerprint, shard plan, status
      generations/part-<shard>.parquet
      verdicts/part-<shard>.parquet
      _done/<stage>-<shard>          completion markers, written last
      summary.json                   metrics, written when the run ends

A shard's part file is written atomically (hidden temporary name then rename, or one PUT on an
object store) and only then its completion marker. Readers here return the parts whose marker
exists, so a half-written file or a part committed just before a crash (marker missing) is never
read as a result; a rerun redoes that shard and overwrites the part under the same name, so every
row appears exactly once. Part files are plain Parquet: ``pyarrow.dataset``, pandas or DuckDB read
them without assay.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .errors import ConfigError, StorageError
from .io import Location, StorageOptions, read_parquet, write_json_atomic, write_parquet_atomic
from .records import Record, TestCase, conform
from .suite import Suite, utc_now

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
DONE = "_done"
_STAGE_RE = re.compile(r"[a-z][a-z0-9_]*")

RunStatus = Literal["created", "running", "completed", "failed"]


def canonical_hash(obj: Any, length: int = 16) -> str:
    """A stable hex hash of a JSON-able object (key order does not matter)."""
    payload = json.dumps(
        obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


class Shard(BaseModel):
    """A contiguous row range of one suite file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_id: int = Field(ge=0, description="Position of the shard in the plan.")
    file: str = Field(description="The suite file, relative to the suite folder.")
    row_start: int = Field(ge=0, description="First row (inclusive) within the file.")
    row_end: int = Field(ge=0, description="Last row (exclusive) within the file.")

    @property
    def rows(self) -> int:
        """Number of rows in the shard."""
        return self.row_end - self.row_start

    @property
    def key(self) -> str:
        """The shard's name in file names: zero-padded id."""
        return f"{self.shard_id:05d}"


class ShardPlan(BaseModel):
    """The deterministic split of a suite into shards, written into the manifest first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_size: int = Field(ge=1, description="Rows per shard (the last of a file may be shorter).")
    total_rows: int = Field(ge=0, description="Rows in the suite.")
    shards: list[Shard] = Field(description="The shards, in suite order.")


def plan_shards(suite: Suite, shard_size: int) -> ShardPlan:
    """Splits a suite by row ranges of its files: same suite and size, same plan."""
    if shard_size < 1:
        raise ConfigError("shard_size must be at least 1")
    shards: list[Shard] = []
    total = 0
    for loc, rows in zip(suite.files, suite.file_rows(), strict=True):
        rel = loc.url[len(suite.url) :].lstrip("/") or loc.name
        for start in range(0, rows, shard_size):
            end = min(start + shard_size, rows)
            shards.append(Shard(shard_id=len(shards), file=rel, row_start=start, row_end=end))
        total += rows
    return ShardPlan(shard_size=shard_size, total_rows=total, shards=shards)


def read_shard(suite: Suite, shard: Shard, columns: list[str] | None = None) -> pa.Table:
    """The rows of one shard (only ``columns``, if given), read from its suite file."""
    loc = suite.loc.join(shard.file) if suite.loc.isdir() else suite.loc
    with loc.open("rb") as f:
        pf = pq.ParquetFile(f)
        out: list[pa.RecordBatch] = []
        seen = 0
        for i in range(pf.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if seen + n > shard.row_start and seen < shard.row_end:
                group = pf.read_row_group(i, columns=columns)
                lo = max(shard.row_start - seen, 0)
                hi = min(shard.row_end - seen, n)
                out.extend(group.slice(lo, hi - lo).to_batches())
            seen += n
            if seen >= shard.row_end:
                break
        schema = pf.schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        table = pa.Table.from_batches(out, schema=schema)
    if columns is None:
        return conform(table, TestCase)
    full = TestCase.arrow_schema()
    return table.cast(pa.schema([full.field(c) for c in columns]))


class StageProgress(BaseModel):
    """How far one stage is, as the driver last wrote it (read by ``assay status``)."""

    model_config = ConfigDict(extra="forbid")

    shards_done: int = Field(default=0, description="Shards committed.")
    shards_total: int = Field(default=0, description="Shards in the plan.")
    rows_done: int = Field(default=0, description="Rows committed.")
    rows_total: int = Field(default=0, description="Rows in the plan.")
    rows_per_second: float | None = Field(
        default=None, description="Rows committed per second since this execution started."
    )
    eta_seconds: float | None = Field(default=None, description="Estimated seconds left.")
    updated_at: str = Field(default_factory=utc_now, description="UTC, ISO 8601.")


class RunManifest(BaseModel):
    """``manifest.json``: what the run is, what it covers, and how far it got."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(description="Derived from the config fields that change results.")
    status: RunStatus = Field(default="created", description="Where the run stands.")
    created_at: str = Field(default_factory=utc_now, description="UTC, ISO 8601.")
    updated_at: str = Field(default_factory=utc_now, description="UTC, ISO 8601.")
    config: dict[str, Any] = Field(default_factory=dict, description="The run config, resolved.")
    config_hash: str = Field(description="Hash of the config fields that change results.")
    suite_url: str = Field(description="The suite the run covers.")
    suite_fingerprint: str = Field(description="The suite's fingerprint at plan time.")
    plan: ShardPlan = Field(description="The shard plan.")
    stages: list[str] = Field(description="Stages that write parts, in pipeline order.")
    versions: dict[str, str] = Field(default_factory=dict, description="Software versions.")
    progress: dict[str, StageProgress] = Field(
        default_factory=dict, description="Per stage: shards and rows done, rate, ETA."
    )
    workers: dict[str, int] = Field(
        default_factory=dict,
        description="Rows served per Ray node id (targets and judges together) by this run's "
        "executions; shows which nodes did the work.",
    )
    error: str | None = Field(default=None, description="Why the run failed, if it did.")


def software_versions() -> dict[str, str]:
    """Versions recorded in a manifest."""
    return {"assay": __version__, "python": platform.python_version(), "pyarrow": pa.__version__}


class Marker(BaseModel):
    """The content of a completion marker."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    shard_id: int
    rows: int
    committed_at: str


class RunFolder:
    """One run's folder: manifest, per-shard parts per stage, completion markers, summary."""

    def __init__(self, output: str, run_id: str, storage_options: StorageOptions | None = None):
        """The folder ``<output>/<run_id>`` (nothing is created until written)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id):
            raise ConfigError(f"invalid run id {run_id!r}")
        self.run_id = run_id
        self.loc = Location.parse(output, storage_options).join(run_id)

    @property
    def url(self) -> str:
        """The folder's URL."""
        return self.loc.url

    # -- manifest ------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the run has a manifest."""
        return self.loc.join(MANIFEST).exists()

    def read_manifest(self) -> RunManifest:
        """The manifest; StorageError if there is none."""
        loc = self.loc.join(MANIFEST)
        if not loc.exists():
            raise StorageError(f"no run at {self.url} (no {MANIFEST})")
        return RunManifest.model_validate(loc.read_json())

    def write_manifest(self, manifest: RunManifest) -> RunManifest:
        """Writes the manifest atomically, stamping ``updated_at``."""
        if manifest.run_id != self.run_id:
            raise ConfigError(f"manifest of run {manifest.run_id} written to {self.run_id}")
        manifest = manifest.model_copy(update={"updated_at": utc_now()})
        write_json_atomic(self.loc.join(MANIFEST), manifest.model_dump(mode="json"))
        return manifest

    def init(self, manifest: RunManifest) -> RunManifest:
        """Creates the run, or checks that an existing one is the same run (resume)."""
        for stage in manifest.stages:
            _check_stage(stage)
        if self.exists():
            old = self.read_manifest()
            if old.config_hash != manifest.config_hash:
                raise ConfigError(
                    f"run {self.run_id} exists with a different config (hash {old.config_hash}, "
                    f"now {manifest.config_hash}); use another output or run id"
                )
            if old.suite_fingerprint != manifest.suite_fingerprint:
                raise ConfigError(
                    f"run {self.run_id} was planned over suite {old.suite_fingerprint}, but the "
                    f"suite is now {manifest.suite_fingerprint}; the suite changed under the run"
                )
            return old
        return self.write_manifest(manifest)

    def update_manifest(self, **changes: Any) -> RunManifest:
        """Reads, changes and rewrites the manifest (the driver is its only writer)."""
        merged = {**self.read_manifest().model_dump(), **changes}
        try:
            manifest = RunManifest.model_validate(merged)
        except ValueError as exc:
            raise ConfigError(f"invalid manifest update {sorted(changes)}: {exc}") from exc
        return self.write_manifest(manifest)

    # -- parts and markers ---------------------------------------------------------------------

    def part(self, stage: str, shard_id: int) -> Location:
        """Where a shard's part of a stage lives."""
        return self.loc.join(_check_stage(stage), f"part-{shard_id:05d}.parquet")

    def marker(self, stage: str, shard_id: int) -> Location:
        """Where a shard's completion marker of a stage lives."""
        return self.loc.join(DONE, f"{_check_stage(stage)}-{shard_id:05d}")

    def commit(self, stage: str, shard_id: int, table: pa.Table) -> Marker:
        """Writes a shard's part atomically, then its completion marker.

        A rerun of a committed shard first removes the old marker, so a crash in between leaves
        the shard not done (redone on resume) rather than an old marker over a new part.
        """
        self.marker(stage, shard_id).remove()
        write_parquet_atomic(self.part(stage, shard_id), table)
        marker = Marker(stage=stage, shard_id=shard_id, rows=table.num_rows, committed_at=utc_now())
        write_json_atomic(self.marker(stage, shard_id), marker.model_dump())
        return marker

    def commit_records(self, stage: str, shard_id: int, records: list[Record]) -> Marker:
        """Commits records of one type (their schema, with its version, goes into the file)."""
        if not records:
            raise ValueError("commit_records needs at least one record (use commit for empty)")
        return self.commit(stage, shard_id, type(records[0]).to_table(records))

    def is_done(self, stage: str, shard_id: int) -> bool:
        """Whether a shard's stage is committed."""
        return self.marker(stage, shard_id).exists()

    def markers(self, stage: str) -> dict[int, Marker]:
        """The committed shards of a stage, from one listing of the markers folder."""
        _check_stage(stage)
        done = self.loc.join(DONE)
        if not done.exists():
            return {}
        out: dict[int, Marker] = {}
        prefix = f"{stage}-"
        for path in done.fs.ls(done.path, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                marker = Marker.model_validate_json(done.fs.cat_file(path))
                out[marker.shard_id] = marker
        return out

    def done_shards(self, stage: str) -> set[int]:
        """Ids of the committed shards of a stage."""
        return set(self.markers(stage))

    def iter_stage(self, stage: str) -> Iterator[tuple[int, pa.Table]]:
        """Committed parts of a stage, in shard order; parts without a marker are never read."""
        for shard_id, marker in sorted(self.markers(stage).items()):
            loc = self.part(stage, shard_id)
            if not loc.exists():
                raise StorageError(
                    f"{marker.stage} shard {shard_id} is marked done but {loc.url} is missing"
                )
            table = read_parquet(loc)
            if table.num_rows != marker.rows:
                raise StorageError(
                    f"{loc.url} has {table.num_rows} rows, its marker says {marker.rows}"
                )
            yield shard_id, table

    def read_stage_part(self, stage: str, shard_id: int) -> pa.Table:
        """One committed part (StorageError if the shard is not committed or does not match)."""
        loc = self.marker(stage, shard_id)
        if not loc.exists():
            raise StorageError(f"{stage} shard {shard_id} of run {self.run_id} is not committed")
        marker = Marker.model_validate_json(loc.read_bytes())
        table = read_parquet(self.part(stage, shard_id))
        if table.num_rows != marker.rows:
            raise StorageError(
                f"{self.part(stage, shard_id).url} has {table.num_rows} rows, its marker says "
                f"{marker.rows}"
            )
        return table

    def read_stage(self, stage: str) -> pa.Table:
        """All committed rows of a stage as one table (empty if none)."""
        tables = [t for _, t in self.iter_stage(stage)]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    # -- summary -------------------------------------------------------------------------------

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Writes ``summary.json`` atomically."""
        write_json_atomic(self.loc.join(SUMMARY), summary)

    def has_summary(self) -> bool:
        """Whether ``summary.json`` exists."""
        return self.loc.join(SUMMARY).exists()

    def read_summary(self) -> dict[str, Any]:
        """The run's summary."""
        data: dict[str, Any] = self.loc.join(SUMMARY).read_json()
        return data


def _check_stage(stage: str) -> str:
    if not _STAGE_RE.fullmatch(stage):
        raise ConfigError(f"invalid stage name {stage!r}")
    return stage
