"""The ``assay`` command line: a veneer that builds one config object and calls the Python API.

Errors that assay raises on purpose print as one clear message and exit 1; usage errors exit 2;
anything unexpected prints one line too, with ``--debug`` (or ASSAY_DEBUG=1) for the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click
from pydantic import ValidationError

from assay.engine import __version__
from assay.engine.errors import AssayError

if TYPE_CHECKING:
    from assay.engine.runfolder import RunFolder

EXIT_ERROR = 1
EXIT_USAGE = 2


def _parse_pairs(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict; values parse as JSON where they can (numbers, true)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _fmt_counts(counts: dict[str, int], total: int) -> str:
    width = max((len(k) for k in counts), default=0)
    lines = []
    for key, n in counts.items():
        share = 100.0 * n / total if total else 0.0
        lines.append(f"  {key:<{width}}  {n:>9,}  {share:5.1f}%")
    return "\n".join(lines)


def _debug_first(args: Sequence[str]) -> list[str]:
    """``--debug`` anywhere before a ``--`` moved to the front, where the group's option is."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]


class _Group(click.Group):
    """The ``assay`` group: its ``--debug`` is accepted after the subcommand too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parses the arguments with ``--debug`` moved to the front."""
        return super().parse_args(ctx, _debug_first(args))


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="assay")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """assay: distributed, high-throughput safety scoring for LLMs.

    \b
    Quick start (the starter suite shipped in examples/):
      assay import jsonl examples/starter_suite.jsonl --output runs/suites/starter
      assay suite info runs/suites/starter
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or os.environ.get("ASSAY_DEBUG") == "1"


# -- import ------------------------------------------------------------------------------------


@cli.command("import")
@click.argument("fmt", metavar="FORMAT")
@click.argument("source")
@click.option("--output", "-o", required=True, help="URL or path of the suite folder to write.")
@click.option("--name", help="Suite name (default: the output folder's name).")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="fail: a bad row fails the import, nothing is written. skip: import the good rows and "
    "list the bad ones in OUTPUT.rejects.jsonl.",
)
@click.option(
    "--max-chars",
    type=int,
    default=32_000,
    show_default=True,
    help="Longest prompt (or fixed response) accepted, in characters.",
)
@click.option("--lang", help="Language of rows that do not say (BCP-47, e.g. en, zh).")
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Generic formats: take a TestCase field from a differently named column.",
)
@click.option("--taxonomy", help="YAML extending the S-Eval taxonomy with L3/L4 nodes.")
@click.option(
    "--risk-taxonomy",
    help="Generic formats: the risk column holds categories of this taxonomy "
    "(aegis, nemoguard, mlcommons, qwen3guard, harmbench), mapped onto S-Eval L1.",
)
@click.option(
    "--attack-key",
    "attack_keys",
    multiple=True,
    help="Accept this attack key besides the known ones (repeatable).",
)
@click.option("--overwrite", is_flag=True, help="Replace a suite already at the output.")
@click.option(
    "--keep-duplicates",
    is_flag=True,
    help="Import rows that repeat an earlier row (same prompt, language, risk, attack and "
    "response) under derived ids instead of skipping them, to match datasets that count them.",
)
@click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for source and output (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_cmd(
    fmt: str,
    source: str,
    output: str,
    name: str | None,
    on_error: str,
    max_chars: int,
    lang: str | None,
    mapping: tuple[str, ...],
    taxonomy: str | None,
    risk_taxonomy: str | None,
    attack_keys: tuple[str, ...],
    overwrite: bool,
    keep_duplicates: bool,
    storage: tuple[str, ...],
    as_json: bool,
) -> None:
    """Import SOURCE (a file, folder, glob or .zip; any fsspec URL) as a suite.

    \b
    FORMAT is one of: s-eval, aegis1, aegis2, safety-j, harmbench, jsonl, csv, parquet
    (plus formats registered by plugins under the 'assay.importers' entry point).

    \b
    Examples:
      assay import s-eval ~/data/s-eval/ --output runs/suites/s-eval
      assay import jsonl examples/starter_suite.jsonl --output runs/suites/starter
      assay import csv questions.csv --map text=question --lang en --on-error skip -o runs/suites/q
    """
    from assay.engine.importers import ImportConfig, import_suite

    cfg = ImportConfig(
        format=fmt,
        source=source,
        output=output,
        name=name,
        on_error=on_error,
        max_chars=max_chars,
        lang=lang,
        mapping={k: str(v) for k, v in _parse_pairs(mapping, "--map").items()},
        taxonomy=taxonomy,
        risk_taxonomy=risk_taxonomy,
        extra_attacks=attack_keys,
        overwrite=overwrite,
        keep_duplicates=keep_duplicates,
        storage_options=_parse_pairs(storage, "--storage-option"),
    )
    report = import_suite(cfg, command=["assay", *sys.argv[1:]])
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    dups = ""
    if report.duplicates:
        dups = f" ({report.duplicates:,} duplicates skipped; --keep-duplicates imports them)"
    elif report.duplicates_kept:
        dups = f" ({report.duplicates_kept:,} duplicates kept under derived ids)"
    click.echo(
        f"imported {report.imported:,} of {report.read:,} records into {report.output}{dups}"
    )
    if report.rejected or report.duplicates:
        click.echo(f"  rejected {report.rejected:,}, duplicates skipped {report.duplicates:,}")
        for reason, n in report.reasons.items():
            click.echo(f"    {n:>7,}  {reason}")
        not_imported = report.rejected + report.duplicates
        if report.rejects_listed < not_imported:
            click.echo(
                f"  the first {report.rejects_listed:,} of the {not_imported:,} rows not "
                f"imported are listed in {report.rejects_url}"
            )
        else:
            click.echo(f"  every row not imported is listed in {report.rejects_url}")
    click.echo(f"  fingerprint {report.fingerprint}  ({report.seconds:.1f} s)")


# -- suite -------------------------------------------------------------------------------------


@cli.group()
def suite() -> None:
    """Inspect suites."""


@suite.command("info")
@click.argument("url")
@click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def suite_info(url: str, storage: tuple[str, ...], as_json: bool) -> None:
    """Counts by language, L1 risk and attack, and the fingerprint of the suite at URL.

    The counts and the fingerprint are computed from the data itself; a manifest whose
    fingerprint disagrees is reported.

    \b
    Example:
      assay suite info runs/suites/starter
    """
    from assay.engine.suite import open_suite

    s = open_suite(url, _parse_pairs(storage, "--storage-option"))
    counts, fingerprint = s.scan()
    stored = s.manifest.fingerprint if s.manifest else None
    if as_json:
        info = {
            "url": s.url,
            "name": s.name,
            "fingerprint": fingerprint,
            "manifest_fingerprint": stored,
            "files": len(s.files),
            "counts": counts.model_dump(),
        }
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    click.echo(f"suite        {s.name}  ({s.url})")
    click.echo(f"fingerprint  {fingerprint}")
    if stored is not None and stored != fingerprint:
        click.echo(
            f"WARNING: the manifest says {stored}: the files changed after the suite was written"
        )
    click.echo(f"rows         {counts.rows:,} in {len(s.files)} file(s)")
    if counts.with_response or counts.with_label:
        click.echo(
            f"             {counts.with_response:,} with a fixed response, "
            f"{counts.with_label:,} with a reference label"
        )
    click.echo("by language:")
    click.echo(_fmt_counts(counts.by_lang, counts.rows))
    click.echo("by L1 risk:")
    click.echo(_fmt_counts(counts.by_risk_l1, counts.rows))
    click.echo("by attack:")
    click.echo(_fmt_counts(counts.by_attack, counts.rows))


@suite.command("diff")
@click.argument("a")
@click.argument("b")
@click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def suite_diff(a: str, b: str, storage: tuple[str, ...], as_json: bool) -> None:
    """What changed from suite A to suite B: tests added and removed, counts by language, risk
    and attack, and whether B was derived from A (its manifest's parents).

    \b
    Example:
      assay suite diff runs/suites/starter runs/suites/starter-attacks
    """
    from assay.engine.suite import diff_suites

    d = diff_suites(a, b, _parse_pairs(storage, "--storage-option"))
    if as_json:
        click.echo(json.dumps(d.model_dump(), indent=2, ensure_ascii=False))
        return
    click.echo(f"A  {d.a}  {d.rows_a:,} rows  {d.fingerprint_a}")
    click.echo(f"B  {d.b}  {d.rows_b:,} rows  {d.fingerprint_b}")
    lineage = {"b-from-a": "B was derived from A", "a-from-b": "A was derived from B"}
    click.echo(lineage.get(d.lineage, "no parent link between them"))
    if d.identical:
        click.echo("identical: the same tests")
        return
    click.echo(f"common {d.common:,}   added {d.added:,}   removed {d.removed:,}")
    for axis, change in d.delta.items():
        click.echo(f"{axis}:")
        for key, n in change.items():
            click.echo(f"  {key:<40} {n:+,}")
    if d.added_sample:
        click.echo("added (sample): " + ", ".join(d.added_sample))
    if d.removed_sample:
        click.echo("removed (sample): " + ", ".join(d.removed_sample))


# -- construction: generate, attack ---------------------------------------------------------


@cli.command("generate")
@click.argument("config")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field by dotted path: quota=20, langs=[en].",
)
@click.option("--output", "-o", help="Suite folder to write (config: output).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def generate_cmd(
    config: str, overrides: tuple[str, ...], output: str | None, as_json: bool
) -> None:
    """Write a suite from a risk taxonomy with a generator model (S-Eval's test generator).

    For every taxonomy leaf (L2 of the built-in S-Eval tree, or the L3/L4 nodes of the YAML
    named by `taxonomy`) and every language, the generator writes `quota` prompts from assay's
    own instructions, with examples from `seed_suite` when given. Every row records its risk
    path, language, generator, instruction version and seed.

    \b
    Example:
      python examples/make_tiny_models.py models
      assay generate examples/generate.yaml --output runs/suites/generated
    """
    from assay.cluster.construct import generate_suite
    from assay.engine.config import load_config
    from assay.engine.generation import GenerateConfig

    sets = list(overrides) + ([f"output={output}"] if output else [])
    cfg = load_config(config, sets, model=GenerateConfig)
    result = generate_suite(cfg)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"generated {result.rows:,} of {result.slots:,} prompts ({result.requests:,} requests) "
        f"-> {result.url}  fingerprint {result.fingerprint}"
    )
    if result.rejected:
        click.echo(
            "answers asked again: " + ", ".join(f"{k} {v}" for k, v in result.rejected.items())
        )
    if result.shortfall:
        click.echo(
            f"WARNING: {sum(result.shortfall.values())} slot(s) unfilled after the last attempt: "
            + ", ".join(f"{k} {v}" for k, v in result.shortfall.items())
        )


@cli.command("attack")
@click.argument("suite_url", metavar="SUITE")
@click.option("--output", "-o", required=True, help="Suite folder to write.")
@click.option(
    "--attacks",
    help="'all' (S-Eval's 10; the default) or comma-separated keys.",
)
@click.option("--seed", type=int, help="Seed of every choice (default 0).")
@click.option(
    "--config",
    "config",
    help="YAML with more settings (generator for the rewriting attacks, executor, ...).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field: generator.model=models/tiny-target-a.",
)
@click.option("--no-base", is_flag=True, default=None, help="Write the attack rows only.")
@click.option(
    "--skip-attack-rows", is_flag=True, default=None, help="Pass over input rows that are attacks."
)
@click.option("--overwrite", is_flag=True, default=None, help="Replace a suite at the output.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def attack_cmd(
    suite_url: str,
    output: str,
    attacks: str | None,
    seed: int | None,
    config: str | None,
    overrides: tuple[str, ...],
    no_base: bool | None,
    skip_attack_rows: bool | None,
    overwrite: bool | None,
    as_json: bool,
) -> None:
    """Derive the S-Eval attack variants of every base prompt of SUITE.

    Each attack row carries `attack` and `base_id`. Template attacks are deterministic for a
    seed; the rewriting attacks (reverse_induction, in_context_attack,
    compositional_instructions) ask the config's `generator` model, or use their template
    fallback without one (recorded in the row's meta). Options given here win over --config.

    \b
    Examples:
      assay attack runs/suites/starter --attacks all --output runs/suites/starter-attacks
      assay attack runs/suites/starter --attacks goal_hijacking,instruction_encryption -o out
    """
    from assay.cluster.construct import attack_suite
    from assay.engine.config import AttackConfig, load_config

    flags = {
        "suite": suite_url,
        "output": output,
        "attacks": attacks,
        "seed": seed,
        "include_base": None if no_base is None else not no_base,
        "skip_attack_rows": skip_attack_rows,
        "overwrite": overwrite,
    }
    explicit = {k: v for k, v in flags.items() if v is not None}
    cfg = load_config(config, list(overrides), model=AttackConfig, explicit=explicit)
    result = attack_suite(cfg)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"{result.base_rows:,} base rows -> {result.attack_rows:,} attack rows "
        f"({result.rows:,} rows written) -> {result.url}  fingerprint {result.fingerprint}"
    )
    click.echo(_fmt_counts(result.by_attack, result.attack_rows))
    if result.fallbacks:
        click.echo("template fallbacks of rewriting attacks:")
        for key, n in result.fallbacks.items():
            click.echo(f"  {key}: {n:,}")


def _parse_step(text: str) -> dict[str, Any]:
    """``dedup`` or ``balance:quota=100,level=2`` as a plan step mapping."""
    import yaml

    from assay.engine.yamlsafe import load_yaml

    name, _, rest = text.partition(":")
    step: dict[str, Any] = {"strategy": name.strip()}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE in {text!r}", param_hint="--step")
        try:
            step[key.strip()] = load_yaml(value, f"--step {name.strip()}:{key.strip()}")
        except yaml.YAMLError as exc:
            raise click.BadParameter(
                f"{key.strip()}: not valid YAML ({exc})", param_hint="--step"
            ) from None
    return step


@cli.command("select")
@click.argument("suite_url", metavar="SUITE")
@click.option("--output", "-o", required=True, help="Suite folder to write.")
@click.option(
    "--plan", "plan_file", help="YAML: a list of steps ({strategy: dedup, threshold: 0.85}, ...)."
)
@click.option(
    "--step",
    "steps",
    multiple=True,
    metavar="STRATEGY[:K=V,...]",
    help="A step, after the plan's (repeatable): dedup, diversity, effectiveness, balance.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: per-chunk work (signatures, embeddings) as Ray tasks on the local Ray or "
    "RAY_ADDRESS.",
)
@click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable).",
)
@click.option("--overwrite", is_flag=True, help="Replace a suite at the output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def select_cmd(
    suite_url: str,
    output: str,
    plan_file: str | None,
    steps: tuple[str, ...],
    executor: str,
    storage: tuple[str, ...],
    overwrite: bool,
    as_json: bool,
) -> None:
    """Keep a balanced, non-redundant, effective subset of SUITE.

    Strategies compose in order, each seeing the rows the previous kept: dedup (MinHash/LSH
    near-duplicates over character n-grams, English and Chinese), diversity (greedy k-center
    over embeddings), effectiveness (prompts that drew unsafe verdicts in run folders), balance
    (quotas per taxonomy leaf x language x attack). Every dropped row is listed with its reason
    in OUTPUT/_dropped.parquet.

    \b
    Examples:
      assay select runs/suites/starter-attacks -o runs/suites/dedup --step dedup:threshold=0.8
      assay select SUITE -o OUT --step dedup --step balance:quota=50
      assay select SUITE -o OUT --plan examples/select.yaml --executor ray
    """
    import os

    from assay.cluster.construct import select
    from assay.engine.config import ExecutorSpec
    from assay.engine.select import read_plan

    plan: list[Any] = list(read_plan(plan_file).steps) if plan_file else []
    plan.extend(_parse_step(s) for s in steps)
    if not plan:
        raise click.UsageError("give at least one step (--step or --plan)")
    spec = ExecutorSpec(kind=executor, address=os.environ.get("RAY_ADDRESS"))
    report = select(
        suite_url,
        output,
        plan,
        spec,
        _parse_pairs(storage, "--storage-option"),
        overwrite=overwrite,
    )
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    click.echo(
        f"kept {report.kept:,} of {report.input_rows:,} rows, dropped {report.dropped:,} "
        f"-> {report.output_url}  fingerprint {report.output_fingerprint}"
    )
    for step in report.steps:
        click.echo(f"  {step.strategy:<14} dropped {step.dropped:,}")
    if report.dropped_url:
        click.echo(f"dropped rows and reasons: {report.dropped_url}")
    short = report.below_quota
    if short:
        click.echo(f"{len(short):,} strata below their quota (see --json), e.g.:")
        for s in short[:5]:
            click.echo(f"  {s.stratum}: {s.rows} of {s.quota}")


# -- taxonomy ----------------------------------------------------------------------------------


@cli.group()
def taxonomy() -> None:
    """Show the built-in taxonomies and their mapping onto S-Eval's L1 dimensions."""


@taxonomy.command("list")
def taxonomy_list() -> None:
    """List the built-in taxonomies.

    \b
    Example:
      assay taxonomy list
    """
    from assay.engine.taxonomy import get_taxonomy, taxonomy_names

    for name in taxonomy_names():
        tax = get_taxonomy(name)
        click.echo(f"{name:<14} {len(tax.categories):>3} categories  {tax.description}")


@taxonomy.command("show")
@click.argument("name")
def taxonomy_show(name: str) -> None:
    """Show one taxonomy's categories and their S-Eval L1 mapping (or the S-Eval risk tree).

    \b
    Examples:
      assay taxonomy show aegis
      assay taxonomy show s-eval
    """
    from assay.engine.taxonomy import get_taxonomy, seval_tree

    if name.lower() in ("s-eval", "seval"):
        tree = seval_tree()
        for l1 in tree.children(None):
            click.echo(f"{l1.key}  ({l1.name} / {l1.name_zh})")
            for l2 in tree.children(l1.path):
                click.echo(f"  {l2.path}  ({l2.name} / {l2.name_zh})")
        return
    tax = get_taxonomy(name)
    for cat in tax.categories:
        mapped = ", ".join(cat.seval_l1) or "-"
        click.echo(f"{cat.code:<28} {cat.name:<40} -> {mapped}")


# -- run ---------------------------------------------------------------------------------------


@cli.command("run")
@click.argument("config")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field by dotted path: targets.0.sampling.max_tokens=32.",
)
@click.option("--output", "-o", help="Folder (any fsspec URL) for run folders (config: output).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run_cmd(config: str, overrides: tuple[str, ...], output: str | None, as_json: bool) -> None:
    """Run every target over the suite and every judge over the answers; write the run folder.

    Running the same command again resumes: finished shards are skipped, and a completed run
    does no model work.

    \b
    Examples:
      python examples/make_tiny_models.py models
      assay run examples/offline.yaml --output runs
      assay run examples/offline.yaml --set shard_size=32 --set executor.kind=local
    """
    from assay.cluster.run import run
    from assay.engine.config import load_config
    from assay.engine.summary import format_summary

    sets = list(overrides) + ([f"output={output}"] if output else [])
    cfg = load_config(config, sets)
    result = run(cfg)
    if as_json:
        click.echo(json.dumps({**result.__dict__}, indent=2, default=str))
        return
    if result.nothing_to_do:
        click.echo(
            f"run {result.run_id}: nothing to do, all {result.shards_total} shards are done "
            f"({result.url})"
        )
    else:
        click.echo(
            f"run {result.run_id}: {result.shards_run} shard(s) run, "
            f"{result.shards_done_before} already done; {result.rows_generated:,} generations, "
            f"{result.rows_judged:,} verdicts in {result.seconds:.1f} s -> {result.url}"
        )
    click.echo(format_summary(result.summary))


@cli.command("status")
@click.argument("run", metavar="RUN_OR_JOB")
@click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable).",
)
@click.option(
    "--address",
    help="Ray Jobs API (dashboard) address, e.g. http://HEAD:8265; makes RUN_OR_JOB a job id "
    "(default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, http://127.0.0.1:8265).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's status as JSON.")
def status_cmd(run: str, storage: tuple[str, ...], address: str | None, as_json: bool) -> None:
    """Show a run's status and progress from its manifest, or a Ray job's state.

    RUN_OR_JOB is a run folder's URL, or a job id printed by `assay submit` (raysubmit_...);
    for a job, the progress of the run it writes is shown too once its manifest exists.

    \b
    Examples:
      assay status runs/run-34eb115a51a8
      assay status raysubmit_XJ2gq3yLkZcvH1sT --address http://head:8265
    """
    options = _parse_pairs(storage, "--storage-option")
    if address is not None or _is_job_id(run):
        _job_status(run, address, options, as_json)
        return
    from assay.engine.runfolder import RunFolder

    base, _, run_id = run.rstrip("/").rpartition("/")
    folder = RunFolder(base or ".", run_id, options)
    if as_json:
        click.echo(json.dumps(_manifest_status(folder), indent=2))
        return
    _echo_run_status(folder)


@cli.command("verify")
@click.argument("run")
@click.option(
    "--storage-option",
    "storage",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for the run and its suite (repeatable).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Remove the markers of bad shards (and stray parts) so the next `assay run` redoes them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def verify_cmd(
    ctx: click.Context, run: str, storage: tuple[str, ...], repair: bool, as_json: bool
) -> None:
    """Deep check of a run folder: read every part, exit 1 naming every bad file.

    Checks every marker against the plan, every part's size, checksum and row count, every key
    once, every test id in its shard (against the suite), every test answered and judged, no
    stray part files, and that summary.json is current. `assay run` and `assay report` check
    cheaply (markers, sizes, checksums of what they read); this reads everything.

    \b
    Examples:
      assay verify runs/run-34eb115a51a8
      assay verify s3://bucket/runs/run-34eb115a51a8 --storage-option anon=false --json
      assay verify runs/run-34eb115a51a8 --repair && assay run config.yaml
    """
    from assay.engine.metrics import open_run
    from assay.engine.verify import repair as repair_run
    from assay.engine.verify import verify_run

    options = _parse_pairs(storage, "--storage-option")
    folder = open_run(run, options)
    report = verify_run(folder, options)
    removed = repair_run(folder, report) if repair and not report.ok else []
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "removed": removed}, indent=2))
    else:
        click.echo(report.format())
        for url in removed:
            click.echo(f"removed {url}")
        if removed:
            click.echo("rerun `assay run` with the run's config to redo those shards")
    if not report.ok:
        ctx.exit(1)


