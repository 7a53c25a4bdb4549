"""Run history for nightly runs: a Parquet dataset of run summaries, partitioned by date.

::

    <url>/date=YYYY-MM-DD/<run_id>.parquet

One file per run, holding the run's rates in long form (one row per target, judge, metric and
category: ``k``, ``n``, ``rate`` and the Wilson interval), written atomically through
:mod:`assay.engine.io`. Adding a run again replaces its file, so ``history add`` is idempotent.
The partition is the run's creation date (UTC) unless given. Any reader of hive-partitioned
Parquet reads it (``pyarrow.dataset.dataset(url, partitioning="hive")``, DuckDB
``read_parquet('<url>/*/*.parquet', hive_partitioning=true)``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from .errors import ConfigError, StorageError
from .io import Location, StorageOptions, read_parquet, write_parquet_atomic
from .suite import utc_now

HISTORY_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_created_at", pa.string()),
        pa.field("added_at", pa.string(), nullable=False),
        pa.field("suite_fingerprint", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("target", pa.string(), nullable=False),
        pa.field("judge", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("k", pa.int64()),
        pa.field("n", pa.int64()),
        pa.field("rate", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
    ],
    metadata={b"assay.record": b"HistoryRow", b"assay.schema_version": b"1"},
)
"""The columns of a history file (the ``date`` column comes from the partition)."""

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _rows(summary: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The summary's rates in long form."""
    views: list[tuple[str, str, tuple[str, ...], str, str | None]] = [
        # metric, scope, path, count key, category (None: one row per key of the mapping)
        ("safety", "overall", ("safety",), "safe", "overall"),
        ("safety", "macro_l1", ("safety", "macro_l1"), "", "overall"),
        ("safety", "l1", ("safety_by_l1",), "safe", None),
        ("safety", "l2", ("safety_by_l2",), "safe", None),
        ("safety", "lang", ("safety_by_lang",), "safe", None),
        ("attack_success", "overall", ("attack_success",), "unsafe", "overall"),
        ("attack_success", "macro", ("attack_success", "macro"), "", "overall"),
        ("attack_success", "attack", ("attack_success_by_attack",), "unsafe", None),
        ("attack_success", "l1", ("attack_success_by_l1",), "unsafe", None),
        ("adaptive_attack_success", "overall", ("adaptive_attack_success",), "broken", "overall"),
        ("parse_failure", "overall", ("parse_failures",), "k", "overall"),
        ("error", "overall", ("errors",), "k", "overall"),
    ]
    for target, judges in summary.get("targets", {}).items():
        for judge, block in judges.items():
            for metric, scope, path, count, category in views:
                node: Any = block
                for key in path:
                    node = node.get(key, {}) if isinstance(node, Mapping) else {}
                items = [(category, node)] if category is not None else sorted(node.items())
                for cat, obj in items:
                    if not isinstance(obj, Mapping) or not obj:
                        continue
                    value = obj.get("rate", obj.get("score", obj.get("asr")))
                    ci = obj.get("ci") or [None, None]
                    yield {
                        "target": target,
                        "judge": judge,
                        "metric": metric,
                        "scope": scope,
                        "category": cat,
                        "k": obj.get(count) if count else None,
                        "n": obj.get("n") if count else obj.get("categories"),
                        "rate": value,
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                    }


def history_table(summary: Mapping[str, Any]) -> pa.Table:
    """A summary as history rows (see :data:`HISTORY_SCHEMA`)."""
    run_id = summary.get("run_id")
    if not run_id:
        raise ConfigError("the summary has no run_id; was it written by `assay run`?")
    common = {
        "run_id": run_id,
        "run_created_at": summary.get("created_at"),
        "added_at": utc_now(),
        "suite_fingerprint": summary.get("suite_fingerprint"),
        "config_hash": summary.get("config_hash"),
    }
    rows = [{**common, **r} for r in _rows(summary)]
    return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)


def run_date(summary: Mapping[str, Any]) -> str:
    """The partition a run goes to: the date (UTC) it was created, else today."""
    created = str(summary.get("created_at") or utc_now())
    return created[:10]


