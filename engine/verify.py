"""``assay verify``: the deep check of a run folder, naming every file that is not right.

Resuming and reading a run check each shard cheaply (markers and one listing, see
:mod:`assay.engine.runfolder`); this module reads everything once and checks what those checks
cannot see without reading:

- every completion marker parses, names its shard, belongs to the run's current plan and covers
  the plan's row range for that shard;
- every committed part exists, has the size and SHA-256 its marker records, is readable Parquet
  and holds the marker's row count;
- every key appears once: ``(test_id, target)`` in a generations part, ``(test_id, target,
  judge)`` in a verdicts part; since shards cover disjoint rows, once per part is once per run;
- every test id of a part belongs to its shard's rows (read from the suite), and the marker's
  digest of the shard's ids matches the suite;
- every shard is covered: each of its tests answered by each target (or its given response), and
  each answer judged by each judge of the config;
- no part file lies in a stage folder without a valid marker (assay never reads one, but a plain
  ``pyarrow.dataset`` read of the folder would count it);
- a manifest that says ``completed`` has every shard committed, and ``summary.json`` summarises
  exactly the committed shards.

:func:`verify_run` returns a :class:`VerifyReport` with one :class:`Problem` per bad file;
:func:`repair` removes the markers of bad shards (and stray parts) so that the next ``assay run``
redoes exactly those shards.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AssayError
from .io import StorageOptions
from .runfolder import MANIFEST, SUMMARY, Marker, RunFolder, Shard, ids_digest, read_shard
from .suite import Suite

GENERATIONS = "generations"
VERDICTS = "verdicts"
GIVEN = "given"
"""Target name of responses that come with the suite (as ``assay run`` writes them)."""
_KEYS = {GENERATIONS: ("test_id", "target"), VERDICTS: ("test_id", "target", "judge")}


@dataclass
class Problem:
    """One bad file and everything wrong with it."""

    url: str
    reason: str
    stage: str | None = None
    shard_id: int | None = None
    kind: str = "part"
    """``marker``, ``part``, ``stray`` (a part without a valid marker), ``manifest``,
    ``summary`` or ``suite``."""


@dataclass
class VerifyReport:
    """What :func:`verify_run` found."""

    run_id: str
    url: str
    shards_total: int
    committed: dict[str, int] = field(default_factory=dict)
    parts_checked: int = 0
    rows_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems

    def add(self, url: str, reason: str, **where: Any) -> None:
        """Records a problem; a second one for the same file joins its line."""
        for p in self.problems:
            if p.url == url:
                p.reason = f"{p.reason}; {reason}"
                return
        self.problems.append(Problem(url, reason, **where))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return {**asdict(self), "ok": self.ok}

    def format(self) -> str:
        """One line per bad file, then one summary line."""
        lines = [f"BAD {p.url}: {p.reason}" for p in self.problems]
        done = ", ".join(f"{stage} {n}/{self.shards_total}" for stage, n in self.committed.items())
        verdict = "OK" if self.ok else f"{len(self.problems)} bad file(s)"
        lines.append(
            f"run {self.run_id}: {verdict}; {self.parts_checked} part(s), "
            f"{self.rows_checked:,} rows checked; shards committed: {done}"
        )
        return "\n".join(lines)


def verify_run(folder: RunFolder, storage_options: StorageOptions | None = None) -> VerifyReport:
    """Reads every part of a run and checks it (see the module docstring).

    Raises:
        StorageError: The folder holds no readable manifest (nothing to check against).
    """
    from .metrics import open_run_suite

    manifest = folder.read_manifest()
    fingerprint = manifest.fingerprint()
    report = VerifyReport(manifest.run_id, folder.url, len(manifest.plan.shards))
    manifest_url = folder.loc.join(MANIFEST).url
    if manifest.plan_fingerprint is not None and manifest.plan_fingerprint != fingerprint:
        report.add(
            manifest_url,
            f"records plan fingerprint {manifest.plan_fingerprint[:12]} but its plan, suite "
            f"and config hash give {fingerprint[:12]} (the manifest was edited)",
            kind="manifest",
        )
    suite: Suite | None
    try:
        suite = open_run_suite(folder, manifest, storage_options)
    except (AssayError, OSError) as exc:
        report.add(manifest.suite_url, f"cannot check test ids: {exc}", kind="suite")
        suite = None
    shards = {s.shard_id: s for s in manifest.plan.shards}
    targets = [t["name"] for t in manifest.config.get("targets") or []]
    judges = [j["name"] for j in manifest.config.get("judges") or []]
    rows: dict[int, pa.Table] = {}  # the suite's (test_id, response) per shard, read once

    def shard_rows(shard: Shard) -> pa.Table | None:
        if suite is None:
            return None
        if shard.shard_id not in rows:
            rows[shard.shard_id] = read_shard(suite, shard, columns=["test_id", "response"])
        return rows[shard.shard_id]

    for stage in manifest.stages:
        scan = folder.scan(stage)
        for bad in scan.rejected:
            report.add(bad.url, bad.reason, stage=stage, shard_id=bad.shard_id, kind="marker")
        for shard_id, marker in sorted(scan.valid.items()):
            shard = shards[shard_id]
            table = _check_part(folder, report, stage, shard, marker)
            if table is None:
                continue
            suite_rows = shard_rows(shard)
            _check_rows(folder, report, stage, shard, marker, table, suite_rows, targets, judges)
        report.committed[stage] = len(folder.committed(stage))
        # a rejected marker of a plan shard already names that shard; parts outside the plan
        # are named whatever their marker says
        rejected = {b.shard_id for b in scan.rejected if b.shard_id in shards}
        for shard_id in sorted(set(folder.part_sizes(stage)) - set(scan.valid) - rejected):
            why = (
                "no valid completion marker: not a result (assay never reads it, a plain "
                "pyarrow.dataset read of the folder would)"
                if shard_id in shards
                else "a part of a shard the plan does not have (another plan's leftover)"
            )
            report.add(
                folder.part(stage, shard_id).url, why, stage=stage, shard_id=shard_id, kind="stray"
            )
    if manifest.status == "completed":
        done = report.committed.get(VERDICTS, 0)
        if done < report.shards_total:
            report.add(
                manifest_url,
                f"says completed but only {done}/{report.shards_total} verdicts shards are "
                "committed (`assay run` with the run's config redoes the rest)",
                kind="manifest",
            )
    if folder.has_summary() and folder.current_summary() is None:
        report.add(
            folder.loc.join(SUMMARY).url,
            "stale: it does not summarise the shards committed now (readers recompute the "
            "figures; `assay run` rewrites it)",
            kind="summary",
        )
    return report


def _check_part(
    folder: RunFolder, report: VerifyReport, stage: str, shard: Shard, marker: Marker
) -> pa.Table | None:
    """Reads one committed part and checks it against its marker; the table, if readable."""
    loc = folder.part(stage, shard.shard_id)
    where = {"stage": stage, "shard_id": shard.shard_id}
    try:
        data = loc.read_bytes()
    except FileNotFoundError:
        report.add(loc.url, "missing (its marker says it is committed)", **where)
        return None
    report.parts_checked += 1
    if marker.size is not None and len(data) != marker.size:
        report.add(loc.url, f"{len(data):,} bytes, its marker says {marker.size:,}", **where)
    if marker.sha256 is None:
        report.add(loc.url, "its marker records no checksum", **where)
    elif hashlib.sha256(data).hexdigest() != marker.sha256:
        report.add(loc.url, "checksum does not match its marker (corrupted or replaced)", **where)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        report.add(loc.url, f"not readable Parquet: {' '.join(str(exc).split())[:200]}", **where)
        return None
    report.rows_checked += table.num_rows
    if table.num_rows != marker.rows:
        report.add(loc.url, f"{table.num_rows} rows, its marker says {marker.rows}", **where)
    missing = [c for c in _KEYS.get(stage, ("test_id",)) if c not in table.column_names]
    if missing:
        report.add(loc.url, f"has no column(s) {missing}", **where)
        return None
    return table


def _check_rows(
    folder: RunFolder,
    report: VerifyReport,
    stage: str,
    shard: Shard,
    marker: Marker,
    table: pa.Table,
    suite_rows: pa.Table | None,
    targets: list[str],
    judges: list[str],
) -> None:
    """Keys once, ids in the shard, every test and judge covered."""
    url = folder.part(stage, shard.shard_id).url
    where = {"stage": stage, "shard_id": shard.shard_id}
    names = _KEYS.get(stage, ("test_id",))
    keys = list(zip(*(table.column(c).to_pylist() for c in names), strict=True))
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        report.add(url, f"{len(dup)} key(s) {names} appear more than once, e.g. {dup[0]}", **where)
    if suite_rows is None:
        return  # the suite could not be opened (reported once)
    shard_ids = suite_rows.column("test_id")
    if marker.ids is None:
        report.add(url, "its marker records no digest of the shard's test ids", **where)
    elif marker.ids != ids_digest(shard_ids):
        report.add(
            folder.marker(stage, shard.shard_id).url,
            "its digest of the shard's test ids does not match the suite's rows",
            kind="marker",
            **where,
        )
    in_shard = set(shard_ids.to_pylist())
    stray = sorted({k[0] for k in keys} - in_shard)
    if stray:
        report.add(
            url,
            f"{len(stray)} test id(s) that are not in shard {shard.shard_id} "
            f"({shard.file}[{shard.row_start}:{shard.row_end}]), e.g. {stray[0]!r}",
            **where,
        )
    generations = _expected_generations(suite_rows, targets)
    if stage == GENERATIONS:
        have = {(str(k[0]), str(k[1])) for k in keys}
        lost = generations - have
        if lost:
            report.add(url, f"{len(lost)} (test, target) answer(s) missing", **where)
    elif stage == VERDICTS:
        have_v = {(str(k[0]), str(k[1]), str(k[2])) for k in keys}
        want = {(t, g, j) for t, g in generations for j in judges}
        lost_v = want - have_v
        if lost_v:
            example = sorted(lost_v)[0]
            report.add(url, f"{len(lost_v)} verdict(s) missing, e.g. {example}", **where)


def _expected_generations(rows: pa.Table, targets: list[str]) -> set[tuple[str, str]]:
    """The (test_id, target) pairs a shard must answer: given responses, else every target."""
    out: set[tuple[str, str]] = set()
    for tid, response in zip(
        rows.column("test_id").to_pylist(), rows.column("response").to_pylist(), strict=True
    ):
        if response is not None:
            out.add((tid, GIVEN))
        else:
            out.update((tid, t) for t in targets)
    return out


def repair(folder: RunFolder, report: VerifyReport) -> list[str]:
    """Makes every bad shard not done, so the next ``assay run`` redoes exactly those shards.

    Removes the marker of each shard with a bad marker or part, and each stray part file.
    Returns the URLs removed. The run's manifest, suite and summary are left as they are (a
    stale summary is recomputed by readers and rewritten by ``assay run``).
    """
    from .runfolder import remove_missing_ok

    removed: list[str] = []
    for p in report.problems:
        if p.stage is None or p.shard_id is None:
            continue
        if p.kind == "stray":
            remove_missing_ok(folder.part(p.stage, p.shard_id))
            removed.append(folder.part(p.stage, p.shard_id).url)
        else:
            loc = folder.marker(p.stage, p.shard_id)
            if loc.url not in removed:
                remove_missing_ok(loc)
                removed.append(loc.url)
            if p.stage == GENERATIONS:  # its verdicts judged answers that are not right
                vloc = folder.marker(VERDICTS, p.shard_id)
                if vloc.url not in removed:
                    remove_missing_ok(vloc)
                    removed.append(vloc.url)
    return removed


def check_suite_risks(
    suite: Suite, taxonomy: str, storage_options: StorageOptions | None = None
) -> None:
    """Checks that every risk path of a suite names a node of a taxonomy file's tree.

    ``assay run`` calls it at run start when the config names a ``taxonomy``, so results are
    never reported against a tree that does not hold the suite's risks.

    Raises:
        TaxonomyFileError: The file cannot be loaded (the message names it).
        ConfigError: Some risk paths are not in the tree (up to five are named, with counts).
    """
    from .errors import ConfigError
    from .taxonomy import load_risk_tree

    tree = load_risk_tree(taxonomy, storage_options)
    counts: Counter[str] = Counter()
    for loc in suite.files:
        with loc.open("rb") as f:
            column = pq.read_table(f, columns=["risk"]).column("risk")
        counts.update(v for v in column.to_pylist() if v)
    unknown = {risk: n for risk, n in counts.items() if risk not in tree}
    if unknown:
        worst = sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        named = ", ".join(f"{risk!r} ({n} rows)" for risk, n in worst)
        raise ConfigError(
            f"{len(unknown)} risk path(s) of suite {suite.url} are not in the taxonomy "
            f"{taxonomy} ({tree.name}): {named}"
        )


__all__ = ["Problem", "VerifyReport", "check_suite_risks", "repair", "verify_run"]
