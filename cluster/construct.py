"""Suite construction on the cluster: ``assay generate`` and ``assay attack``.

Both write a suite through :class:`~assay.engine.suite.SuiteWriter` (atomic commit; manifest with
the input fingerprint as parent, the command line and the config as provenance), and run their
models on the same executors and actors as ``assay run``:

- **generate**: one request per slot (taxonomy leaf x language x quota index) to a
  ``GeneratorActor`` pool; unusable or duplicate answers are asked again with a new seed, up to
  ``max_attempts``; what is still missing is reported as a shortfall per leaf and language.
- **attack**: the base suite is streamed in batches of ``batch_rows``; each batch's template
  attacks run as a Ray task (columnar in and out: an Arrow table of base rows, an Arrow table of
  attack rows), in parallel with the other batches in flight, while its rewriting attacks send
  their requests to the generator pool; batches are written in input order (a batch's base
  rows, then its template attacks' rows, then its rewritten rows), as Arrow tables.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from assay.engine.attacks import Attack, derive_all, resolve_attacks
from assay.engine.config import AttackConfig, GeneratorSpec
from assay.engine.errors import InputError
from assay.engine.generation import (
    ExamplePool,
    GenerateConfig,
    Slot,
    accept,
    build_request,
    generation_plan,
    load_tree,
)
from assay.engine.records import TestCase
from assay.engine.requests import GenerationRequest, GenerationResult
from assay.engine.suite import SuiteWriter, open_suite

from .executors import Executor, Pool, make_executor

log = logging.getLogger(__name__)


# -- shared -----------------------------------------------------------------------------------


async def complete(pool: Pool, requests: list[GenerationRequest], max_batch: int) -> list[Any]:
    """Requests through a generator pool in calls of ``max_batch``, all in flight at once."""
    chunks = [requests[i : i + max_batch] for i in range(0, len(requests), max_batch)]
    parts = await asyncio.gather(*(pool.call("complete", c, len(c)) for c in chunks))
    return [r for part in parts for r in part]


def _provenance(cfg: Any, command: str) -> dict[str, Any]:
    """The config as recorded in a suite manifest (storage options left out: they may hold
    credentials)."""
    return {command: cfg.model_dump(mode="json", exclude={"storage_options"})}


def _command_line() -> list[str]:
    return [" ".join(["assay", *sys.argv[1:]])] if sys.argv and sys.argv[0] else []


async def _generator_pool(executor: Executor, spec: GeneratorSpec, cfg: Any) -> Pool:
    return await executor.pool("target", spec, cfg.max_retries, cfg.retry_backoff_s)


# -- generate ---------------------------------------------------------------------------------


@dataclass
class GenerateResult:
    """What ``assay generate`` wrote."""

    url: str
    fingerprint: str
    rows: int
    slots: int
    requests: int
    by_leaf_lang: dict[str, int] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


def generate_suite(cfg: GenerateConfig, created_by: list[str] | None = None) -> GenerateResult:
    """Writes a suite of generated prompts; see the module docstring."""
    tree = load_tree(cfg)
    slots = generation_plan(tree, cfg)
    examples = ExamplePool(tree, {s.risk for s in slots})
    parents: list[str] = []
    if cfg.seed_suite:
        seeds = open_suite(cfg.seed_suite, cfg.storage_options)
        for case in seeds.iter_cases():
            examples.add(case)
        parents.append(seeds.manifest.fingerprint if seeds.manifest else seeds.scan()[1])
    writer = SuiteWriter(
        cfg.output, name=cfg.name, storage_options=cfg.storage_options, overwrite=cfg.overwrite
    )
    try:
        accepted, requests, rejected = asyncio.run(_generate(cfg, tree, slots, examples))
        by_key: Counter[str] = Counter()
        for i in sorted(accepted):
            writer.write(accepted[i])
            by_key[f"{slots[i].risk}@{slots[i].lang}"] += 1
        shortfall = Counter(f"{s.risk}@{s.lang}" for i, s in enumerate(slots) if i not in accepted)
        provenance = _provenance(cfg, "generate")
        provenance["shortfall"] = dict(shortfall)
        manifest = writer.commit(
            created_by=created_by if created_by is not None else _command_line(),
            parents=parents,
            provenance=provenance,
        )
    except BaseException:
        writer.abort()
        raise
    return GenerateResult(
        url=writer.loc.url,
        fingerprint=manifest.fingerprint,
        rows=manifest.counts.rows,
        slots=len(slots),
        requests=requests,
        by_leaf_lang=dict(by_key),
        shortfall=dict(shortfall),
        rejected=dict(rejected),
    )


async def _generate(
    cfg: GenerateConfig, tree: Any, slots: list[Slot], examples: ExamplePool
) -> tuple[dict[int, TestCase], int, Counter[str]]:
    from assay.actors.workers import target_params_hash

    executor = make_executor(cfg.executor)
    try:
        pool = await _generator_pool(executor, cfg.generator, cfg)
        shown = [examples.pick(s, cfg.examples_per_request, cfg.seed) for s in slots]
        gen_hash = target_params_hash(cfg.generator)
        accepted: dict[int, TestCase] = {}
        seen: set[str] = set()
        rejected: Counter[str] = Counter()
        pending = list(range(len(slots)))
        sent = 0
        for attempt in range(cfg.max_attempts):
            if not pending:
                break
            reqs = [build_request(tree, cfg, slots[i], attempt, shown[i]) for i in pending]
            results: list[GenerationResult] = await complete(pool, reqs, cfg.generator.max_batch)
            sent += len(reqs)
            still = []
            for i, r in zip(pending, results, strict=True):
                out = accept(cfg, slots[i], attempt, r.text, r.error, shown[i], gen_hash)
                if isinstance(out, str):
                    rejected[out] += 1
                    still.append(i)
                elif out.test_id in seen:
                    rejected["duplicate of an accepted prompt"] += 1
                    still.append(i)
                else:
                    seen.add(out.test_id)
                    accepted[i] = out
            pending = still
            log.info(
                "generate attempt %d: %d accepted, %d left", attempt, len(accepted), len(still)
            )
        return accepted, sent, rejected
    finally:
        await executor.shutdown()


# -- attack -----------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """What ``assay attack`` wrote."""

    url: str
    fingerprint: str
    base_rows: int
    attack_rows: int
    rows: int
    by_attack: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)
    skipped_attack_rows: int = 0


def derive_table(table: pa.Table, attacks: list[str], seed: int) -> pa.Table:
    """Attack rows of a table of base rows, as a TestCase table (the unit of a Ray task)."""
    cases = TestCase.from_table(table)
    return TestCase.to_table(derive_all(cases, attacks, seed))


def attack_suite(cfg: AttackConfig, created_by: list[str] | None = None) -> AttackResult:
    """Writes the attack variants of a suite (and its base rows); see the module docstring."""
    suite = open_suite(cfg.suite, cfg.storage_options)
    attacks = resolve_attacks(cfg.attacks)
    parent = suite.manifest.fingerprint if suite.manifest else suite.scan()[1]
    writer = SuiteWriter(
        cfg.output, name=cfg.name, storage_options=cfg.storage_options, overwrite=cfg.overwrite
    )
    result = AttackResult(url=writer.loc.url, fingerprint="", base_rows=0, attack_rows=0, rows=0)
    try:
        asyncio.run(_attack(cfg, suite, attacks, writer, result))
        manifest = writer.commit(
            created_by=created_by if created_by is not None else _command_line(),
            parents=[parent],
            provenance=_provenance(cfg, "attack"),
        )
    except BaseException:
        writer.abort()
        raise
    result.fingerprint = manifest.fingerprint
    result.rows = manifest.counts.rows
    return result


async def _attack(
    cfg: AttackConfig, suite: Any, attacks: list[Attack], writer: SuiteWriter, result: AttackResult
) -> None:
    names = [a.name for a in attacks]
    rewrite = [a.name for a in attacks if a.needs_generator]
    use_generator = bool(rewrite) and cfg.generator is not None
    templated = [n for n in names if not (use_generator and n in rewrite)]
    executor = make_executor(cfg.executor)
    try:
        pool = (
            await _generator_pool(executor, cfg.generator, cfg)
            if use_generator and cfg.generator is not None  # use_generator implies it; for mypy
            else None
        )
        run_task = _task_runner(cfg.executor.kind == "ray")
        loop = asyncio.get_running_loop()
        by_attack: Counter[str] = Counter()
        fallbacks: Counter[str] = Counter()

        def generate(reqs: list[GenerationRequest]) -> list[GenerationResult]:
            assert pool is not None and cfg.generator is not None
            # The generator's decoding parameters (length, temperature) are the user's; the
            # seed stays the attack's own, so the same seed gives the same rewrite.
            sampling = cfg.generator.sampling
            reqs = [
                r.model_copy(
                    update={"sampling": sampling.model_copy(update={"seed": r.sampling.seed})}
                )
                for r in reqs
            ]
            fut = asyncio.run_coroutine_threadsafe(
                complete(pool, reqs, cfg.generator.max_batch), loop
            )
            return fut.result()

        async def one(table: pa.Table) -> tuple[pa.Table, list[pa.Table], list[TestCase]]:
            parts: list[Awaitable[Any]] = []
            if templated:
                parts.append(run_task(derive_table, table, templated, cfg.seed))
            if pool is not None:
                bases = TestCase.from_table(table)
                parts.append(asyncio.to_thread(derive_all, bases, rewrite, cfg.seed, generate))
            done = await asyncio.gather(*parts)
            tables = [p for p in done if isinstance(p, pa.Table)]
            rewritten = [row for p in done if isinstance(p, list) for row in p]
            return table, tables, rewritten

        # Enough batches in flight to keep every worker busy, few enough to bound the memory
        # the driver holds (each batch's attack rows wait here until written).
        window = _parallelism(cfg.executor.kind == "ray") + 1
        in_flight: list[asyncio.Task[Any]] = []

        def write(done: tuple[pa.Table, list[pa.Table], list[TestCase]]) -> None:
            table, tables, rewritten = done
            if cfg.include_base:
                writer.write_table(table)
            result.base_rows += table.num_rows
            for t in tables:
                writer.write_table(t)
                by_attack.update(t.column("attack").to_pylist())
                _count_fallbacks(t, fallbacks)
            for row in rewritten:
                writer.write(row)
                by_attack[row.attack or ""] += 1
                how = row.meta.get("rewrite")
                if isinstance(how, str) and how.startswith("fallback"):
                    fallbacks[f"{row.attack}: {how}"] += 1
            result.attack_rows += sum(t.num_rows for t in tables) + len(rewritten)
            expected = table.num_rows * len(names)
            written = sum(t.num_rows for t in tables) + len(rewritten)
            if written != expected:
                raise RuntimeError(f"attack batch gave {written} rows, expected {expected}")

        for batch in suite.iter_batches(cfg.batch_rows):
            table = pa.Table.from_batches([batch])
            table = _only_base_rows(table, cfg.skip_attack_rows, result)
            if table.num_rows == 0:
                continue
            in_flight.append(asyncio.create_task(one(table)))
            while len(in_flight) >= window:
                write(await in_flight.pop(0))
        for task in in_flight:
            write(await task)
        result.by_attack = dict(by_attack)
        result.fallbacks = dict(fallbacks)
    finally:
        await executor.shutdown()


def _count_fallbacks(table: pa.Table, counts: Counter[str]) -> None:
    """Counts the rows of rewriting attacks that used their template fallback (from meta)."""
    import json

    import pyarrow.compute as pc

    has = pc.match_substring(table.column("meta"), '"rewrite": "fallback')
    for row in table.filter(has).select(["attack", "meta"]).to_pylist():
        counts[f"{row['attack']}: {json.loads(row['meta'])['rewrite']}"] += 1


def _only_base_rows(table: pa.Table, skip: bool, result: AttackResult) -> pa.Table:
    import pyarrow.compute as pc

    is_attack = pc.is_valid(table.column("attack"))
    n = pc.sum(is_attack).as_py() or 0
    if not n:
        return table
    if not skip:
        first = table.filter(is_attack).column("test_id")[0].as_py()
        raise InputError(
            f"the suite holds {n} attack row(s) in this batch (first: test {first}); attacks "
            "derive from base prompts only (set skip_attack_rows / --skip-attack-rows to pass "
            "over them)"
        )
    result.skipped_attack_rows += n
    return table.filter(pc.invert(is_attack))


def ray_map_fn(
    max_in_flight: int | None = None,
) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """A ``map_fn`` for :mod:`assay.engine.select`: each item a Ray task (1 CPU), results in
    input order, at most ``max_in_flight`` tasks at once (default: the cluster's CPUs)."""
    import ray

    def map_fn(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        remote = ray.remote(num_cpus=1)(fn)
        limit = max_in_flight or _parallelism(True)
        refs: list[Any] = []
        out: list[Any] = []
        for item in items:
            refs.append(remote.remote(item))
            if len(refs) - len(out) > limit:
                out.append(ray.get(refs[len(out)]))
        out.extend(ray.get(refs[len(out) :]))
        return out

    return map_fn


def select(
    suite_url: str,
    output_url: str,
    plan: Any,
    executor: Any,
    storage_options: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    """``assay select``: the engine's selection, its per-chunk work (MinHash signatures,
    embeddings) mapped over Ray tasks when the executor is Ray."""
    from assay.engine.select import select_suite

    options.setdefault("created_by", _command_line())
    if executor.kind != "ray":
        return select_suite(suite_url, output_url, plan, storage_options, **options)
    ray_executor = make_executor(executor)  # starts or joins Ray
    try:
        return select_suite(
            suite_url, output_url, plan, storage_options, map_fn=ray_map_fn(), **options
        )
    finally:
        asyncio.run(ray_executor.shutdown())


def _parallelism(use_ray: bool) -> int:
    if not use_ray:
        return 1
    import ray

    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]  # ray: unannotated
    return max(1, int(resources.get("CPU", 1)))


def _task_runner(use_ray: bool) -> Callable[..., Awaitable[Any]]:
    """Runs a function as a Ray task (awaitable) or in a worker thread here."""
    if not use_ray:

        async def local(fn: Callable[..., Any], *args: Any) -> Any:
            return await asyncio.to_thread(fn, *args)

        return local
    import ray

    remotes: dict[Any, Any] = {}

    async def remote(fn: Callable[..., Any], *args: Any) -> Any:
        if fn not in remotes:
            remotes[fn] = ray.remote(num_cpus=1)(fn)
        return await remotes[fn].remote(*args)

    return remote


__all__ = [
    "AttackResult",
    "GenerateResult",
    "attack_suite",
    "complete",
    "derive_table",
    "generate_suite",
    "ray_map_fn",
    "select",
]