def add_to_history(
    summary: Mapping[str, Any],
    url: str,
    storage_options: StorageOptions | None = None,
    date: str | None = None,
) -> Location:
    """Writes a run's summary into the history at ``url``; returns the file written.

    Raises:
        ConfigError: ``date`` is not YYYY-MM-DD, or the summary has no run id.
    """
    day = date or run_date(summary)
    if not _DATE_RE.fullmatch(day):
        raise ConfigError(f"history date must be YYYY-MM-DD, not {day!r}")
    table = history_table(summary)
    run_id = str(summary["run_id"])
    if not _RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(f"invalid run id {run_id!r}")
    root = Location.parse(url, storage_options)
    # A run moved to another date (--date) must not be counted twice.
    for old in _files(root):
        if old.name == f"{run_id}.parquet" and old.parent().name != f"date={day}":
            old.remove()
    loc = root.join(f"date={day}", f"{run_id}.parquet")
    write_parquet_atomic(loc, table)
    return loc


def _files(root: Location) -> list[Location]:
    if not root.exists():
        return []
    out = []
    for path in sorted(root.fs.glob(f"{root.path.rstrip('/')}/date=*/*.parquet")):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        day = path.rstrip("/").rsplit("/", 2)[-2]
        if name.startswith(".") or not _DATE_RE.fullmatch(day.removeprefix("date=")):
            continue
        out.append(root.join(day, name))
    return out


def read_history(url: str, storage_options: StorageOptions | None = None) -> pa.Table:
    """Every run in the history, with a ``date`` column from its partition (StorageError: none)."""
    root = Location.parse(url, storage_options)
    files = _files(root)
    if not files:
        raise StorageError(f"no history at {url} (no date=YYYY-MM-DD/*.parquet files)")
    tables = []
    for loc in files:
        table = read_parquet(loc).select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)
        day = loc.parent().name.removeprefix("date=")
        tables.append(table.append_column("date", pa.array([day] * table.num_rows, pa.string())))
    return pa.concat_tables(tables)


def trend(
    history: pa.Table, metric: str = "safety", scope: str = "overall", category: str = "overall"
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """One series per target and judge: the runs in date order, each with its rate and interval."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in history.to_pylist():
        if (r["metric"], r["scope"], r["category"]) != (metric, scope, category):
            continue
        out[r["target"]][r["judge"]].append(
            {
                "date": r["date"],
                "run_id": r["run_id"],
                "created_at": r["run_created_at"],
                "k": r["k"],
                "n": r["n"],
                "rate": r["rate"],
                "ci": None if r["ci_low"] is None else [r["ci_low"], r["ci_high"]],
            }
        )
    for judges in out.values():
        for series in judges.values():
            series.sort(key=lambda p: (p["date"], p["created_at"] or "", p["run_id"]))
    return {t: dict(j) for t, j in sorted(out.items())}


def format_history(history: pa.Table, target: str | None = None) -> str:
    """The trend per target and judge: safety, attack success and adaptive ASR per run."""
    series = {
        m: trend(history, m)
        for m in ("safety", "attack_success", "adaptive_attack_success", "parse_failure")
    }
    lines: list[str] = []

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    for name, judges in series["safety"].items():
        if target is not None and name != target:
            continue
        for judge, points in judges.items():
            lines.append(f"target {name}, judge {judge}")
            lines.append(
                f"  {'date':<10}  {'run':<24} {'safety':>7} {'change':>7} {'ASR':>7} "
                f"{'adaptive':>8} {'parse-fail':>10}"
            )
            others = {
                m: {p["run_id"]: p["rate"] for p in series[m].get(name, {}).get(judge, [])}
                for m in ("attack_success", "adaptive_attack_success", "parse_failure")
            }
            prev: float | None = None
            for p in points:
                change = (
                    f"{100 * (p['rate'] - prev):+.1f}"
                    if p["rate"] is not None and prev is not None
                    else ""
                )
                lines.append(
                    f"  {p['date']:<10}  {p['run_id'][:24]:<24} {pct(p['rate']):>7} {change:>7} "
                    f"{pct(others['attack_success'].get(p['run_id'])):>7} "
                    f"{pct(others['adaptive_attack_success'].get(p['run_id'])):>8} "
                    f"{pct(others['parse_failure'].get(p['run_id'])):>10}"
                )
                prev = p["rate"] if p["rate"] is not None else prev
    if not lines:
        return "no runs in the history" + (f" for target {target}" if target else "")
    return "\n".join(lines)
