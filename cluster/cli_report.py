"""``assay report``, ``assay compare`` and ``assay history``: reading run folders into decisions.

The commands are a veneer over :mod:`assay.engine.metrics`, :mod:`assay.engine.compare`,
:mod:`assay.engine.history` and :mod:`assay.engine.report`; :func:`register` adds them to the
``assay`` group. A RUN argument is a run folder's URL (``<output>/<run_id>``, any fsspec URL), as
``assay run`` prints it. Errors are :class:`~assay.engine.errors.AssayError` subclasses, which the
``assay`` entry point prints as one line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from assay.engine.errors import ConfigError

EXIT_REGRESSION = 3
"""Exit status of ``assay compare --fail-on-regression`` when a regression is flagged."""

_STORAGE = click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for runs, suites, history and outputs (repeatable).",
)


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected KEY=VALUE, got {pair!r}", param_hint="--storage-option"
            )
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _scopes(values: Sequence[str]) -> list[str]:
    from assay.engine.compare import DEFAULT_SCOPES, SCOPES

    scopes = [s.strip() for v in values for s in v.split(",") if s.strip()]
    bad = sorted(set(scopes) - set(SCOPES))
    if bad:
        raise click.BadParameter(
            f"unknown scope(s) {bad}; choose from {', '.join(SCOPES)}", param_hint="--by"
        )
    return scopes or list(DEFAULT_SCOPES)


# -- report ----------------------------------------------------------------------------------------


@click.command("report")
@click.argument("run")
@click.option(
    "--compare", "compare_to", metavar="RUN_B", help="An earlier run to flag regressions against."
)
@click.option(
    "--history", "history_url", metavar="URL", help="A history dataset: adds the trend chart."
)
@click.option(
    "--html", "html_path", metavar="FILE", help="Write the self-contained HTML report here."
)
@click.option("--json", "json_path", metavar="FILE", help="Write the report's data as JSON here.")
@click.option(
    "--intersection",
    is_flag=True,
    help="With --compare over runs of different suites: compare the tests both suites hold.",
)
@click.option(
    "--examples",
    "examples",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Worst examples shown per L1 dimension.",
)
@_STORAGE
def report_cmd(
    run: str,
    compare_to: str | None,
    history_url: str | None,
    html_path: str | None,
    json_path: str | None,
    intersection: bool,
    examples: int,
    storage: tuple[str, ...],
) -> None:
    """Metrics of a run (plus comparison and trend) as a terminal summary, HTML and JSON.

    The HTML file works offline (charts are inline SVG, nothing is fetched) and shows model
    outputs as escaped text.

    \b
    Examples:
      assay report runs/run-34eb115a51a8 --html report.html --json report.json
      assay report runs/run-new --compare runs/run-old --history s3://bucket/history --html r.html
    """
    from assay.engine.metrics import open_run
    from assay.engine.report import build_report, format_report, write_report

    options = _options(storage)
    folder = open_run(run, options)
    baseline = open_run(compare_to, options) if compare_to else None
    data = build_report(
        folder,
        baseline,
        history_url,
        intersection=intersection,
        examples_per_category=examples,
        storage_options=options,
    )
    click.echo(format_report(data))
    for url in write_report(data, html_path, json_path, options):
        click.echo(f"wrote {url}")


# -- compare ---------------------------------------------------------------------------------------


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option(
    "--intersection",
    is_flag=True,
    help="Runs over different suites: compare over the tests both suites hold.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Significance level after correction.",
)
@click.option(
    "--correction",
    type=click.Choice(["holm", "bh", "none"]),
    default="holm",
    show_default=True,
    help="Multiple-comparison correction within each target and judge (bh: Benjamini-Hochberg).",
)
@click.option(
    "--by",
    "by",
    multiple=True,
    metavar="SCOPE[,SCOPE]",
    help="Categories to test: l1, l2, attack, lang (default: l1,attack).",
)
@click.option(
    "--min-delta",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Flag only changes of at least this many percentage points.",
)
@click.option("--all", "show_all", is_flag=True, help="List every category, not only the flagged.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"Exit with status {EXIT_REGRESSION} when a regression is flagged (for nightly jobs).",
)
@_STORAGE
@click.pass_context
def compare_cmd(
    ctx: click.Context,
    run_a: str,
    run_b: str,
    intersection: bool,
    alpha: float,
    correction: str,
    by: tuple[str, ...],
    min_delta: float,
    show_all: bool,
    as_json: bool,
    fail_on_regression: bool,
    storage: tuple[str, ...],
) -> None:
    """Compare run B with run A: per target and category, flag significant changes.

    Each category's rate (safety score per L1 dimension, attack success per dimension and per
    attack, adaptive attack success per dimension) is tested with Fisher's exact test and
    flagged as a regression or an improvement only when significant after correction. Runs over
    different suites are refused unless --intersection is given.

    \b
    Examples:
      assay compare runs/run-last-night runs/run-tonight
      assay compare runs/a runs/b --intersection --by l1,l2,attack --json
    """
    from assay.engine.compare import compare_runs, format_comparison
    from assay.engine.metrics import open_run

    options = _options(storage)
    result = compare_runs(
        open_run(run_a, options),
        open_run(run_b, options),
        intersection=intersection,
        alpha=alpha,
        correction="bh" if correction == "bh" else "none" if correction == "none" else "holm",
        min_delta=min_delta / 100,
        scopes=_scopes(by),
        storage_options=options,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(format_comparison(result, show_all=show_all))
    if fail_on_regression and result.regressions:
        ctx.exit(EXIT_REGRESSION)


# -- history ---------------------------------------------------------------------------------------


@click.group("history")
def history() -> None:
    """Nightly history: run summaries in a Parquet dataset partitioned by date.

    \b
    Examples:
      assay history add runs/run-34eb115a51a8 --to s3://safety/history
      assay history show s3://safety/history
    """


@history.command("add")
@click.argument("run")
@click.option(
    "--to", "url", required=True, metavar="URL", help="The history dataset (any fsspec URL)."
)
@click.option(
    "--date",
    metavar="YYYY-MM-DD",
    help="Partition to file the run under (default: its creation date).",
)
@click.option("--allow-partial", is_flag=True, help="Add a run whose shards are not all done.")
@_STORAGE
def history_add(
    run: str, url: str, date: str | None, allow_partial: bool, storage: tuple[str, ...]
) -> None:
    """Append a run's summary to a history dataset (adding a run again replaces it).

    \b
    Example:
      assay history add runs/run-34eb115a51a8 --to s3://safety/history
    """
    from assay.engine.history import add_to_history
    from assay.engine.metrics import load_metrics, open_run

    options = _options(storage)
    summary = load_metrics(open_run(run, options), options)
    if not summary.get("complete", True) and not allow_partial:
        raise ConfigError(
            f"run {summary.get('run_id')} is not complete ({summary.get('shards_done')}/"
            f"{summary.get('shards_total')} shards); finish it or pass --allow-partial"
        )
    loc = add_to_history(summary, url, options, date)
    click.echo(f"added run {summary['run_id']} to {loc.url}")


@history.command("show")
@click.argument("url")
@click.option("--target", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="Print the trends as JSON.")
@_STORAGE
def history_show(url: str, target: str | None, as_json: bool, storage: tuple[str, ...]) -> None:
    """Print the trend per target: safety, attack success and adaptive ASR per run, by date.

    \b
    Example:
      assay history show s3://safety/history --target llama-3-8b
    """
    from assay.engine.history import format_history, read_history, trend

    table = read_history(url, _options(storage))
    if as_json:
        data = {
            metric: trend(table, metric)
            for metric in ("safety", "attack_success", "adaptive_attack_success")
        }
        if target is not None:
            data = {m: {t: v for t, v in d.items() if t == target} for m, d in data.items()}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(format_history(table, target))


def register(cli: click.Group) -> None:
    """Adds ``report``, ``compare`` and ``history`` to the ``assay`` group (replaces same names)."""
    for command in (report_cmd, compare_cmd, history):
        cli.add_command(command)
