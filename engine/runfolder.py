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

**Integrity.** A marker says what it commits: the plan's fingerprint (shard plan, suite
fingerprint and config hash, see :func:`plan_fingerprint`), the shard's file and row range, a
digest of the shard's test ids (:func:`ids_digest`), and the part's row count, byte size and
SHA-256. Three levels of checking use them:

- *marker check* (:meth:`RunFolder.markers`): a marker counts only if it parses, names its own
  shard, was written under the run's current plan and covers the plan's row range for that
  shard; anything else (a marker of an older plan, of a shard the plan does not have, of an
  older assay) is not a commit;
- *cheap check* (:meth:`RunFolder.committed`, :meth:`RunFolder.done_shards`, used on resume):
  the marker check plus one listing per stage: the part must exist with the recorded size.
  Nothing is read; a truncated, replaced or deleted part makes its shard not done;
- *read check* (:meth:`RunFolder.read_stage_part`, :meth:`RunFolder.iter_stage`): every part
  read is compared with its marker (rows, size, checksum) and an unreadable part raises a
  :class:`StorageError` naming the file. ``assay verify`` (:mod:`assay.engine.verify`) adds
  the deep checks: every key once, every id in its shard.

``summary.json`` records what it summarises (:meth:`RunFolder.summary_stamp`); readers take it
only while it matches the committed markers (:meth:`RunFolder.current_summary`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .errors import ConfigError, StorageError
from .io import Location, StorageOptions, write_bytes_atomic, write_json_atomic
from .records import Record, TestCase, conform
from .suite import Suite, utc_now

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
DONE = "_done"
_STAGE_RE = re.compile(r"[a-z][a-z0-9_]*")
_PART_RE = re.compile(r"part-(\d+)\.parquet")

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
    plan_fingerprint: str | None = Field(
        default=None,
        description="Fingerprint of the plan, suite and config (see plan_fingerprint); every "
        "completion marker carries it.",
    )

    def fingerprint(self) -> str:
        """The plan fingerprint, computed from the manifest's plan, suite and config hash."""
        return plan_fingerprint(self.plan, self.suite_fingerprint, self.config_hash)


def plan_fingerprint(plan: ShardPlan, suite_fingerprint: str, config_hash: str) -> str:
    """What a completion marker belongs to: the shard plan over one suite under one config.

    Two plans with another shard size, suite or config never share a fingerprint, so a marker
    of one is never counted as a commit of the other.
    """
    return canonical_hash(
        {"plan": plan.model_dump(mode="json"), "suite": suite_fingerprint, "config": config_hash},
        32,
    )


def ids_digest(ids: Iterable[Any] | pa.Array | pa.ChunkedArray) -> str:
    """SHA-256 over a shard's test ids, in order (each followed by a newline)."""
    values = ids.to_pylist() if isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids
    h = hashlib.sha256()
    for value in values:
        h.update(f"{value}\n".encode())
    return h.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions recorded in a manifest."""
    return {"assay": __version__, "python": platform.python_version(), "pyarrow": pa.__version__}


class Marker(BaseModel):
    """The content of a completion marker: what it commits, and how to check it.

    The fields after ``committed_at`` are None only in markers written by an assay that did not
    record them, or by :meth:`RunFolder.commit` on a folder without a manifest (no plan).
    """

    model_config = ConfigDict(extra="forbid")

    stage: str
    shard_id: int
    rows: int = Field(description="Rows of the part.")
    committed_at: str
    plan: str | None = Field(default=None, description="Plan fingerprint it was committed under.")
    file: str | None = Field(default=None, description="The shard's suite file.")
    row_start: int | None = Field(default=None, description="The shard's first row.")
    row_end: int | None = Field(default=None, description="The shard's end row (exclusive).")
    ids: str | None = Field(default=None, description="ids_digest of the shard's test ids.")
    size: int | None = Field(default=None, description="Bytes of the part file.")
    sha256: str | None = Field(default=None, description="SHA-256 of the part file.")


@dataclass
class Rejected:
    """A marker or part that does not count as a commit, and why."""

    url: str
    reason: str
    stage: str
    shard_id: int | None = None


@dataclass
class StageScan:
    """One listing of a stage's markers: those that count, and those that do not."""

    stage: str
    valid: dict[int, Marker] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)


