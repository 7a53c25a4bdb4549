"""Importers: public dataset formats -> suites.

``import_suite(ImportConfig(...))`` streams the source, checks every row, and writes a suite. Bad
rows are never dropped silently: by default one bad row fails the import (nothing is written) with
an error naming the file, line and reason of the first bad rows and their total count; with
``on_error="skip"`` the good rows are imported and the rejected rows are written, with their
reasons, to ``<output>.rejects.jsonl`` next to the suite. Duplicates (a row whose test_id an
earlier row already has) are skipped in both modes and listed in the rejects file too, so that
the counts always add up: ``read == imported + rejected + duplicates``; with ``keep_duplicates``
they are imported under derived ids (:func:`duplicate_id`) and counted in ``duplicates_kept``.

The rejects file holds at most ``max_rejects`` rows and ``max_rejects_bytes`` bytes (the report
counts every row by reason whatever the bounds), and it is written only when the suite is: an
import that fails leaves neither. An import that would write no row (an empty source, or every
row rejected) fails too. A file that cannot be read (a corrupt zip archive in a folder) counts as
one bad record naming the file, so ``on_error="skip"`` reads the other files on.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..io import Location, atomic_open
from ..records import content_id
from ..suite import SuiteManifest, SuiteWriter
from ..taxonomy import load_risk_tree, seval_tree
from . import formats as _formats  # noqa: F401  (registers the built-in importers)
from .base import (
    ImportConfig,
    Importer,
    RowContext,
    RowError,
    get_importer,
    importer_names,
    register_importer,
)
from .readers import SourceRecord, iter_records

MAX_EXAMPLES = 5


class Reject(BaseModel):
    """One source row that was not imported, as written to the rejects file."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="The source file.")
    line: int = Field(
        description="1-based line (row, for Parquet) where the record starts; 0 when the reason "
        "is about the whole file (a corrupt archive)."
    )
    reason: str = Field(description="Why it was not imported.")
    raw: str = Field(description="The record's source text (cut when very long).")

    def describe(self) -> str:
        """'file:line: reason' ('file: reason' for a whole file)."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


class ImportReport(BaseModel):
    """What an import did: counts that add up, and where things went."""

    model_config = ConfigDict(extra="forbid")

    format: str
    source: str
    output: str
    read: int = Field(description="Records read (blank lines are not records).")
    imported: int = Field(description="Test cases written (kept duplicates included).")
    rejected: int = Field(description="Records rejected as bad.")
    duplicates: int = Field(description="Records skipped because an earlier one has the same id.")
    duplicates_kept: int = Field(
        default=0, description="Records imported with --keep-duplicates under a derived id."
    )
    reasons: dict[str, int] = Field(description="Rejected and duplicate records per reason kind.")
    rejects_url: str | None = Field(description="The rejects file, when anything was not imported.")
    rejects_listed: int = Field(
        default=0,
        description="Rows listed in the rejects file: all that were not imported, up to "
        "ImportConfig.max_rejects rows and max_rejects_bytes bytes.",
    )
    examples: list[str] = Field(description="The first few rejected records, 'file:line: reason'.")
    fingerprint: str | None = Field(description="The suite's fingerprint (None when not written).")
    seconds: float = Field(description="Wall time of the import.")


class ImportFailed(InputError):
    """The import wrote nothing: with ``on_error="fail"`` it found bad rows, or no row was good."""

    def __init__(self, report: ImportReport):
        """Builds the message from the report."""
        if report.rejected and report.rejected + report.duplicates < report.read:
            head = (
                f"import failed: {report.rejected:,} of {report.read:,} records are bad, "
                f"nothing was written to {report.output}"
            )
        else:
            head = (
                f"import failed: none of the {report.read:,} records of {report.source} could "
                f"be imported ({report.rejected:,} bad), nothing was written to {report.output}"
            )
        lines = [head, *(f"  {e}" for e in report.examples)]
        if report.rejected > len(report.examples):
            lines.append(f"  ... and {report.rejected - len(report.examples):,} more")
        if report.reasons and report.rejected > len(report.examples):
            lines.append(
                "  by reason: "
                + "; ".join(f"{reason} ({n:,})" for reason, n in report.reasons.items())
            )
        if report.rejected + report.duplicates < report.read:
            lines.append(
                "rerun with --on-error skip to import the good records and list the bad "
                "ones in a rejects file"
            )
        super().__init__("\n".join(lines))
        self.report = report


def rejects_location(cfg: ImportConfig) -> Location:
    """Where the rejects of an import into ``cfg.output`` go: next to the suite folder."""
    out = Location.parse(cfg.output, cfg.storage_options)
    return out.sibling(f"{out.name}.rejects.jsonl")


def _kind(reason: str) -> str:
    """The kind of a reason, for counting: its text before any detail in parentheses or ':'."""
    head = reason.split(" (", 1)[0].split(":", 1)[0].split(";", 1)[0]
    return head[:60]


def duplicate_id(test_id: str, occurrence: int) -> str:
    """The test_id of the ``occurrence``-th (2, 3, ...) row whose content has ``test_id``."""
    return content_id(test_id, "occurrence", str(occurrence))


class _RejectSpool:
    """The rejects of an import, spooled to a local temporary file up to the configured bounds."""

    def __init__(self, max_rows: int, max_bytes: int):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.bytes = 0
        self.file: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close)

    @property
    def full(self) -> bool:
        return self.file is None or self.rows >= self.max_rows or self.bytes >= self.max_bytes

    def add(self, item: Reject) -> None:
        if self.full or self.file is None:
            return
        data = item.model_dump_json().encode() + b"\n"
        if self.bytes + len(data) > self.max_bytes:
            self.bytes = self.max_bytes  # full: a later, shorter row must not jump the queue
            return
        self.file.write(data)
        self.rows += 1
        self.bytes += len(data)

    def discard(self) -> None:
        """The import will fail: nothing more is kept, and what was spooled goes."""
        self.close()
        self.rows = 0

    def copy_to(self, loc: Location) -> None:
        assert self.file is not None
        self.file.seek(0)
        with atomic_open(loc) as f:
            while chunk := self.file.read(1 << 20):
                f.write(chunk)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def import_suite(cfg: ImportConfig, command: list[str] | None = None) -> ImportReport:
    """Imports ``cfg.source`` as a suite at ``cfg.output``; see the module docstring."""
    started = time.monotonic()
    importer: Importer = get_importer(cfg.format)(cfg)
    tree = load_risk_tree(cfg.taxonomy, cfg.storage_options) if cfg.taxonomy else seval_tree()
    writer: SuiteWriter | None = SuiteWriter(
        cfg.output,
        name=cfg.name,
        storage_options=cfg.storage_options,
        rows_per_file=cfg.rows_per_file,
        overwrite=cfg.overwrite,
    )
    seen: dict[str, tuple[str, int]] = {}
    occurrences: dict[str, int] = {}
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    read = imported = rejected = duplicates = kept = 0
    file_langs: dict[str, str | None] = {}
    spool = _RejectSpool(cfg.max_rejects, cfg.max_rejects_bytes)

    def reject(rec: SourceRecord, reason: str, duplicate: bool = False) -> None:
        nonlocal rejected, duplicates
        if duplicate:
            duplicates += 1
        else:
            rejected += 1
        reasons[_kind(reason)] += 1
        if (duplicate or len(examples) >= MAX_EXAMPLES) and spool.full:
            return  # counted; nothing more to keep (a million bad rows cost no disk)
        item = Reject(file=rec.file, line=rec.line, reason=reason, raw=rec.raw)
        if not duplicate and len(examples) < MAX_EXAMPLES:
            examples.append(item.describe())
        spool.add(item)

    try:
        for rec in iter_records(cfg.source, cfg.storage_options, cfg.max_record_bytes):
            read += 1
            if rec.error is not None or rec.data is None:
                reject(rec, rec.error or "unreadable record")
            else:
                if rec.file not in file_langs:
                    file_langs[rec.file] = importer.file_lang(rec.file)
                ctx = RowContext(cfg, tree, rec.file, rec.line, file_langs[rec.file])
                try:
                    case = importer.convert(rec.data, ctx)
                except RowError as exc:
                    reject(rec, exc.reason)
                else:
                    first = seen.get(case.test_id)
                    derived = first is not None and cfg.keep_duplicates
                    if derived:
                        original = case.test_id
                        n = occurrences[original] = occurrences.get(original, 1) + 1
                        case = case.model_copy(
                            update={
                                "test_id": duplicate_id(original, n),
                                "meta": {**case.meta, "duplicate_of": original, "occurrence": n},
                            }
                        )
                        first = seen.get(case.test_id)
                    if first is not None:
                        reject(
                            rec,
                            f"duplicate of {first[0]}:{first[1]} (same test_id {case.test_id})",
                            duplicate=True,
                        )
                    else:
                        seen[case.test_id] = (rec.file, rec.line)
                        if writer is not None:
                            writer.write(case)
                        imported += 1
                        kept += derived
            if rejected and cfg.on_error == "fail" and writer is not None:
                writer.abort()  # keep scanning to count every bad row, but write nothing more
                writer = None
                spool.discard()  # and keep no rejects file
        if read == 0:
            raise InputError(f"no records in {cfg.source}; nothing was written to {cfg.output}")
        rej_loc = rejects_location(cfg)
        report = ImportReport(
            format=cfg.format,
            source=cfg.source,
            output=cfg.output,
            read=read,
            imported=imported if writer is not None else 0,
            rejected=rejected,
            duplicates=duplicates,
            duplicates_kept=kept,
            reasons=dict(reasons.most_common()),
            rejects_url=rej_loc.url if (rejected or duplicates) else None,
            rejects_listed=spool.rows,
            examples=examples,
            fingerprint=None,
            seconds=0.0,
        )
        if writer is None or imported == 0:
            raise ImportFailed(
                report.model_copy(update={"imported": 0, "rejects_url": None, "rejects_listed": 0})
            )
        manifest: SuiteManifest = writer.commit(
            created_by=[shlex.join(command or sys.argv)],
            provenance={
                "import": cfg.model_dump(mode="json", exclude={"storage_options"}),
                "read": read,
                "rejected": rejected,
                "duplicates": duplicates,
                "duplicates_kept": kept,
                "reasons": report.reasons,
            },
        )
        writer = None
        if rejected or duplicates:
            spool.copy_to(rej_loc)
        elif rej_loc.exists():
            rej_loc.remove()  # a stale list from an earlier import of this output
        return report.model_copy(
            update={
                "fingerprint": manifest.fingerprint,
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        spool.close()


def read_rejects(url: str, storage_options: dict[str, Any] | None = None) -> list[Reject]:
    """The rejects file of an import, parsed."""
    loc = Location.parse(url, storage_options)
    return [Reject.model_validate(json.loads(line)) for line in loc.read_bytes().splitlines()]


__all__ = [
    "ImportConfig",
    "ImportFailed",
    "ImportReport",
    "Importer",
    "Reject",
    "RowError",
    "duplicate_id",
    "get_importer",
    "import_suite",
    "importer_names",
    "read_rejects",
    "register_importer",
    "rejects_location",
]