def _is_job_id(ref: str) -> bool:
    from assay.cluster.jobs import is_job_id

    return is_job_id(ref)


def _manifest_status(folder: RunFolder) -> dict[str, Any]:
    m = folder.read_manifest()
    info: dict[str, Any] = m.model_dump(
        mode="json",
        include={"run_id", "status", "created_at", "updated_at", "progress", "workers", "error"},
    )
    return info


def _echo_run_status(folder: RunFolder) -> None:
    m = folder.read_manifest()
    click.echo(f"run {m.run_id}: {m.status} (updated {m.updated_at})")
    for stage in m.stages:
        p = m.progress.get(stage)
        done = folder.done_shards(stage)
        rows = sum(s.rows for s in m.plan.shards if s.shard_id in done)
        line = (
            f"  {stage:<12} {len(done):>6}/{len(m.plan.shards)} shards  "
            f"{rows:>9,}/{m.plan.total_rows:,} rows"
        )
        if p is not None and p.rows_per_second:
            eta = f", ETA {p.eta_seconds:.0f} s" if p.eta_seconds else ""
            line += f"  {p.rows_per_second:,.1f} rows/s{eta}"
        click.echo(line)
    if m.workers:
        click.echo(
            "  rows served per node: "
            + ", ".join(f"{node[:12]} {n:,}" for node, n in sorted(m.workers.items()))
        )
    if m.error:
        click.echo(f"  error: {m.error}")