class RunFolder:
    """One run's folder: manifest, per-shard parts per stage, completion markers, summary."""

    def __init__(self, output: str, run_id: str, storage_options: StorageOptions | None = None):
        """The folder ``<output>/<run_id>`` (nothing is created until written)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id):
            raise ConfigError(f"invalid run id {run_id!r}")
        self.run_id = run_id
        self.loc = Location.parse(output, storage_options).join(run_id)
        self._plan: tuple[str, dict[int, Shard]] | None = None  # (fingerprint, shards by id)

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
        try:
            manifest = RunManifest.model_validate(loc.read_json())
        except ValueError as exc:
            raise StorageError(f"{loc.url} is not a valid run manifest: {exc}") from exc
        self._remember(manifest)
        return manifest

    def write_manifest(self, manifest: RunManifest) -> RunManifest:
        """Writes the manifest atomically, stamping ``updated_at`` (and the plan fingerprint)."""
        if manifest.run_id != self.run_id:
            raise ConfigError(f"manifest of run {manifest.run_id} written to {self.run_id}")
        manifest = manifest.model_copy(
            update={"updated_at": utc_now(), "plan_fingerprint": manifest.fingerprint()}
        )
        write_json_atomic(self.loc.join(MANIFEST), manifest.model_dump(mode="json"))
        self._remember(manifest)
        return manifest

    def _remember(self, manifest: RunManifest) -> None:
        self._plan = (manifest.fingerprint(), {s.shard_id: s for s in manifest.plan.shards})

    def _plan_context(self) -> tuple[str, dict[int, Shard]] | None:
        """The current plan (fingerprint, shards), or None for a folder without a manifest."""
        if self._plan is None and self.exists():
            self.read_manifest()
        return self._plan

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

    def commit(
        self,
        stage: str,
        shard_id: int,
        table: pa.Table,
        ids: Iterable[Any] | pa.Array | pa.ChunkedArray | None = None,
    ) -> Marker:
        """Writes a shard's part atomically, then its completion marker.

        ``ids`` are the shard's test ids in suite order (the driver has them in hand); their
        digest goes into the marker so ``assay verify`` can check that the part belongs to its
        shard. On a folder with a manifest the marker records the plan fingerprint and the
        shard's row range, and a shard the plan does not have is refused.

        A rerun of a committed shard first removes the old marker, so a crash in between leaves
        the shard not done (redone on resume) rather than an old marker over a new part.
        """
        _check_stage(stage)
        plan = self._plan_context()
        shard: Shard | None = None
        if plan is not None:
            shard = plan[1].get(shard_id)
            if shard is None:
                raise ConfigError(f"shard {shard_id} is not in the plan of run {self.run_id}")
        remove_missing_ok(self.marker(stage, shard_id))
        data = parquet_bytes(table)
        write_bytes_atomic(self.part(stage, shard_id), data)
        marker = Marker(
            stage=stage,
            shard_id=shard_id,
            rows=table.num_rows,
            committed_at=utc_now(),
            plan=plan[0] if plan is not None else None,
            file=shard.file if shard is not None else None,
            row_start=shard.row_start if shard is not None else None,
            row_end=shard.row_end if shard is not None else None,
            ids=ids_digest(ids) if ids is not None else None,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        write_json_atomic(self.marker(stage, shard_id), marker.model_dump())
        return marker

    def commit_records(self, stage: str, shard_id: int, records: list[Record]) -> Marker:
        """Commits records of one type (their schema, with its version, goes into the file)."""
        if not records:
            raise ValueError("commit_records needs at least one record (use commit for empty)")
        return self.commit(stage, shard_id, type(records[0]).to_table(records))

    def is_done(self, stage: str, shard_id: int) -> bool:
        """Whether a shard's stage is committed (marker check, see the module docstring)."""
        return shard_id in self.markers(stage)

    def scan(self, stage: str) -> StageScan:
        """One listing of a stage's markers, each checked against the current plan.

        A marker that cannot be read, names another shard, was written under another plan (or
        by an assay that did not record the plan) or covers other rows than the plan's shard is
        rejected, with the reason. A marker removed while the folder is listed is left out.
        """
        _check_stage(stage)
        out = StageScan(stage)
        done = self.loc.join(DONE)
        try:
            paths = _fresh_listing(done, detail=False)
        except FileNotFoundError:
            return out
        plan = self._plan_context()
        prefix = f"{stage}-"
        wanted: dict[str, int] = {}
        for path in sorted(paths):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                wanted[path] = int(name[len(prefix) :])
        contents = _read_all(done, list(wanted))
        for path, shard_id in wanted.items():
            url = done.join(path.rstrip("/").rsplit("/", 1)[-1]).url
            data = contents.get(path)
            if data is None:
                continue  # removed since the listing (a rerun of the shard is committing it)
            try:
                marker = Marker.model_validate_json(data)
            except ValueError as exc:
                unreadable = f"unreadable marker: {' '.join(str(exc).split())[:200]}"
                out.rejected.append(Rejected(url, unreadable, stage, shard_id))
                continue
            mismatch = _marker_mismatch(marker, stage, shard_id, plan)
            if mismatch is not None:
                out.rejected.append(Rejected(url, mismatch, stage, shard_id))
            else:
                out.valid[shard_id] = marker
        return out

    def markers(self, stage: str) -> dict[int, Marker]:
        """The markers of a stage that count under the current plan (see :meth:`scan`)."""
        return self.scan(stage).valid

    def part_sizes(self, stage: str) -> dict[int, int]:
        """Byte size of each part file of a stage, by shard id (one listing)."""
        folder = self.loc.join(_check_stage(stage))
        try:
            entries = _fresh_listing(folder, detail=True)
        except FileNotFoundError:
            return {}
        out: dict[int, int] = {}
        for entry in entries:
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            m = _PART_RE.fullmatch(name)
            if m and entry.get("type", "file") == "file":
                out[int(m.group(1))] = int(entry.get("size") or 0)
        return out

    def check_committed(self, stage: str) -> StageScan:
        """The cheap check: :meth:`scan`, then each part must exist with its recorded size.

        Two listings, no part is read. Shards whose part is missing or has another size than
        its marker records are moved to ``rejected``.
        """
        scan = self.scan(stage)
        sizes = self.part_sizes(stage)
        for shard_id, marker in list(scan.valid.items()):
            size = sizes.get(shard_id)
            url = self.part(stage, shard_id).url
            if size is None:
                reason = "the part is missing"
            elif marker.size is not None and size != marker.size:
                reason = f"the part has {size:,} bytes, its marker says {marker.size:,}"
            else:
                continue
            del scan.valid[shard_id]
            scan.rejected.append(Rejected(url, reason, stage, shard_id))
        return scan

    def committed(self, stage: str) -> dict[int, Marker]:
        """The shards of a stage that pass the cheap check (marker valid, part of its size)."""
        return self.check_committed(stage).valid

    def done_shards(self, stage: str) -> set[int]:
        """Ids of the committed shards of a stage (cheap check: see :meth:`committed`)."""
        return set(self.committed(stage))

    def prune(self) -> list[Rejected]:
        """Removes what must not count under the current plan; returns what it removed.

        Markers that fail the cheap check go (so their shards are redone and a half-checked
        marker never lingers), so do markers of a stage whose earlier stage is not done for the
        shard (stages follow ``manifest.stages``), and so do part files of shards the plan does
        not have (a plan of another shard size left them; a plain ``pyarrow.dataset`` read
        would count them).
        Parts of shards the plan has are left: redoing the shard overwrites them.
        """
        manifest = self.read_manifest()
        in_plan = {s.shard_id for s in manifest.plan.shards}
        removed: list[Rejected] = []
        earlier: set[int] | None = None  # shards committed in every earlier stage
        for n, stage in enumerate(manifest.stages):
            scan = self.check_committed(stage)
            for bad in scan.rejected:
                assert bad.shard_id is not None
                remove_missing_ok(self.marker(stage, bad.shard_id))
                removed.append(bad)
            if earlier is not None:
                # A stage counts only over the stages before it: verdicts whose generations are
                # gone are redone with them, so the stages never disagree. The earlier stages
                # are listed again first: a shard committed (both stages, in order) since their
                # first listing is not an orphan.
                if set(scan.valid) - earlier:
                    fresh = [set(self.committed(before)) for before in manifest.stages[:n]]
                    earlier = set.intersection(*fresh)
                for shard_id in sorted(set(scan.valid) - earlier):
                    loc = self.marker(stage, shard_id)
                    remove_missing_ok(loc)
                    del scan.valid[shard_id]
                    why = "an earlier stage of the shard is not done"
                    removed.append(Rejected(loc.url, why, stage, shard_id))
            earlier = set(scan.valid) if earlier is None else earlier & set(scan.valid)
            for shard_id in sorted(set(self.part_sizes(stage)) - in_plan):
                loc = self.part(stage, shard_id)
                remove_missing_ok(loc)
                removed.append(
                    Rejected(loc.url, "a part of a shard the plan does not have", stage, shard_id)
                )
        return removed

    def iter_stage(self, stage: str) -> Iterator[tuple[int, pa.Table]]:
        """Committed parts of a stage, in shard order; parts without a marker are never read.

        Each part is checked against its marker as it is read (see :meth:`read_stage_part`).
        """
        for shard_id, marker in sorted(self.markers(stage).items()):
            yield shard_id, self._read_part(stage, shard_id, marker)

    def read_stage_part(self, stage: str, shard_id: int) -> pa.Table:
        """One committed part (StorageError if the shard is not committed or does not match)."""
        loc = self.marker(stage, shard_id)
        scan = self.scan(stage)
        marker = scan.valid.get(shard_id)
        if marker is None:
            why = next((r.reason for r in scan.rejected if r.shard_id == shard_id), None)
            raise StorageError(
                f"{stage} shard {shard_id} of run {self.run_id} is not committed"
                + (f" ({loc.url}: {why})" if why else "")
            )
        return self._read_part(stage, shard_id, marker)

    def _read_part(self, stage: str, shard_id: int, marker: Marker) -> pa.Table:
        """Reads a part whole and checks it against its marker: rows, size, checksum."""
        loc = self.part(stage, shard_id)
        try:
            data = loc.read_bytes()
        except FileNotFoundError:
            raise StorageError(
                f"{marker.stage} shard {shard_id} is marked done but {loc.url} is missing"
            ) from None
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StorageError(
                f"{loc.url} is not a readable Parquet file ({len(data):,} bytes"
                f"{f', its marker says {marker.size:,}' if marker.size is not None else ''}): "
                f"{' '.join(str(exc).split())[:200]}; `assay verify --repair` then `assay run` "
                "redoes the shard"
            ) from exc
        if table.num_rows != marker.rows:
            raise StorageError(
                f"{loc.url} has {table.num_rows} rows, its marker says {marker.rows}"
            )
        if marker.size is not None and len(data) != marker.size:
            raise StorageError(
                f"{loc.url} has {len(data):,} bytes, its marker says {marker.size:,}"
            )
        if marker.sha256 is not None and hashlib.sha256(data).hexdigest() != marker.sha256:
            raise StorageError(
                f"{loc.url} does not match its marker's checksum (corrupted or replaced); "
                "`assay verify --repair` then `assay run` redoes the shard"
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
        """Writes ``summary.json`` atomically.

        A summary meant to be served again carries ``integrity``: the :meth:`summary_stamp`
        taken before its parts were read (see :meth:`current_summary`).
        """
        write_json_atomic(self.loc.join(SUMMARY), summary)

    def has_summary(self) -> bool:
        """Whether ``summary.json`` exists (current or not: see :meth:`current_summary`)."""
        return self.loc.join(SUMMARY).exists()

    def read_summary(self) -> dict[str, Any]:
        """The run's summary, as written (current or not: see :meth:`current_summary`)."""
        data: dict[str, Any] = self.loc.join(SUMMARY).read_json()
        return data

    def summary_stamp(self) -> dict[str, Any]:
        """What a summary computed now would summarise: the plan and the committed shards.

        The plan fingerprint, the number of committed shards per stage and a hash over each
        committed marker's (stage, shard, rows, checksum), from the cheap check.
        """
        manifest = self.read_manifest()
        shards: dict[str, int] = {}
        keys: list[list[Any]] = []
        for stage in manifest.stages:
            committed = self.committed(stage)
            shards[stage] = len(committed)
            keys.extend(
                [stage, i, m.rows, m.sha256 or m.committed_at] for i, m in sorted(committed.items())
            )
        return {
            "plan": manifest.fingerprint(),
            "shards": shards,
            "markers": canonical_hash(keys, 32),
        }

    def current_summary(self) -> dict[str, Any] | None:
        """``summary.json`` if it summarises exactly the shards committed now, else None.

        A summary without a stamp, or whose stamp differs (a marker removed, a part truncated
        or replaced, another plan), is stale: callers recompute from the parts.
        """
        loc = self.loc.join(SUMMARY)
        try:
            data = loc.read_json()
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("%s is not valid JSON; recomputing the summary", loc.url)
            return None
        if not isinstance(data, dict) or data.get("integrity") != self.summary_stamp():
            return None
        return data


def parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """A table encoded as one Parquet file (the schema's metadata lands in its footer)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    return bytes(sink.getvalue().to_pybytes())


def _fresh_listing(loc: Location, detail: bool) -> list[Any]:
    """A folder's listing from the store itself, not from fsspec's listings cache.

    s3fs and gcsfs cache listings per file system instance; another process (a second driver,
    a user's upload) changes the folder behind that cache, and a check must see what is there.
    """
    invalidate = getattr(loc.fs, "invalidate_cache", None)
    if callable(invalidate):
        invalidate(loc.path)
    return list(loc.fs.ls(loc.path, detail=detail))


def _read_all(loc: Location, paths: list[str]) -> dict[str, bytes]:
    """The files at ``paths`` (of ``loc``'s file system), read concurrently where it can.

    One ``cat`` over all of them (s3fs and gcsfs fetch them at once); a file gone since it was
    listed is left out, and any other error is retried file by file with the file system's
    retries (a transient error must not make a marker look unreadable).
    """
    if not paths:
        return {}
    try:
        got = loc.fs.cat(paths, on_error="return")
    except Exception:  # anything at all: fall back to one file at a time
        got = {}
    out: dict[str, bytes] = {}
    for path in paths:
        value = got.get(path) if isinstance(got, dict) else None
        if isinstance(value, bytes):
            out[path] = value
            continue
        if isinstance(value, FileNotFoundError):
            continue
        try:
            out[path] = loc.fs.cat_file(path)
        except FileNotFoundError:
            continue
    return out


def remove_missing_ok(loc: Location) -> None:
    """Deletes a file; one that is already gone (another process removed it) is fine."""
    with contextlib.suppress(FileNotFoundError):
        loc.remove()


def _marker_mismatch(
    marker: Marker, stage: str, shard_id: int, plan: tuple[str, dict[int, Shard]] | None
) -> str | None:
    """Why a marker does not commit ``stage`` of ``shard_id`` under ``plan`` (None: it does)."""
    if marker.stage != stage or marker.shard_id != shard_id:
        return f"the marker names {marker.stage} shard {marker.shard_id}"
    if plan is None:
        return None  # a folder without a manifest: nothing to check against
    fingerprint, shards = plan
    shard = shards.get(shard_id)
    if shard is None:
        return f"shard {shard_id} is not in the run's plan ({len(shards)} shards)"
    if marker.plan is None:
        return "the marker records no plan (written by an older assay); the shard is redone"
    if marker.plan != fingerprint:
        return f"committed under another plan ({marker.plan[:12]}), the run's is {fingerprint[:12]}"
    if (marker.file, marker.row_start, marker.row_end) != (
        shard.file,
        shard.row_start,
        shard.row_end,
    ):
        return (
            f"covers {marker.file}[{marker.row_start}:{marker.row_end}], the plan's shard "
            f"{shard.file}[{shard.row_start}:{shard.row_end}]"
        )
    return None


def _check_stage(stage: str) -> str:
    if not _STAGE_RE.fullmatch(stage):
        raise ConfigError(f"invalid stage name {stage!r}")
    return stage
