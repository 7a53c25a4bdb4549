"""Suites: Parquet datasets of :class:`~.records.TestCase` rows at any fsspec URL.

Layout written by assay::

    <suite>/
      part-00000.parquet ...   TestCase rows (schema stamped with the schema version)
      _suite.json              the suite manifest, written last: name, fingerprint, counts, files

A folder of TestCase Parquet files written by anything else is a suite too (without a manifest);
so is a single Parquet file. The **fingerprint** identifies the set of tests: it is computed from
the test ids alone, independent of row order and file layout, so two suites with the same tests
have the same fingerprint and runs over them can be compared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .errors import InputError, StorageError
from .io import Location, StorageOptions, atomic_open, write_json_atomic
from .records import SCHEMA_VERSION, TestCase, conform, schema_version_of

SUITE_MANIFEST = "_suite.json"
PART_TEMPLATE = "part-{:05d}.parquet"
_FP_MOD = 1 << 128


class SuiteCounts(BaseModel):
    """Row counts of a suite by language, S-Eval L1 risk and attack."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(default=0, description="Number of test cases.")
    by_lang: dict[str, int] = Field(default_factory=dict, description="Rows per language.")
    by_risk_l1: dict[str, int] = Field(
        default_factory=dict, description="Rows per L1 risk ('(none)' for rows without a risk)."
    )
    by_attack: dict[str, int] = Field(
        default_factory=dict, description="Rows per attack ('(base)' for base prompts)."
    )
    with_response: int = Field(default=0, description="Rows that carry a fixed response.")
    with_label: int = Field(default=0, description="Rows that carry a reference label.")


class SuiteFile(BaseModel):
    """One committed Parquet file of a suite."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File name relative to the suite folder.")
    rows: int = Field(description="Rows in the file.")


class SuiteManifest(BaseModel):
    """The ``_suite.json`` of a suite written by assay."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The suite's name (also in every row's `suite` column).")
    fingerprint: str = Field(description="Order-independent hash of the suite's test ids.")
    schema_version: str = Field(default=SCHEMA_VERSION, description="TestCase schema version.")
    created_at: str = Field(description="UTC time the suite was committed (ISO 8601).")
    assay_version: str = Field(default=__version__, description="assay version that wrote it.")
    created_by: list[str] = Field(
        default_factory=list, description="The commands that made the suite, newest last."
    )
    parents: list[str] = Field(
        default_factory=list, description="Fingerprints of the suites this one was derived from."
    )
    files: list[SuiteFile] = Field(default_factory=list, description="The committed files.")
    counts: SuiteCounts = Field(default_factory=SuiteCounts, description="Row counts.")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="How it was made, e.g. the import format and source."
    )


class Fingerprint:
    """Accumulates the order-independent fingerprint of a set of test ids."""

    def __init__(self) -> None:
        """An empty fingerprint."""
        self.count = 0
        self._sum = 0

    def add(self, test_id: str) -> None:
        """Adds one test id."""
        self.count += 1
        digest = hashlib.sha256(test_id.encode()).digest()[:16]
        self._sum = (self._sum + int.from_bytes(digest, "big")) % _FP_MOD

    def add_many(self, test_ids: Iterable[str]) -> None:
        """Adds several test ids."""
        for tid in test_ids:
            self.add(tid)

    def hexdigest(self) -> str:
        """The fingerprint: 32 hex characters."""
        payload = f"assay-suite-v1:{self.count}:{self._sum:032x}".encode()
        return hashlib.sha256(payload).hexdigest()[:32]


