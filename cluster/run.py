"""``assay run``: every suite row answered by each target, every answer judged by each judge.

The flow, per shard of the plan written into the manifest before any work starts::

    suite rows -> (each target) GeneratorActor -> commit generations part
               -> (each target x judge) JudgeActor, starting per target as soon as that target's
                  answers for the shard are back -> commit verdicts part

Several shards are in flight at once (``max_shards_in_flight``) so every actor is fed from several
shards; within an actor the engine batches concurrent calls (vLLM continuously). A rerun of the
same config is a resume: shards whose verdicts marker exists are skipped, shards whose generations
marker exists are only judged, and a completed run does no model work and starts no actor.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from assay.engine.config import RunConfig, SuiteSpec
from assay.engine.errors import AssayError, ConfigError, FatalError
from assay.engine.importers import ImportConfig, import_suite
from assay.engine.io import Location
from assay.engine.records import Generation, Verdict
from assay.engine.runfolder import (
    RunFolder,
    RunManifest,
    Shard,
    ShardPlan,
    StageProgress,
    canonical_hash,
    plan_shards,
    read_shard,
    software_versions,
)
from assay.engine.suite import SUITE_MANIFEST, Suite, open_suite
from assay.engine.summary import SUITE_COLUMNS, SummaryAccumulator

from .executors import Executor, Pool, make_executor

log = logging.getLogger(__name__)

GENERATIONS = "generations"
VERDICTS = "verdicts"
GIVEN = "given"
"""Target name of responses that come with the suite (label-level datasets)."""


@dataclass
class RunResult:
    """What a run did."""

    run_id: str
    url: str
    shards_total: int
    shards_done_before: int
    shards_run: int
    rows_generated: int = 0
    rows_judged: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    """Time to start the executor and load every model (until the first shard could start)."""
    work_seconds: float = 0.0
    """Time from then until the last shard was committed."""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def nothing_to_do(self) -> bool:
        """Whether every shard was already done."""
        return self.shards_run == 0


def derive_run_id(cfg: RunConfig) -> str:
    """The run id: given, or a hash of the fields that change results."""
    return cfg.run_id or f"run-{canonical_hash(cfg.result_fields(), 12)}"


def resolve_suite(cfg: RunConfig) -> Suite:
    """Opens the suite, importing it into ``<output>/_suites/`` first if it is a source file."""
    spec: SuiteSpec = cfg.suite
    if spec.format == "suite":
        return open_suite(spec.url, cfg.storage_options)
    key = canonical_hash(spec.model_dump(mode="json", exclude={"limit"}), 12)
    name = Location.parse(spec.url).name.split(".")[0] or "suite"
    out = Location.parse(cfg.output, cfg.storage_options).join("_suites", f"{name}-{key}")
    if not out.join(SUITE_MANIFEST).exists():
        import_suite(
            ImportConfig(
                format=spec.format,
                source=spec.url,
                output=out.url,
                name=name,
                storage_options=cfg.storage_options,
                overwrite=True,
                **spec.import_options,
            )
        )
    return open_suite(out.url, cfg.storage_options)


def _limit_plan(plan: ShardPlan, limit: int | None) -> ShardPlan:
    if limit is None or limit >= plan.total_rows:
        return plan
    shards: list[Shard] = []
    left = limit
    for s in plan.shards:
        if left <= 0:
            break
        take = min(s.rows, left)
        shards.append(s.model_copy(update={"row_end": s.row_start + take}))
        left -= take
    return ShardPlan(shard_size=plan.shard_size, total_rows=limit, shards=shards)


class _Progress:
    """Per-stage progress: tqdm bars on a terminal (silent otherwise) and the manifest's figures.

    The manifest is rewritten at most every ``interval`` seconds (and once at the end), so
    ``assay status`` shows done/total, rows per second and an ETA for each stage.
    """

    def __init__(
        self,
        enabled: bool,
        folder: RunFolder,
        plan: ShardPlan,
        pools: list[Pool],
        interval: float = 2.0,
    ):
        self.folder = folder
        self.plan = plan
        self.pools = pools
        self.interval = interval
        self.started = time.monotonic()
        self.last_write = 0.0
        rows = {s.shard_id: s.rows for s in plan.shards}
        self.stats: dict[str, StageProgress] = {}
        self.rows_at_start: dict[str, int] = {}
        for stage in (GENERATIONS, VERDICTS):
            done = folder.done_shards(stage)
            rows_done = sum(rows.get(i, 0) for i in done)
            self.stats[stage] = StageProgress(
                shards_done=len(done),
                shards_total=len(plan.shards),
                rows_done=rows_done,
                rows_total=plan.total_rows,
            )
            self.rows_at_start[stage] = rows_done
        self.workers: Counter[str] = Counter(folder.read_manifest().workers)
        self.bars: dict[str, Any] = {}
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                for pos, stage in enumerate((GENERATIONS, VERDICTS)):
                    self.bars[stage] = tqdm(
                        total=plan.total_rows,
                        initial=self.stats[stage].rows_done,
                        unit="row",
                        desc=f"{stage:<11}",
                        position=pos,
                        dynamic_ncols=True,
                    )
            except ImportError:
                self.bars = {}

    def done(self, stage: str, rows: int) -> None:
        """A shard of ``stage`` with ``rows`` rows was committed."""
        st = self.stats[stage]
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rows_done = st.rows_done + rows
        rate = (rows_done - self.rows_at_start[stage]) / elapsed
        left = st.rows_total - rows_done
        self.stats[stage] = StageProgress(
            shards_done=st.shards_done + 1,
            shards_total=st.shards_total,
            rows_done=rows_done,
            rows_total=st.rows_total,
            rows_per_second=round(rate, 2),
            eta_seconds=round(left / rate, 1) if rate > 0 else None,
        )
        if stage in self.bars:
            self.bars[stage].update(rows)
        if time.monotonic() - self.last_write >= self.interval:
            self.write()

    def write(self) -> None:
        """Writes the figures (and rows per node) into the manifest."""
        self.last_write = time.monotonic()
        for pool in self.pools:
            self.workers.update(pool.rows_by_node)
            pool.rows_by_node.clear()
        self.folder.update_manifest(progress=dict(self.stats), workers=dict(self.workers))

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


class _Case(NamedTuple):
    """What the driver needs of a suite row (no per-row model validation on the hot path)."""

    test_id: str
    text: str
    lang: str
    response: str | None


CASE_COLUMNS = ["test_id", "text", "lang", "response"]


class _Runner:
    """State of one run while it executes."""

    def __init__(
        self,
        cfg: RunConfig,
        suite: Suite,
        folder: RunFolder,
        manifest: RunManifest,
        generated_before: set[int],
    ):
        self.cfg = cfg
        self.suite = suite
        self.folder = folder
        self.manifest = manifest
        self.generated_before = generated_before
        self.targets: dict[str, Pool] = {}
        self.judges: dict[str, Pool] = {}
        self.rows_generated = 0
        self.rows_judged = 0
        self.startup_seconds = 0.0
        self.work_seconds = 0.0
        self.summary = SummaryAccumulator()
        self.processed: set[int] = set()

    async def start_pools(self, executor: Executor, need_targets: bool) -> None:
        """Starts every model's pool at once (each loads its model in parallel)."""
        cfg = self.cfg
        kinds = [("target", t) for t in cfg.targets] if need_targets else []
        kinds += [("judge", j) for j in cfg.judges]
        pools = await asyncio.gather(
            *(
                executor.pool(kind, spec, cfg.max_retries, cfg.retry_backoff_s)
                for kind, spec in kinds
            )
        )
        for (kind, spec), pool in zip(kinds, pools, strict=True):
            (self.targets if kind == "target" else self.judges)[spec.name] = pool

    async def process(self, shard: Shard, progress: _Progress) -> None:
        table = read_shard(self.suite, shard, columns=[*CASE_COLUMNS, "risk", "attack"])
        cases = [
            _Case(*row)
            for row in zip(*(table.column(c).to_pylist() for c in CASE_COLUMNS), strict=True)
        ]
        if shard.shard_id in self.generated_before:
            gen_table = self.folder.read_stage_part(GENERATIONS, shard.shard_id)
            gens = Generation.from_table(gen_table)
            by_target: dict[str, list[Generation]] = {}
            for g in gens:
                by_target.setdefault(g.target, []).append(g)
            flows = [self._judge_target(cases, name, g) for name, g in by_target.items()]
            results = await asyncio.gather(*flows)
            verdicts = [v for _, vs in results for v in vs]
        else:
            flows = [self._target_flow(cases, name) for name in self._target_names(cases)]
            results = await asyncio.gather(*flows)
            gens = [g for gs, _ in results for g in gs]
            gen_table = Generation.to_table(gens)
            # Parquet encoding and the storage round trips leave the event loop free meanwhile.
            await asyncio.to_thread(self.folder.commit, GENERATIONS, shard.shard_id, gen_table)
            self.rows_generated += len(gens)
            progress.done(GENERATIONS, len(cases))
            verdicts = [v for _, vs in results for v in vs]
        verdict_table = Verdict.to_table(verdicts)
        await asyncio.to_thread(self.folder.commit, VERDICTS, shard.shard_id, verdict_table)
        self.rows_judged += len(verdicts)
        self.summary.add(verdict_table, table.select(SUITE_COLUMNS))
        self.summary.add_generations(gen_table)
        self.processed.add(shard.shard_id)
        progress.done(VERDICTS, len(cases))

    def _target_names(self, cases: list[_Case]) -> list[str]:
        names = []
        if any(c.response is not None for c in cases):
            names.append(GIVEN)
        if any(c.response is None for c in cases):
            names.extend(self.targets)
        return names

    async def _target_flow(
        self, cases: list[_Case], target: str
    ) -> tuple[list[Generation], list[Verdict]]:
        gens = await self._generate(cases, target)
        _, verdicts = await self._judge_target(cases, target, gens)
        return gens, verdicts

    async def _generate(self, cases: list[_Case], target: str) -> list[Generation]:
        if target == GIVEN:
            return [
                Generation(
                    test_id=c.test_id, target=GIVEN, response=c.response, finish_reason="given"
                )
                for c in cases
                if c.response is not None
            ]
        from assay.actors.workers import Prompt

        todo = [Prompt(c.test_id, c.text) for c in cases if c.response is None]
        spec = next(t for t in self.cfg.targets if t.name == target)
        chunks = [todo[i : i + spec.max_batch] for i in range(0, len(todo), spec.max_batch)]
        parts = await asyncio.gather(*(self.targets[target].call("generate", c) for c in chunks))
        return [g for part in parts for g in part]

    async def _judge_target(
        self, cases: list[_Case], target: str, gens: list[Generation]
    ) -> tuple[list[Generation], list[Verdict]]:
        from assay.actors.workers import JudgeTask

        by_id = {c.test_id: c for c in cases}
        tasks = [
            JudgeTask(
                g.test_id, target, by_id[g.test_id].text, g.response, by_id[g.test_id].lang, g.error
            )
            for g in gens
        ]
        flows = []
        for j in self.cfg.judges:
            chunks = [tasks[i : i + j.max_batch] for i in range(0, len(tasks), j.max_batch)]
            flows.extend(self.judges[j.name].call("judge", c) for c in chunks)
        parts = await asyncio.gather(*flows)
        return gens, [v for part in parts for v in part]