def _job_status(job_id: str, address: str | None, storage: dict[str, Any], as_json: bool) -> None:
    from assay.cluster.jobs import job_state
    from assay.engine.errors import StorageError
    from assay.engine.runfolder import RunFolder

    state = job_state(job_id, address)
    folder = None
    if state.run_id and state.run_url:
        base = state.run_url[: -len(state.run_id)].rstrip("/") or "."
        folder = RunFolder(base, state.run_id, storage)
    run_info: dict[str, Any] | None = None
    run_error: str | None = None
    if folder is not None:
        try:
            run_info = _manifest_status(folder)
        except StorageError as exc:
            run_error = str(exc)  # not written yet (pending), or not readable from here
        except Exception as exc:  # storage this machine cannot reach (no credentials, no s3fs)
            run_error = f"{type(exc).__name__}: {exc}"
    if as_json:
        payload = {"job": dict(state.__dict__), "run": run_info, "run_error": run_error}
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"job {state.job_id}: {state.status}")
    if state.message:
        click.echo(f"  message     {state.message}")
    click.echo(f"  entrypoint  {state.entrypoint}")
    if state.start_time:
        took = f" ({state.duration_s:.1f} s)" if state.duration_s is not None else ""
        click.echo(
            f"  started     {state.start_time}"
            + (f", ended {state.end_time}{took}" if state.end_time else "")
        )
    if state.run_url:
        click.echo(f"  run folder  {state.run_url}")
    if run_info is not None and folder is not None:
        _echo_run_status(folder)
    elif run_error:
        click.echo(f"  run: no manifest to show ({run_error})")


