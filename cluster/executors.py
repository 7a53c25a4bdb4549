"""Executors: pools of model actors, on Ray or in-process, behind one small interface.

A pool holds the replicas of one model (targets' ``GeneratorActor``s, judges' ``JudgeActor``s)
and sends each call to the replica with the fewest calls in flight. ``RayExecutor`` places actors
with the resources of the model's spec (fractional CPUs for CPU models, GPUs for GPU models, a
placement group of GPUs per replica for tensor-parallel models; see :mod:`.placement`) on the
local Ray or a cluster; ``LocalExecutor`` builds the same classes in this process (tests, and
single-machine runs without Ray).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from assay.engine.config import ExecutorSpec, JudgeSpec, ModelSpec, TargetSpec
from assay.engine.errors import FatalError

from . import localray
from .placement import placement_for

log = logging.getLogger(__name__)


_ACTOR_ENV = {
    # Model loading progress bars and advisory warnings from every actor drown the driver's log.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


class Pool(Protocol):
    """Replicas of one model."""

    name: str
    rows_by_node: Counter[str]

    async def call(self, method: str, payload: Any, rows: int) -> Any:
        """Calls ``method(payload)`` (a payload of ``rows`` rows) on the least-busy replica."""
        ...

    async def close(self) -> None:
        """Releases the replicas."""
        ...


class Executor(Protocol):
    """Creates pools and shuts down."""

    async def pool(self, kind: str, spec: ModelSpec, max_retries: int, backoff_s: float) -> Pool:
        """A ready pool for a target (kind 'target') or a judge (kind 'judge')."""
        ...

    async def shutdown(self) -> None:
        """Releases everything."""
        ...


def _actor_class(kind: str) -> type:
    from assay.actors.workers import GeneratorActor, JudgeActor

    return GeneratorActor if kind == "target" else JudgeActor


class _Replicas:
    """Replicas of one model; each call goes to the replica with the fewest calls in flight."""

    def __init__(self, name: str, replicas: list[Any], nodes: list[str]):
        self.name = name
        self.replicas = replicas
        self.nodes = nodes
        self.in_flight = [0] * len(replicas)
        self.rows_by_node: Counter[str] = Counter()

    async def call(self, method: str, payload: Any, rows: int) -> Any:
        """Calls ``method(payload)`` (a payload of ``rows`` rows) on the least-busy replica."""
        i = min(range(len(self.replicas)), key=self.in_flight.__getitem__)
        self.in_flight[i] += 1
        try:
            result = await self._invoke(i, method, payload)
        finally:
            self.in_flight[i] -= 1
        self.rows_by_node[self.nodes[i]] += rows
        return result

    async def _invoke(self, i: int, method: str, payload: Any) -> Any:
        raise NotImplementedError


class LocalPool(_Replicas):
    """Replicas built in this process."""

    async def _invoke(self, i: int, method: str, payload: Any) -> Any:
        return await getattr(self.replicas[i], method)(payload)

    async def close(self) -> None:
        """Closes every replica."""
        for r in self.replicas:
            await r.close()


class LocalExecutor:
    """Builds actors in this process."""

    def __init__(self) -> None:
        """No state but the pools made."""
        self.pools: list[Pool] = []

    async def pool(self, kind: str, spec: ModelSpec, max_retries: int, backoff_s: float) -> Pool:
        """Builds ``spec.resources.replicas`` actors here (a remote judge: a client)."""
        if kind == "judge" and spec.backend == "remote":
            remote = await _remote_pool(spec)
            self.pools.append(remote)
            return remote
        cls = _actor_class(kind)
        replicas = [cls(spec, max_retries, backoff_s) for _ in range(spec.resources.replicas)]
        pool = LocalPool(spec.name, replicas, ["local"] * len(replicas))
        self.pools.append(pool)
        return pool

    async def shutdown(self) -> None:
        """Closes every pool."""
        for p in self.pools:
            await p.close()
        self.pools.clear()


class RayPool(_Replicas):
    """Replicas as Ray actors; a replica whose process dies is replaced and the call retried.

    Calls are idempotent (a batch of prompts in, records out; nothing is written by the actor),
    so a call lost with its actor is simply sent again to the new one.
    """

    def __init__(
        self,
        name: str,
        replicas: list[Any],
        nodes: list[str],
        spawn: Callable[[int], Any],
        max_restarts: int,
        groups: list[Any] | None = None,
    ):
        """``spawn(i)`` creates a new replica for slot ``i`` (not yet ready), in the slot's
        placement group when the model has ``groups`` (one per replica)."""
        super().__init__(name, replicas, nodes)
        self._spawn = spawn
        self.groups = groups or []
        self.max_restarts = max_restarts
        self.restarts = 0
        self._lock = asyncio.Lock()

    async def _invoke(self, i: int, method: str, payload: Any) -> Any:
        from ray.exceptions import RayActorError

        while True:
            handle = self.replicas[i]
            try:
                return await getattr(handle, method).remote(payload)
            except RayActorError as exc:
                await self._replace(i, handle, exc)

    async def _replace(self, i: int, dead: Any, exc: BaseException) -> None:
        import ray

        async with self._lock:
            if self.replicas[i] is not dead:
                return  # another call already replaced it
            if self.restarts >= self.max_restarts:
                raise FatalError(
                    f"{self.name}: a replica died and the restart budget ({self.max_restarts}) "
                    f"is spent: {_root_cause(exc)}"
                ) from exc
            self.restarts += 1
            log.warning(
                "%s: replica %d died (%s); starting a new one (restart %d of %d)",
                self.name,
                i,
                type(exc).__name__,
                self.restarts,
                self.max_restarts,
            )
            try:
                ray.kill(dead)
            except Exception as kill_exc:  # already gone
                log.debug("kill %s: %s", self.name, kill_exc)
            new = self._spawn(i)
            self.nodes[i] = await new.ready.remote()
            self.replicas[i] = new

    async def close(self) -> None:
        """Closes the backends (so engines shut down cleanly), then kills the actors."""
        import ray

        async def close_one(a: Any) -> None:
            try:
                await a.close.remote()
            except Exception as exc:  # an actor already dead has nothing to close
                log.debug("closing %s: %s", self.name, exc)
            ray.kill(a)

        await asyncio.gather(*(close_one(a) for a in self.replicas))
        if self.groups:
            from ray.util.placement_group import remove_placement_group

            for g in self.groups:
                remove_placement_group(g)


class RayExecutor:
    """Places actors on a Ray cluster (started locally when no address is given)."""

    def __init__(self, spec: ExecutorSpec):
        """Starts or joins Ray."""
        import ray

        self.started = False
        if not ray.is_initialized():
            # no address: a private Ray on loopback with its own token (see .localray)
            localray.init(
                spec.address,
                runtime_env={"env_vars": dict(_ACTOR_ENV)},
                num_cpus=spec.num_cpus or (8 if spec.address is None else None),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
                configure_logging=False,
            )
            self.started = True
        self.max_actor_restarts = spec.max_actor_restarts
        self.placement_timeout_s = spec.placement_timeout_s
        self.pools: list[Pool] = []

    async def pool(self, kind: str, spec: ModelSpec, max_retries: int, backoff_s: float) -> Pool:
        """Creates the replicas (each in its placement group when it needs one) and waits until
        each has loaded its model (a remote judge: a client of its service)."""
        import ray

        if kind == "judge" and spec.backend == "remote":
            remote = await _remote_pool(spec)
            self.pools.append(remote)
            return remote
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cls: Any = ray.remote(_actor_class(kind))  # an ActorClass; its .options is untyped
        placement = placement_for(spec, max_concurrency=max(4, spec.max_in_flight))
        groups: list[Any] = []
        if placement.bundles is not None:
            groups = [
                placement_group(placement.bundles, strategy=placement.strategy)
                for _ in range(spec.resources.replicas)
            ]
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(g.ready() for g in groups)), self.placement_timeout_s
                )
            except TimeoutError as exc:
                for g in groups:
                    remove_placement_group(g)
                raise FatalError(
                    f"{kind} {spec.name!r}: {spec.resources.replicas} placement group(s) of "
                    f"{placement.bundles} ({placement.strategy}) not available after "
                    f"{self.placement_timeout_s:.0f} s; cluster resources: "
                    f"{ray.cluster_resources()}"  # type: ignore[no-untyped-call]  # ray: unannotated
                ) from exc

        def spawn(i: int) -> Any:
            options = dict(placement.actor_options)
            if groups:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=groups[i],
                    placement_group_bundle_index=0,
                    placement_group_capture_child_tasks=True,
                )
            return cls.options(**options).remote(spec, max_retries, backoff_s)

        actors = [spawn(i) for i in range(spec.resources.replicas)]
        try:
            nodes = [await a.ready.remote() for a in actors]
        except Exception as exc:
            for a in actors:
                ray.kill(a)
            for g in groups:
                remove_placement_group(g)
            raise FatalError(
                f"{kind} {spec.name!r} ({spec.model}) failed to start: {_root_cause(exc)}"
            ) from exc
        pool = RayPool(spec.name, actors, nodes, spawn, self.max_actor_restarts, groups)
        self.pools.append(pool)
        return pool

    async def shutdown(self) -> None:
        """Closes the pools, and stops Ray if this executor started it."""
        await asyncio.gather(*(p.close() for p in self.pools))
        self.pools.clear()
        if self.started:
            localray.shutdown()


async def _remote_pool(spec: ModelSpec) -> Pool:
    """The pool of a judge with ``backend: remote`` (a service started by ``assay serve``),
    checked once so a wrong URL, token or judge name fails the run at start."""
    from .remote import RemoteJudgePool

    if not isinstance(spec, JudgeSpec):
        raise FatalError(f"{spec.name}: backend 'remote' serves judges only")
    pool = RemoteJudgePool(spec)
    try:
        await pool.check()
    except BaseException:
        await pool.close()
        raise
    return pool


def _root_cause(exc: BaseException) -> str:
    """The innermost meaningful message of a Ray error chain."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    useful = [ln for ln in text if "FatalError" in ln or "Error:" in ln]
    return (useful[-1] if useful else (text[-1] if text else type(cause).__name__))[:500]


def make_executor(spec: ExecutorSpec) -> Executor:
    """The executor a run config asks for."""
    if spec.kind == "local":
        return LocalExecutor()
    return RayExecutor(spec)


__all__ = ["JudgeSpec", "LocalExecutor", "Pool", "RayExecutor", "TargetSpec", "make_executor"]
