"""``assay run``: every suite row answered by each target, every answer judged by each judge.

The flow, per shard of the plan written into the manifest before any work starts::

    suite rows -> (each target) GeneratorActor -> commit generations part
               -> (each target x judge) JudgeActor, starting per target as soon as that target's
                  answers for the shard are back -> commit verdicts part

Several shards are in flight at once (``max_shards_in_flight``) so every actor is fed from several
shards; within an actor the engine batches concurrent calls (vLLM continuously). A rerun of the
same config is a resume: shards whose verdicts marker exists are skipped, shards whose generations
marker exists are only judged, and a completed run does no model work and starts no actor.

Several drivers may run one run folder at once (:class:`_Scheduler`): each shard runs under a
lease (:mod:`assay.engine.lease`), a driver skips the shards another live driver holds and waits
for them at the end, and every driver returns only once every shard is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from assay.engine.config import ModelSpec, RunConfig, SuiteSpec
from assay.engine.errors import AssayError, ConfigError, FatalError
from assay.engine.importers import ImportConfig, import_suite
from assay.engine.io import Location
from assay.engine.lease import LeaseInfo, ShardLeases, describe_holders
from assay.engine.metrics import run_header
from assay.engine.records import Generation, Verdict
from assay.engine.runfolder import (
    DONE,
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
from assay.engine.verify import check_suite_risks

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
    options = dict(spec.import_options)
    if cfg.taxonomy is not None:  # risk paths resolve against the run's tree (L3/L4 leaves)
        options.setdefault("taxonomy", cfg.taxonomy)
    ident = spec.model_dump(mode="json", exclude={"limit"})
    if cfg.taxonomy is not None:
        ident["taxonomy"] = cfg.taxonomy
    key = canonical_hash(ident, 12)
    name = Location.parse(spec.url).name.split(".")[0] or "suite"
    out = Location.parse(cfg.output, cfg.storage_options).join("_suites", f"{name}-{key}")
    if not out.join(SUITE_MANIFEST).exists():
        _import_once(
            cfg,
            out,
            ImportConfig(
                format=spec.format,
                source=spec.url,
                output=out.url,
                name=name,
                storage_options=cfg.storage_options,
                overwrite=True,
                **options,
            ),
        )
    return open_suite(out.url, cfg.storage_options)


def _import_once(cfg: RunConfig, out: Location, import_cfg: ImportConfig) -> None:
    """Imports a source suite, one driver at a time (an import replaces what is at ``out``).

    Two drivers starting on a fresh output would otherwise both import, and the second
    import's commit deletes the files the first one is reading. The import runs under a lease
    (``<output>/_suites/_leases/``, the slot named by the suite folder), renewed while it runs;
    a driver that finds it held waits until the suite's manifest appears, or takes the lease
    over once its holder is dead, and imports itself.
    """
    leases = ShardLeases.open(out.parent(), cfg.lease_ttl_s)
    slot = int(canonical_hash(out.name, 8), 16)
    told = False
    while not out.join(SUITE_MANIFEST).exists():
        claim = leases.acquire(slot)
        if not claim.won:
            if not told and claim.holder is not None:
                log.warning(
                    "driver %s is importing the suite into %s; waiting for it",
                    claim.holder.holder.label,
                    out.url,
                )
                told = True
            time.sleep(min(cfg.lease_heartbeat, 1.0))
            continue
        try:
            with _renewing(leases, cfg.lease_heartbeat):
                if not out.join(SUITE_MANIFEST).exists():
                    import_suite(import_cfg)
        finally:
            leases.release(slot, committed=True)


@contextlib.contextmanager
def _renewing(leases: ShardLeases, every_s: float) -> Iterator[None]:
    """Renews ``leases`` from a thread every ``every_s`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(OSError, AssayError):  # the next beat tries again
                leases.renew()

    thread = threading.Thread(target=beat, name="assay-lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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


CASE_COLUMNS = ["test_id", "text", "lang", "response"]


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """One table of the parts (an empty table of ``schema`` when there are none)."""
    parts = [t for t in tables if t.num_rows]
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts).combine_chunks()


def _chunks(table: pa.Table, size: int) -> list[tuple[bytes, int]]:
    """A table cut into payloads of at most ``size`` rows: (IPC bytes, rows)."""
    from assay.actors.workers import encode_payload

    return [
        (encode_payload(table.slice(i, size)), min(size, table.num_rows - i))
        for i in range(0, table.num_rows, size)
    ]


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
        """Shards whose verdicts ``summary`` holds."""
        self.ran: set[int] = set()
        """Shards this driver ran (other drivers may have run the rest)."""

    async def start_pools(self, executor: Executor, need_targets: bool) -> None:
        """Starts every model's pool at once (each loads its model in parallel)."""
        cfg = self.cfg
        kinds: list[tuple[str, ModelSpec]] = (
            [("target", t) for t in cfg.targets] if need_targets else []
        )
        kinds += [("judge", j) for j in cfg.judges]
        pools = await asyncio.gather(
            *(
                executor.pool(kind, spec, cfg.max_retries, cfg.retry_backoff_s)
                for kind, spec in kinds
            )
        )
        for (kind, spec), pool in zip(kinds, pools, strict=True):
            (self.targets if kind == "target" else self.judges)[spec.name] = pool

    async def start_targets(self, executor: Executor) -> None:
        """Starts the targets' pools late (a shard taken over from another driver needs them)."""
        cfg = self.cfg
        pools = await asyncio.gather(
            *(executor.pool("target", t, cfg.max_retries, cfg.retry_backoff_s) for t in cfg.targets)
        )
        for spec, pool in zip(cfg.targets, pools, strict=True):
            self.targets[spec.name] = pool

    async def process(self, shard: Shard, progress: _Progress) -> None:
        cases = read_shard(self.suite, shard, columns=[*CASE_COLUMNS, "risk", "attack", "base_id"])
        if shard.shard_id in self.generated_before:
            gen_table = self.folder.read_stage_part(GENERATIONS, shard.shard_id)
            targets = gen_table.column("target")
            flows = [
                self._judge_target(cases, gen_table.filter(pc.equal(targets, name)))
                for name in targets.unique().to_pylist()
            ]
            verdict_parts = list(await asyncio.gather(*flows))
        else:
            flows = [self._target_flow(cases, name) for name in self._target_names(cases)]
            results = await asyncio.gather(*flows)
            gen_table = _concat([g for g, _ in results], Generation.arrow_schema())
            # Parquet encoding and the storage round trips leave the event loop free meanwhile.
            await asyncio.to_thread(
                self.folder.commit, GENERATIONS, shard.shard_id, gen_table, cases.column("test_id")
            )
            self.rows_generated += gen_table.num_rows
            progress.done(GENERATIONS, cases.num_rows)
            verdict_parts = [v for _, v in results]
        verdict_table = _concat(verdict_parts, Verdict.arrow_schema())
        await asyncio.to_thread(
            self.folder.commit, VERDICTS, shard.shard_id, verdict_table, cases.column("test_id")
        )
        self.rows_judged += verdict_table.num_rows
        self.summary.add(verdict_table, cases.select(SUITE_COLUMNS))
        self.summary.add_generations(gen_table)
        self.processed.add(shard.shard_id)
        progress.done(VERDICTS, cases.num_rows)

    def _target_names(self, cases: pa.Table) -> list[str]:
        names = []
        with_response = cases.num_rows - cases.column("response").null_count
        if with_response:
            names.append(GIVEN)
        if with_response < cases.num_rows:
            names.extend(self.targets)
        return names

    async def _target_flow(self, cases: pa.Table, target: str) -> tuple[pa.Table, pa.Table]:
        gens = await self._generate(cases, target)
        return gens, await self._judge_target(cases, gens)

    async def _generate(self, cases: pa.Table, target: str) -> pa.Table:
        given = pc.is_valid(cases.column("response"))
        if target == GIVEN:
            return _given_generations(cases.filter(given))
        todo = cases.filter(pc.invert(given)).select(["test_id", "text"])
        spec = next(t for t in self.cfg.targets if t.name == target)
        pool = self.targets[target]
        parts = await asyncio.gather(
            *(
                pool.call("generate", payload, rows)
                for payload, rows in _chunks(todo, spec.max_batch)
            )
        )
        return _concat(list(parts), Generation.arrow_schema())

    async def _judge_target(self, cases: pa.Table, gens: pa.Table) -> pa.Table:
        """Verdicts of every judge on one target's generations of a shard."""
        position = pc.index_in(gens.column("test_id"), value_set=cases.column("test_id"))
        if position.null_count:
            stray = gens.column("test_id").filter(pc.is_null(position))[0].as_py()
            raise FatalError(f"a generation answers test {stray!r} that is not in its shard")
        rows = cases.take(position)
        tasks = pa.table(
            {
                "test_id": gens.column("test_id"),
                "target": gens.column("target"),
                "prompt": rows.column("text"),
                "response": gens.column("response"),
                "lang": rows.column("lang"),
                "generation_error": gens.column("error"),
            }
        )
        flows = [
            self.judges[j.name].call("judge", payload, n)
            for j in self.cfg.judges
            for payload, n in _chunks(tasks, j.max_batch)
        ]
        return _concat(list(await asyncio.gather(*flows)), Verdict.arrow_schema())


def _given_generations(rows: pa.Table) -> pa.Table:
    """Generations of the responses that come with the suite (target ``given``)."""
    n = rows.num_rows
    schema = Generation.arrow_schema()
    columns = {
        "test_id": rows.column("test_id"),
        "target": pa.array([GIVEN] * n, pa.string()),
        "params_hash": pa.array([""] * n, pa.string()),
        "response": rows.column("response"),
        "finish_reason": pa.array(["given"] * n, pa.string()),
    }
    return pa.table(
        [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema],
        schema=schema,
    )


def _marker_names(folder: RunFolder, stage: str) -> set[int]:
    """Shards with a marker of ``stage``, from one fresh listing (no marker is read or checked).

    The listing bypasses fsspec's listings cache: another driver's markers are not in it.
    """
    done = folder.loc.join(DONE)
    _forget_cached(done)
    try:
        names = done.fs.ls(done.path, detail=False)
    except FileNotFoundError:
        return set()
    prefix = f"{stage}-"
    out = set()
    for path in names:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            out.add(int(name[len(prefix) :]))
    return out


def _marker_exists(folder: RunFolder, stage: str, shard_id: int) -> bool:
    """Whether a shard's marker exists now (one HEAD; not from a cached listing)."""
    loc = folder.marker(stage, shard_id)
    _forget_cached(loc)
    return bool(loc.exists())


def _forget_cached(loc: Location) -> None:
    invalidate = getattr(loc.fs, "invalidate_cache", None)
    if callable(invalidate):
        invalidate(loc.path)


def _committed_now(folder: RunFolder, stage: str) -> set[int]:
    """The shards of ``stage`` committed now (the full marker check, read fresh)."""
    _forget_cached(folder.loc.join(DONE))
    _forget_cached(folder.loc.join(stage))
    return set(folder.done_shards(stage))


class _Scheduler:
    """Runs a run's shards under shard leases, so several drivers can share the run folder.

    Each shard: take its lease (or skip it: another live driver holds it), check its verdicts
    marker again (another driver may have committed it since this driver listed the markers),
    run it, release the lease. A heartbeat renews the leases of the shards in flight. When every
    shard has been tried, the shards other drivers hold are waited for: each is either committed
    by them or its lease expires and this driver runs it. :meth:`run` returns only when every
    shard of the plan is committed, so only a driver that saw the whole run committed goes on to
    write the summary and ``completed``.
    """

    def __init__(
        self,
        runner: _Runner,
        executor: Executor,
        progress: _Progress,
        leases: ShardLeases,
        shards: list[Shard],
        plan: list[Shard],
    ):
        self.runner = runner
        self.plan = plan
        self.executor = executor
        self.progress = progress
        self.leases = leases
        self.shards = shards
        self.cfg = runner.cfg
        self.folder = runner.folder
        self.gate = asyncio.Semaphore(self.cfg.max_shards_in_flight)
        self.failure: list[BaseException] = []
        self.elsewhere: dict[int, LeaseInfo] = {}
        """Shards skipped because another live driver holds their lease (the latest pass)."""
        self.committed_elsewhere = 0
        self.waited = False
        """Whether the first pass is over (later passes run shards other drivers had)."""
        self._told: set[tuple[str, ...]] = set()
        self._targets_lock = asyncio.Lock()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._pass(self.shards, force=False)
            self._tell()
            await self._wait_for_the_rest()
            if self.failure:
                raise self.failure[0]
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.to_thread(self.leases.release_all)

    async def _pass(self, shards: list[Shard], force: bool) -> None:
        self.elsewhere = {}
        await asyncio.gather(*(self._one(s, force) for s in shards))

    async def _one(self, shard: Shard, force: bool) -> None:
        """One shard under its lease; ``force`` skips the marker re-check (a rejected marker)."""
        async with self.gate:
            if self.failure:
                return  # stop scheduling new shards after a failure; committed work stays
            sid = shard.shard_id
            try:
                claim = await asyncio.to_thread(self.leases.acquire, sid)
            except BaseException as exc:
                self.failure.append(exc)
                return
            if not claim.won:
                if claim.holder is not None:
                    self.elsewhere[sid] = claim.holder
                return
            committed = False
            try:
                if not force and await asyncio.to_thread(
                    _marker_exists, self.folder, VERDICTS, sid
                ):
                    committed = True  # another driver committed it after this one listed
                    self.committed_elsewhere += 1
                    return
                # generations another driver committed before it died: judge them, no redo
                await self._prepare(shard, recheck=claim.took_over is not None or self.waited)
                if sid in self.runner.processed:
                    # redone after its commit was overwritten by another driver: the summary
                    # must not count it twice, so the run's end reads every part instead
                    self.runner.summary = SummaryAccumulator()
                    self.runner.processed.clear()
                await self.runner.process(shard, self.progress)
                self.runner.ran.add(sid)
                committed = True
            except BaseException as exc:
                self.failure.append(exc)
            finally:
                try:
                    await asyncio.to_thread(self.leases.release, sid, committed)
                except (OSError, AssayError) as exc:  # it expires by itself
                    log.warning("could not release the lease of shard %d: %s", sid, exc)

    async def _prepare(self, shard: Shard, recheck: bool) -> None:
        """With ``recheck``, notices generations another driver committed (one HEAD); starts
        the targets if the shard needs them and they are not running."""
        runner = self.runner
        sid = shard.shard_id
        if (
            recheck
            and sid not in runner.generated_before
            and await asyncio.to_thread(_marker_exists, self.folder, GENERATIONS, sid)
        ):
            runner.generated_before.add(sid)
        if sid not in runner.generated_before and self.cfg.targets and not runner.targets:
            async with self._targets_lock:
                if not runner.targets:  # every shard this driver had was generated before
                    await runner.start_targets(self.executor)
                    self.progress.pools.extend(runner.targets.values())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lease_heartbeat)
            try:
                await asyncio.to_thread(self.leases.renew)
            except (OSError, AssayError) as exc:  # the next beat tries again
                log.warning("renewing shard leases failed: %s", exc)

    async def _wait_for_the_rest(self) -> None:
        """Until every shard is committed: waits for other drivers, takes over expired leases."""
        planned = {s.shard_id: s for s in self.plan}
        done_before = planned.keys() - {s.shard_id for s in self.shards}
        self.waited = True
        while not self.failure:
            names = await asyncio.to_thread(_marker_names, self.folder, VERDICTS)
            left = [s for sid, s in planned.items() if sid not in names]
            force = False
            if not left:
                if planned.keys() <= self.runner.ran | done_before:
                    return  # all checked at the start or committed by this driver itself
                # markers of other drivers' commits: the full check before calling it done
                done = await asyncio.to_thread(_committed_now, self.folder, VERDICTS)
                left = [s for sid, s in planned.items() if sid not in done]
                if not left:
                    return
                force = True  # markers there but rejected: redo those shards
            holders = await asyncio.to_thread(self.leases.holders)
            now = time.time()
            me = self.leases.driver.token
            free = [
                s
                for s in left
                if s.shard_id not in holders
                or not self.leases.live(holders[s.shard_id], now)
                or holders[s.shard_id].holder.token == me
            ]
            if free:
                await self._pass(free, force)
                continue
            self.elsewhere = {s.shard_id: holders[s.shard_id] for s in left}
            self._tell()
            await asyncio.sleep(self.cfg.lease_heartbeat)

    def _tell(self) -> None:
        """Logs, once per change, which shards other drivers are running."""
        if not self.elsewhere:
            return
        lines = describe_holders(self.elsewhere, time.time())
        key = tuple(sorted(line.split(" (lease age")[0] for line in lines))
        if key in self._told:
            return
        self._told.add(key)
        for line in lines:
            log.warning("%s; this driver takes the rest", line)


async def _run_async(
    cfg: RunConfig,
    suite: Suite,
    folder: RunFolder,
    manifest: RunManifest,
    todo: list[Shard],
    leases: ShardLeases,
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
        await _Scheduler(runner, executor, progress, leases, todo, manifest.plan.shards).run()
        runner.work_seconds = time.perf_counter() - t1
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
    if cfg.taxonomy is not None:  # results are reported against it: it must hold every risk
        check_suite_risks(suite, cfg.taxonomy, cfg.storage_options)
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
    leases = ShardLeases.open(folder.loc, cfg.lease_ttl_s)
    others = _other_drivers(folder, leases)
    if others:
        # Another driver is running this run now: it pruned when it started, and a prune here
        # could race its commits (a verdicts marker seen before its generations marker).
        for line in others:
            log.warning("another driver is running run %s: %s", run_id, line)
    else:
        # Only shards committed under this plan, with their parts in place, count as done;
        # markers of another plan (a lost manifest, another shard size) or over missing,
        # truncated or replaced parts are removed so those shards are redone, never mixed in.
        for bad in folder.prune():
            log.warning("not counted as done, removed: %s: %s", bad.url, bad.reason)
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
            runner = asyncio.run(_run_async(cfg, suite, folder, manifest, todo, leases))
        except BaseException as exc:
            message = str(exc) if isinstance(exc, AssayError) else f"{type(exc).__name__}: {exc}"
            done_now = len(_committed_now(folder, VERDICTS))
            if done_now < result.shards_total:  # else another driver finished the run meanwhile
                folder.update_manifest(status="failed", error=message[:2000])
            if isinstance(exc, AssayError):
                raise FatalError(
                    f"run {run_id} failed ({done_now}/{result.shards_total} shards done, "
                    f"rerun to resume): {message}"
                ) from exc
            raise
        result.shards_run = len(runner.ran)  # other drivers may have run the rest
        result.rows_generated = runner.rows_generated
        result.rows_judged = runner.rows_judged
        result.startup_seconds = round(runner.startup_seconds, 3)
        result.work_seconds = round(runner.work_seconds, 3)
    current = folder.current_summary() if not todo else None
    if current is not None and folder.read_manifest().status == "completed":
        summary = current  # it summarises exactly the shards committed now
    else:
        stamp = folder.summary_stamp()  # what the parts read below are, before reading them
        acc = runner.summary if runner is not None else SummaryAccumulator()
        processed_now = runner.processed if runner is not None else set()
        generated = folder.done_shards(GENERATIONS)
        for shard in manifest.plan.shards:  # shards finished by earlier executions, one by one
            if shard.shard_id in processed_now:
                continue
            acc.add(
                folder.read_stage_part(VERDICTS, shard.shard_id),
                read_shard(suite, shard, columns=SUITE_COLUMNS),
            )
            if shard.shard_id in generated:
                acc.add_generations(folder.read_stage_part(GENERATIONS, shard.shard_id))
        summary = acc.result()
        summary.update(run_header(manifest))
        summary["integrity"] = stamp
        folder.write_summary(summary)
        folder.update_manifest(status="completed", error=None)
        leases.clear()  # every shard is committed: no lease left means anything
    result.summary = summary
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _other_drivers(folder: RunFolder, leases: ShardLeases) -> list[str]:
    """One line per other driver holding live leases on uncommitted shards now (none: empty)."""
    now = time.time()
    committed = _marker_names(folder, VERDICTS)  # killed between its commit and its release
    live = {
        sid: info
        for sid, info in leases.holders().items()
        if sid not in committed
        and info.holder.token != leases.driver.token
        and leases.live(info, now)
    }
    return list(describe_holders(live, now))


def _check_all_rows_have_responses(suite: Suite, shards: list[Shard]) -> None:
    missing = sum(
        read_shard(suite, s, columns=["response"]).column("response").null_count for s in shards
    )
    if missing:
        raise ConfigError(
            f"{missing:,} suite rows have no response to judge and the config names no targets"
        )