async def _run_async(
    cfg: RunConfig, suite: Suite, folder: RunFolder, manifest: RunManifest, todo: list[Shard]
) -> _Runner:
    generated_before = folder.done_shards(GENERATIONS)
    runner = _Runner(cfg, suite, folder, manifest, generated_before)
    need_targets = any(s.shard_id not in generated_before for s in todo)
    t0 = time.perf_counter()
    executor = make_executor(cfg.executor)
    progress: _Progress | None = None
    try:
        await runner.start_pools(executor, need_targets and bool(cfg.targets))
        progress = _Progress(
            cfg.progress,
            folder,
            manifest.plan,
            [*runner.targets.values(), *runner.judges.values()],
        )
        t1 = time.perf_counter()
        runner.startup_seconds = t1 - t0
        gate = asyncio.Semaphore(cfg.max_shards_in_flight)
        failure: list[BaseException] = []

        async def one(shard: Shard) -> None:
            async with gate:
                if failure:
                    return  # stop scheduling new shards after a failure; committed work stays
                try:
                    assert progress is not None
                    await runner.process(shard, progress)
                except BaseException as exc:
                    failure.append(exc)

        await asyncio.gather(*(one(s) for s in todo))
        runner.work_seconds = time.perf_counter() - t1
        if failure:
            raise failure[0]
        return runner
    finally:
        if progress is not None:
            progress.close()
            progress.write()
        await executor.shutdown()


