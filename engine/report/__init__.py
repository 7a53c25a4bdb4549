"""Reports of a run: the HTML report, its JSON twin and a plain-terminal summary.

::

    data = build_report(open_run("runs/run-abc"), compare_to=open_run("runs/run-old"))
    write_report(data, html="report.html", json_path="report.json")

The HTML file is self-contained and works offline (see :mod:`.render`); every piece of data in it
is escaped (see :mod:`.markup`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..compare import Comparison, compare_runs, format_comparison
from ..history import read_history, trend
from ..io import Location, StorageOptions, write_bytes_atomic
from ..metrics import format_metrics, load_metrics
from ..runfolder import RunFolder
from ..suite import utc_now
from .examples import Example, worst_examples
from .render import render_html

REPORT_VERSION = 1


@dataclass
class ReportData:
    """Everything a report shows."""

    summary: dict[str, Any]
    """The run's metrics (``summary.json``)."""
    comparison: Comparison | None = None
    """The comparison against an earlier run (A = that run, B = this one)."""
    history: dict[str, dict[str, list[dict[str, Any]]]] | None = None
    """Safety score over time per target and judge, from a history dataset."""
    examples: dict[str, list[Example]] = field(default_factory=dict)
    """The worst examples per L1 dimension."""
    generated_at: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        """The report's data as a JSON-able dict."""
        return {
            "report_version": REPORT_VERSION,
            "generated_at": self.generated_at,
            "summary": self.summary,
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
            "history": self.history,
            "examples": {k: [e.to_dict() for e in v] for k, v in self.examples.items()},
        }


def build_report(
    folder: RunFolder,
    compare_to: RunFolder | None = None,
    history_url: str | None = None,
    *,
    intersection: bool = False,
    examples_per_category: int = 3,
    storage_options: StorageOptions | None = None,
) -> ReportData:
    """Reads a run (and optionally an earlier run and a history) into a :class:`ReportData`."""
    summary = load_metrics(folder, storage_options)
    comparison = None
    if compare_to is not None:
        comparison = compare_runs(
            compare_to, folder, intersection=intersection, storage_options=storage_options
        )
    history = None
    if history_url is not None:
        history = trend(read_history(history_url, storage_options))
    examples = (
        worst_examples(folder, examples_per_category, storage_options)
        if examples_per_category > 0
        else {}
    )
    return ReportData(summary=summary, comparison=comparison, history=history, examples=examples)


def format_report(data: ReportData) -> str:
    """The plain-terminal summary: the metrics, then the comparison if there is one."""
    text = format_metrics(data.summary)
    if data.comparison is not None:
        text += "\n" + format_comparison(data.comparison)
    return text


def write_report(
    data: ReportData,
    html: str | None = None,
    json_path: str | None = None,
    storage_options: StorageOptions | None = None,
) -> list[str]:
    """Writes the HTML and/or JSON report (any fsspec URL, atomically); returns their URLs."""
    written = []
    if html is not None:
        loc = Location.parse(html, storage_options)
        write_bytes_atomic(loc, render_html(data).encode("utf-8"))
        written.append(loc.url)
    if json_path is not None:
        loc = Location.parse(json_path, storage_options)
        payload = json.dumps(data.to_json(), ensure_ascii=False, indent=2, default=str)
        write_bytes_atomic(loc, payload.encode("utf-8"))
        written.append(loc.url)
    return written


__all__ = [
    "Example",
    "ReportData",
    "build_report",
    "format_report",
    "render_html",
    "worst_examples",
    "write_report",
]