class CountAccumulator:
    """Accumulates :class:`SuiteCounts` over Arrow batches or test cases."""

    def __init__(self) -> None:
        """Empty counts."""
        self.rows = 0
        self.by_lang: Counter[str] = Counter()
        self.by_risk_l1: Counter[str] = Counter()
        self.by_attack: Counter[str] = Counter()
        self.with_response = 0
        self.with_label = 0

    def add_case(self, case: TestCase) -> None:
        """Counts one test case."""
        self.rows += 1
        self.by_lang[case.lang] += 1
        self.by_risk_l1[case.l1 or "(none)"] += 1
        self.by_attack[case.attack or "(base)"] += 1
        self.with_response += case.response is not None
        self.with_label += case.label is not None

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Counts the rows of an Arrow batch with TestCase columns."""
        cols = batch.to_pydict()
        self.rows += batch.num_rows
        self.by_lang.update(cols["lang"])
        self.by_risk_l1.update(r.split("/", 1)[0] if r else "(none)" for r in cols["risk"])
        self.by_attack.update(a or "(base)" for a in cols["attack"])
        self.with_response += sum(r is not None for r in cols["response"])
        self.with_label += sum(lab is not None for lab in cols["label"])

    def result(self) -> SuiteCounts:
        """The counts, each mapping sorted by descending count."""

        def ordered(c: Counter[str]) -> dict[str, int]:
            return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

        return SuiteCounts(
            rows=self.rows,
            by_lang=ordered(self.by_lang),
            by_risk_l1=ordered(self.by_risk_l1),
            by_attack=ordered(self.by_attack),
            with_response=self.with_response,
            with_label=self.with_label,
        )


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the second."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


class SuiteWriter:
    """Streams test cases into a new suite folder and commits it atomically at the end.

    Rows are buffered and written in Arrow batches into part files under hidden temporary names;
    :meth:`commit` renames them into place, then writes the manifest. Until the manifest exists,
    :func:`open_suite` refuses the folder, so a crashed write is never read as a suite.
    """

    def __init__(
        self,
        url: str,
        name: str | None = None,
        storage_options: StorageOptions | None = None,
        rows_per_file: int = 100_000,
        batch_rows: int = 5_000,
        overwrite: bool = False,
        batch_chars: int = 8_000_000,
    ) -> None:
        """Prepares to write a suite at ``url`` (an error if one is there, unless overwrite)."""
        self.loc = Location.parse(url, storage_options)
        self.name = name or self.loc.name
        if not overwrite and self.loc.join(SUITE_MANIFEST).exists():
            raise StorageError(f"a suite already exists at {url} (pass --overwrite to replace it)")
        if not overwrite and self.loc.exists() and not self.loc.isdir():
            raise StorageError(f"{url} exists and is not a folder")
        if not overwrite and self.loc.isdir() and any(_is_part(p) for p in self._list_entries()):
            raise StorageError(
                f"{url} already holds Parquet files (pass --overwrite to replace them)"
            )
        self.rows_per_file = rows_per_file
        self.batch_rows = batch_rows
        self.batch_chars = batch_chars
        self._schema = TestCase.arrow_schema()
        self._buffer: list[dict[str, Any]] = []
        self._buffer_chars = 0
        self._temps: list[tuple[Location, int]] = []
        self._writer: pq.ParquetWriter | None = None
        self._file: Any = None
        self._file_rows = 0
        self._token = hashlib.sha256(f"{url}{utc_now()}{id(self)}".encode()).hexdigest()[:10]
        self.fingerprint = Fingerprint()
        self.counts = CountAccumulator()
        self._closed = False

    def write(self, case: TestCase) -> None:
        """Adds one test case (its ``suite`` field is set to the suite's name)."""
        self._check_open()
        if case.suite != self.name:
            case = case.model_copy(update={"suite": self.name})
        self._buffer.append(case.to_row())
        self._buffer_chars += len(case.text) + len(case.response or "")
        self.fingerprint.add(case.test_id)
        self.counts.add_case(case)
        room = self.rows_per_file - self._file_rows  # rows left in the current part file
        if (
            len(self._buffer) >= min(self.batch_rows, room)
            or self._buffer_chars >= self.batch_chars
        ):
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        """Adds the rows of a TestCase table (e.g. made by ``TestCase.to_table``) without a
        Python object per row; their ``suite`` column is set to the suite's name."""
        self._check_open()
        table = conform(table, TestCase)
        names = pa.array([self.name] * table.num_rows, pa.string())
        index = self._schema.get_field_index("suite")
        table = table.set_column(index, self._schema.field(index), names)
        self.fingerprint.add_many(table.column("test_id").to_pylist())
        self.counts.add_batch(table)
        self._flush()  # rows buffered by write() keep their place before these
        offset = 0
        while offset < table.num_rows:
            room = self.rows_per_file - self._file_rows
            part = table.slice(offset, room)
            self._write_arrow(part)
            offset += part.num_rows

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self._schema)
        self._buffer.clear()
        self._buffer_chars = 0
        self._write_arrow(table)

    def _write_arrow(self, table: pa.Table) -> None:
        """Writes a table into the current part file (opening one when none is open)."""
        if self._writer is None:
            tmp = self.loc.join(f".tmp-{self._token}-{len(self._temps):05d}.parquet")
            self.loc.makedirs()
            self._file = tmp.open("wb")
            self._writer = pq.ParquetWriter(self._file, self._schema, compression="zstd")
            self._temps.append((tmp, 0))
            self._file_rows = 0
        self._writer.write_table(table)
        self._file_rows += table.num_rows
        self._temps[-1] = (self._temps[-1][0], self._file_rows)
        if self._file_rows >= self.rows_per_file:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            self._writer = None
            self._file = None
            self._file_rows = 0

    def commit(
        self,
        created_by: list[str] | None = None,
        parents: list[str] | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> SuiteManifest:
        """Writes the remaining rows, moves the files into place and writes the manifest."""
        self._check_open()
        self._flush()
        self._close_file()
        self._closed = True
        # Overwrite: the old manifest goes first (the folder then reads as unfinished while
        # our temporary files exist), then old parts and stale temporaries of crashed writes.
        self.loc.join(SUITE_MANIFEST).remove()
        ours = {t.path for t, _ in self._temps}
        for path in self._list_entries():
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if path not in ours and (_is_part(path) or name.startswith(".tmp-")):
                self.loc.fs.rm(path)
        files = []
        for i, (tmp, rows) in enumerate(self._temps):
            final = self.loc.join(PART_TEMPLATE.format(i))
            self.loc.fs.mv(tmp.path, final.path)
            files.append(SuiteFile(path=final.name, rows=rows))
        self.loc.makedirs()
        manifest = SuiteManifest(
            name=self.name,
            fingerprint=self.fingerprint.hexdigest(),
            created_at=utc_now(),
            created_by=created_by or [],
            parents=parents or [],
            files=files,
            counts=self.counts.result(),
            provenance=provenance or {},
        )
        write_json_atomic(self.loc.join(SUITE_MANIFEST), manifest.model_dump(mode="json"))
        return manifest

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(
                f"the suite writer for {self.loc.url} was already committed or aborted"
            )

    def abort(self) -> None:
        """Discards everything written so far; the output location is left as it was."""
        self._closed = True
        try:
            self._close_file()
        finally:
            for tmp, _ in self._temps:
                tmp.remove()
            self._temps.clear()
            self._buffer.clear()

    def _list_entries(self) -> list[str]:
        if not self.loc.exists():
            return []
        return list(self.loc.fs.ls(self.loc.path, detail=False))


def _is_part(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.endswith(".parquet") and not name.startswith((".", "_"))


class Suite:
    """A suite opened for reading: its manifest (if any) and its Parquet files."""

    def __init__(self, loc: Location, files: list[Location], manifest: SuiteManifest | None):
        """Use :func:`open_suite`."""
        self.loc = loc
        self.files = files
        self.manifest = manifest

    @property
    def url(self) -> str:
        """Where the suite lives."""
        return self.loc.url

    @property
    def name(self) -> str:
        """The suite's name (from the manifest, else the folder or file name)."""
        if self.manifest:
            return self.manifest.name
        return self.loc.name.removesuffix(".parquet")

    def iter_batches(
        self, batch_size: int = 10_000, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Streams the suite's rows as Arrow batches, in file order, conformed to the schema."""
        schema = TestCase.arrow_schema()
        wanted = columns or schema.names
        for loc in self.files:
            with loc.open("rb") as f:
                pf = pq.ParquetFile(f)
                _check_schema(pf.schema_arrow, loc.url)
                for batch in pf.iter_batches(batch_size=batch_size, columns=wanted):
                    table = pa.Table.from_batches([batch])
                    target = pa.schema([schema.field(n) for n in wanted])
                    yield from table.cast(target).to_batches()

    def iter_cases(self, batch_size: int = 10_000) -> Iterator[TestCase]:
        """Streams the suite's test cases."""
        for batch in self.iter_batches(batch_size):
            yield from TestCase.from_table(batch)

    def to_table(self) -> pa.Table:
        """The whole suite as one Arrow table (for small suites and tests)."""
        batches = list(self.iter_batches())
        return pa.Table.from_batches(batches, schema=TestCase.arrow_schema())

    def file_rows(self) -> list[int]:
        """Row count of each file, from the manifest or the Parquet footers."""
        if self.manifest:
            return [f.rows for f in self.manifest.files]
        rows = []
        for loc in self.files:
            with loc.open("rb") as f:
                rows.append(pq.ParquetFile(f).metadata.num_rows)
        return rows

    def scan(self, ids: set[str] | None = None) -> tuple[SuiteCounts, str]:
        """Counts and fingerprint computed from the data itself (one streaming pass); the
        test ids are added to ``ids`` when it is given."""
        counts = CountAccumulator()
        fp = Fingerprint()
        cols = ["test_id", "lang", "risk", "attack", "response", "label"]
        for batch in self.iter_batches(columns=cols):
            counts.add_batch(batch)
            batch_ids = batch.column("test_id").to_pylist()
            fp.add_many(batch_ids)
            if ids is not None:
                ids.update(batch_ids)
        return counts.result(), fp.hexdigest()


def _check_schema(schema: pa.Schema, where: str) -> None:
    record, version = schema_version_of(schema)
    if record is not None and record != TestCase.RECORD_NAME:
        raise InputError(f"{where} holds {record} rows, not TestCase rows")
    if version is not None and version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"{where} has TestCase schema version {version}; this assay reads {SCHEMA_VERSION}"
        )
    try:
        conform(pa.Table.from_batches([], schema=schema), TestCase)
    except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(
            f"{where} is not a suite file ({exc}); convert it with `assay import parquet`"
        ) from exc


def open_suite(url: str, storage_options: StorageOptions | None = None) -> Suite:
    """Opens a suite folder (with or without a manifest) or a single Parquet file."""
    loc = Location.parse(url, storage_options)
    if not loc.exists():
        raise InputError(f"no suite at {url}")
    if not loc.isdir():
        return Suite(loc, [loc], None)
    manifest_loc = loc.join(SUITE_MANIFEST)
    if manifest_loc.exists():
        manifest = SuiteManifest.model_validate(manifest_loc.read_json())
        files = [loc.join(f.path) for f in manifest.files]
        return Suite(loc, files, manifest)
    entries = loc.fs.ls(loc.path, detail=False)
    if any(e.rstrip("/").rsplit("/", 1)[-1].startswith(".tmp-") for e in entries):
        # No manifest and temporary files: a write that crashed before it committed.
        raise InputError(f"{url} holds an unfinished suite write (no {SUITE_MANIFEST})")
    names = sorted(p for p in entries if _is_part(p))
    if not names:
        raise InputError(f"no Parquet files in {url}")
    files = [Location(url=f"{loc.url}/{n.rsplit('/', 1)[-1]}", fs=loc.fs, path=n) for n in names]
    return Suite(loc, files, None)


def write_suite(
    url: str,
    cases: Iterable[TestCase],
    name: str | None = None,
    storage_options: StorageOptions | None = None,
    overwrite: bool = False,
    created_by: list[str] | None = None,
) -> SuiteManifest:
    """Writes test cases as a new suite (a convenience over :class:`SuiteWriter`)."""
    writer = SuiteWriter(url, name=name, storage_options=storage_options, overwrite=overwrite)
    try:
        for case in cases:
            writer.write(case)
        return writer.commit(created_by=created_by or [" ".join(sys.argv)])
    except BaseException:
        writer.abort()
        raise


class SuiteDiff(BaseModel):
    """What changed from suite A to suite B: tests added and removed, and count deltas."""

    model_config = ConfigDict(extra="forbid")

    a: str = Field(description="URL of suite A.")
    b: str = Field(description="URL of suite B.")
    fingerprint_a: str = Field(description="A's fingerprint (computed from the data).")
    fingerprint_b: str = Field(description="B's fingerprint (computed from the data).")
    identical: bool = Field(description="Whether the two hold the same tests.")
    lineage: str = Field(
        description="'b-from-a' when B's manifest names A as a parent, 'a-from-b' the other way, "
        "else 'unrelated'."
    )
    rows_a: int = Field(description="Rows in A.")
    rows_b: int = Field(description="Rows in B.")
    common: int = Field(description="Tests in both.")
    added: int = Field(description="Tests in B only.")
    removed: int = Field(description="Tests in A only.")
    delta: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="B minus A counts per language ('lang'), L1 risk ('risk_l1') and attack "
        "('attack'), non-zero entries only.",
    )
    added_sample: list[str] = Field(default_factory=list, description="Some test ids added.")
    removed_sample: list[str] = Field(default_factory=list, description="Some removed.")


def diff_suites(
    url_a: str, url_b: str, storage_options: StorageOptions | None = None, sample: int = 10
) -> SuiteDiff:
    """Compares two suites by their test ids (one streaming pass over each)."""
    suites = [open_suite(u, storage_options) for u in (url_a, url_b)]
    ids: list[set[str]] = [set(), set()]
    counts: list[SuiteCounts] = []
    fps: list[str] = []
    for s, seen in zip(suites, ids, strict=True):
        c, fp = s.scan(seen)
        counts.append(c)
        fps.append(fp)
    a, b = suites
    lineage = "unrelated"
    if b.manifest and fps[0] in b.manifest.parents:
        lineage = "b-from-a"
    elif a.manifest and fps[1] in a.manifest.parents:
        lineage = "a-from-b"
    added = ids[1] - ids[0]
    removed = ids[0] - ids[1]
    delta: dict[str, dict[str, int]] = {}
    for name in ("by_lang", "by_risk_l1", "by_attack"):
        ca, cb = getattr(counts[0], name), getattr(counts[1], name)
        change = {k: cb.get(k, 0) - ca.get(k, 0) for k in sorted(set(ca) | set(cb))}
        change = {k: v for k, v in change.items() if v}
        if change:
            delta[name.removeprefix("by_")] = change
    return SuiteDiff(
        a=a.url,
        b=b.url,
        fingerprint_a=fps[0],
        fingerprint_b=fps[1],
        identical=fps[0] == fps[1] and not added and not removed,
        lineage=lineage,
        rows_a=counts[0].rows,
        rows_b=counts[1].rows,
        common=len(ids[0] & ids[1]),
        added=len(added),
        removed=len(removed),
        delta=delta,
        added_sample=sorted(added)[:sample],
        removed_sample=sorted(removed)[:sample],
    )


__all__ = [
    "SUITE_MANIFEST",
    "Fingerprint",
    "Suite",
    "SuiteCounts",
    "SuiteDiff",
    "SuiteManifest",
    "SuiteWriter",
    "atomic_open",
    "diff_suites",
    "open_suite",
    "write_suite",
]