def run(cfg: RunConfig) -> RunResult:
    """Runs (or resumes) the run a config describes; returns what it did."""
    started = time.monotonic()
    suite = resolve_suite(cfg)
    plan = _limit_plan(plan_shards(suite, cfg.shard_size), cfg.suite.limit)
    if plan.total_rows == 0:
        raise ConfigError(f"the suite {suite.url} has no rows")
    run_id = derive_run_id(cfg)
    folder = RunFolder(cfg.output, run_id, cfg.storage_options)
    _, fingerprint = suite.scan() if suite.manifest is None else (None, suite.manifest.fingerprint)
    manifest = folder.init(
        RunManifest(
            run_id=run_id,
            config=cfg.model_dump(mode="json"),
            config_hash=canonical_hash(cfg.result_fields()),
            suite_url=suite.url,
            suite_fingerprint=fingerprint,
            plan=plan,
            stages=[GENERATIONS, VERDICTS],
            versions=software_versions(),
        )
    )
    done = folder.done_shards(VERDICTS)
    todo = [s for s in manifest.plan.shards if s.shard_id not in done]
    result = RunResult(
        run_id=run_id,
        url=folder.url,
        shards_total=len(manifest.plan.shards),
        shards_done_before=len(done),
        shards_run=len(todo),
    )
    runner: _Runner | None = None
    if todo:
        if not cfg.targets:
            _check_all_rows_have_responses(suite, todo)
        folder.update_manifest(status="running", error=None)
        try:
            runner = asyncio.run(_run_async(cfg, suite, folder, manifest, todo))
        except BaseException as exc:
            message = str(exc) if isinstance(exc, AssayError) else f"{type(exc).__name__}: {exc}"
            done_now = len(folder.done_shards(VERDICTS))
            folder.update_manifest(status="failed", error=message[:2000])
            if isinstance(exc, AssayError):
                raise FatalError(
                    f"run {run_id} failed ({done_now}/{result.shards_total} shards done, "
                    f"rerun to resume): {message}"
                ) from exc
            raise
        result.rows_generated = runner.rows_generated
        result.rows_judged = runner.rows_judged
        result.startup_seconds = round(runner.startup_seconds, 3)
        result.work_seconds = round(runner.work_seconds, 3)
    if not todo and folder.read_manifest().status == "completed" and folder.has_summary():
        summary = folder.read_summary()
    else:
        acc = runner.summary if runner is not None else SummaryAccumulator()
        done_now = runner.processed if runner is not None else set()
        generated = folder.done_shards(GENERATIONS)
        for shard in manifest.plan.shards:  # shards finished by earlier executions, one by one
            if shard.shard_id in done_now:
                continue
            acc.add(
                folder.read_stage_part(VERDICTS, shard.shard_id),
                read_shard(suite, shard, columns=SUITE_COLUMNS),
            )
            if shard.shard_id in generated:
                acc.add_generations(folder.read_stage_part(GENERATIONS, shard.shard_id))
        summary = acc.result()
        summary.update(
            {
                "run_id": run_id,
                "suite_fingerprint": manifest.suite_fingerprint,
                "config_hash": manifest.config_hash,
            }
        )
        folder.write_summary(summary)
        folder.update_manifest(status="completed", error=None)
    result.summary = summary
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _check_all_rows_have_responses(suite: Suite, shards: list[Shard]) -> None:
    missing = sum(
        read_shard(suite, s, columns=["response"]).column("response").null_count for s in shards
    )
    if missing:
        raise ConfigError(
            f"{missing:,} suite rows have no response to judge and the config names no targets"
        )
