"""The end-of-run summary: kept as the name ``assay run`` and older callers import.

The metrics themselves (definitions, streaming accumulator, reading a run folder) live in
:mod:`assay.engine.metrics`; this module re-exports what ``cluster/run.py`` and the CLI use.
"""

from __future__ import annotations

from .metrics import SUITE_COLUMNS, MetricsAccumulator, format_metrics

SummaryAccumulator = MetricsAccumulator
"""The accumulator ``assay run`` feeds shard by shard."""

format_summary = format_metrics
"""The plain-terminal table ``assay run`` prints."""

__all__ = ["SUITE_COLUMNS", "SummaryAccumulator", "format_summary"]
