"""Importers: public dataset formats -> suites.

``import_suite(ImportConfig(...))`` streams the source, checks every row, and writes a suite. Bad
rows are never dropped silently: by default one bad row fails the import (nothing is written) with
an error naming the file, line and reason of the first bad rows and their total count; with
``on_error="skip"`` the good rows are imported and every rejected row is written, with its reason,
to ``<output>.rejects.jsonl`` next to the suite. Duplicates (a row whose test_id an earlier row
already has) are skipped in both modes and listed in the rejects file too, so that the counts
always add up: ``read == imported + rejected + duplicates``.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..io import Location, atomic_open
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
    line: int = Field(description="1-based line (row, for Parquet) where the record starts.")
    reason: str = Field(description="Why it was not imported.")
    raw: str = Field(description="The record's source text (cut when very long).")

    def describe(self) -> str:
        """'file:line: reason'."""
        return f"{self.file}:{self.line}: {self.reason}"


class ImportReport(BaseModel):
    """What an import did: counts that add up, and where things went."""

    model_config = ConfigDict(extra="forbid")

    format: str
    source: str
    output: str
    read: int = Field(description="Records read (blank lines are not records).")
    imported: int = Field(description="Test cases written.")
    rejected: int = Field(description="Records rejected as bad.")
    duplicates: int = Field(description="Records skipped because an earlier one has the same id.")
    reasons: dict[str, int] = Field(description="Rejected and duplicate records per reason kind.")
    rejects_url: str | None = Field(description="The rejects file, when anything was not imported.")
    examples: list[str] = Field(description="The first few rejected records, 'file:line: reason'.")
    fingerprint: str | None = Field(description="The suite's fingerprint (None when not written).")
    seconds: float = Field(description="Wall time of the import.")


class ImportFailed(InputError):
    """The import found bad rows and, with ``on_error="fail"``, wrote nothing."""

    def __init__(self, report: ImportReport):
        """Builds the message from the report."""
        lines = [
            f"import failed: {report.rejected:,} of {report.read:,} records are bad, nothing was "
            f"written to {report.output}",
            *(f"  {e}" for e in report.examples),
        ]
        if report.rejected > len(report.examples):
            lines.append(f"  ... and {report.rejected - len(report.examples):,} more")
        lines.append(
            "rerun with --on-error skip to import the good records and list every bad "
            "one in a rejects file"
        )
        super().__init__("\n".join(lines))
        self.report = report


def rejects_location(cfg: ImportConfig) -> Location:
    """Where the rejects of an import into ``cfg.output`` go: next to the suite folder."""
    out = Location.parse(cfg.output, cfg.storage_options)
    return out.sibling(f"{out.name}.rejects.jsonl")


def _kind(reason: str) -> str:
    """The kind of a reason, for counting: its text before any detail in parentheses or ':'."""
    head = reason.split(" (", 1)[0].split(":", 1)[0]
    return head[:60]


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
    reasons: Counter[str] = Counter()
    examples: list[str] = []
    read = imported = rejected = duplicates = 0
    file_langs: dict[str, str | None] = {}
    # Rejects are spooled locally until we know whether they are kept; closed in `finally`.
    spool = tempfile.TemporaryFile()  # noqa: SIM115

    def reject(rec: SourceRecord, reason: str, duplicate: bool = False) -> None:
        nonlocal rejected, duplicates
        item = Reject(file=rec.file, line=rec.line, reason=reason, raw=rec.raw)
        if duplicate:
            duplicates += 1
        else:
            rejected += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(item.describe())
        reasons[_kind(reason)] += 1
        spool.write(item.model_dump_json().encode() + b"\n")

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
            if rejected and cfg.on_error == "fail" and writer is not None:
                writer.abort()  # keep scanning to count every bad row, but write nothing more
                writer = None
        if read == 0:
            raise InputError(f"no records in {cfg.source}")
        rej_loc = rejects_location(cfg)
        report = ImportReport(
            format=cfg.format,
            source=cfg.source,
            output=cfg.output,
            read=read,
            imported=imported if writer is not None else 0,
            rejected=rejected,
            duplicates=duplicates,
            reasons=dict(reasons.most_common()),
            rejects_url=rej_loc.url if (rejected or duplicates) else None,
            examples=examples,
            fingerprint=None,
            seconds=0.0,
        )
        if writer is None:
            raise ImportFailed(report.model_copy(update={"rejects_url": None}))
        manifest: SuiteManifest = writer.commit(
            created_by=[shlex.join(command or sys.argv)],
            provenance={
                "import": cfg.model_dump(mode="json", exclude={"storage_options"}),
                "read": read,
                "rejected": rejected,
                "duplicates": duplicates,
            },
        )
        writer = None
        if rejected or duplicates:
            spool.seek(0)
            with atomic_open(rej_loc) as f:
                while chunk := spool.read(1 << 20):
                    f.write(chunk)
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
    "get_importer",
    "import_suite",
    "importer_names",
    "read_rejects",
    "register_importer",
    "rejects_location",
]