# -- Ray jobs ----------------------------------------------------------------------------------

_ADDRESS_HELP = (
    "Ray Jobs API (dashboard) address, e.g. http://HEAD:8265 "
    "(default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS, http://127.0.0.1:8265)."
)


@cli.command("submit")
@click.argument("config")
@click.option("--address", help=_ADDRESS_HELP)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field by dotted path (passed on to `assay run`).",
)
@click.option(
    "--output", "-o", help="Folder (any fsspec URL) for run folders, as the cluster sees it."
)
@click.option(
    "--include",
    multiple=True,
    metavar="PATH",
    help="A file or folder to ship next to the config in the job's working_dir (repeatable); "
    "config paths starting with ./ resolve there.",
)
@click.option(
    "--ship",
    type=click.Choice(["source", "installed"]),
    default="source",
    show_default=True,
    help="source: send this assay's code with the job (the cluster needs only its "
    "dependencies). installed: the cluster image has assay; send only the config.",
)
@click.option(
    "--pip",
    multiple=True,
    metavar="REQUIREMENT",
    help="A pip requirement installed for the job (runtime_env pip; repeatable).",
)
@click.option(
    "--wait", is_flag=True, help="Stream the job's logs until it ends; exit 1 unless it succeeded."
)
@click.option("--json", "as_json", is_flag=True, help="Print the submission as JSON.")
def submit_cmd(
    config: str,
    address: str | None,
    overrides: tuple[str, ...],
    output: str | None,
    include: tuple[str, ...],
    ship: str,
    pip: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Submit `assay run CONFIG` to a Ray cluster through the Ray Jobs API; print the job id.

    The config (and --include files) travel in the job's working_dir; this assay's code travels
    with it (--ship source) unless the cluster has assay installed (--ship installed). The config
    is validated here first. Results go to --output as the cluster sees it: use object storage
    (s3://...) on a real cluster.

    \b
    Examples:
      assay submit nightly.yaml --address http://head:8265 --output s3://evals/runs
      assay submit quick.yaml --include starter_suite.jsonl --output /shared/runs --wait
      assay status raysubmit_XJ2gq3yLkZcvH1sT --address http://head:8265
    """
    from assay.cluster.jobs import follow_logs, submit

    job = submit(
        config,
        address=address,
        overrides=list(overrides),
        output=output,
        include=list(include),
        ship=ship,
        pip=list(pip),
    )
    if as_json:
        click.echo(json.dumps(job.__dict__, indent=2))
    else:
        for note in job.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(job.job_id)
        click.echo(f"  run {job.run_id} -> {job.run_url}", err=True)
        click.echo(
            f"  follow with: assay logs {job.job_id} --address {job.address} --follow", err=True
        )
    if wait:
        status = follow_logs(job.job_id, lambda s: click.echo(s, nl=False, err=True), address)
        click.echo(f"job {job.job_id}: {status}", err=True)
        if status != "SUCCEEDED":
            raise click.exceptions.Exit(EXIT_ERROR)


@cli.command("logs")
@click.argument("job")
@click.option("--address", help=_ADDRESS_HELP)
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
def logs_cmd(job: str, address: str | None, follow: bool) -> None:
    """Print a Ray job's output (the `assay run` it executes).

    \b
    Example:
      assay logs raysubmit_XJ2gq3yLkZcvH1sT --address http://head:8265 --follow
    """
    from assay.cluster.jobs import follow_logs, job_logs

    if follow:
        follow_logs(job, lambda s: click.echo(s, nl=False), address)
    else:
        click.echo(job_logs(job, address), nl=False)


@cli.command("stop")
@click.argument("job")
@click.option("--address", help=_ADDRESS_HELP)
def stop_cmd(job: str, address: str | None) -> None:
    """Stop a Ray job; its committed shards stay, and submitting the config again resumes.

    \b
    Example:
      assay stop raysubmit_XJ2gq3yLkZcvH1sT --address http://head:8265
    """
    from assay.cluster.jobs import stop_job

    if stop_job(job, address):
        click.echo(f"job {job}: stop requested")
    else:
        click.echo(f"job {job}: already ended")


# -- commands defined in their own modules ---------------------------------------------------------

from assay.cluster.cli_judges import register as _register_judges  # noqa: E402
from assay.cluster.cli_report import register as _register_report  # noqa: E402
from assay.cluster.cli_serve import register as _register_serve  # noqa: E402

_register_judges(cli)
_register_report(cli)
_register_serve(cli)


# -- entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: runs the CLI and turns errors into one clear message."""
    args = _debug_first(sys.argv[1:] if argv is None else argv)
    debug = args[:1] == ["--debug"] or os.environ.get("ASSAY_DEBUG") == "1"
    try:
        rv = cli.main(args=args, prog_name="assay", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AssayError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except ValidationError as exc:
        if debug:
            raise
        from assay.engine.config import error_message

        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or exc.title
        click.echo(f"error: invalid {where}: {error_message(err)}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True
        )
        sys.exit(EXIT_ERROR)
    sys.exit(0)


if __name__ == "__main__":
    main()
