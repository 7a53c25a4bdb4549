"""Placement on a real local Ray with logical GPUs: tensor-parallel replicas get placement groups.

Ray schedules logical resources, so ``ray.init(num_gpus=4)`` on a machine without a GPU gives a
cluster whose scheduler hands out 4 GPUs; the fake backend takes ``tensor_parallel_size`` like
vLLM, and the executor must reserve one placement group of that many one-GPU bundles per replica
(packed on one node), start the engine actor inside it, free it on close, and fail with a clear
error when the cluster cannot hold the groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from assay.actors.workers import encode_payload
from assay.cluster import localray
from assay.cluster.executors import RayExecutor
from assay.cluster.placement import placement_for
from assay.engine.config import ExecutorSpec, TargetSpec
from assay.engine.errors import ConfigError, FatalError

pytestmark = pytest.mark.slow


def target(name: str, tp: int, replicas: int, num_gpus: float = 0) -> TargetSpec:
    return TargetSpec.model_validate(
        {
            "name": name,
            "backend": "fake",
            "model": "fake",
            "options": {"tensor_parallel_size": tp},
            "resources": {"replicas": replicas, "num_cpus": 0.5, "num_gpus": num_gpus},
        }
    )


def test_placement_rules() -> None:
    single = placement_for(target("a", 1, 1, num_gpus=1), max_concurrency=8)
    assert single.bundles is None and single.actor_options["num_gpus"] == 1
    tp = placement_for(target("b", 4, 1), max_concurrency=8)
    assert tp.bundles == [{"GPU": 1.0, "CPU": 0.5}, {"GPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}]
    assert tp.actor_options["num_gpus"] == 0 and tp.strategy == "STRICT_PACK"
    assert placement_for(target("c", 2, 1, num_gpus=2), 8).bundles is not None
    with pytest.raises(ConfigError, match="tensor_parallel_size 2 takes 2 whole GPUs"):
        placement_for(target("d", 2, 1, num_gpus=1), 8)


@pytest.fixture
def ray_with_gpus() -> Iterator[Any]:
    import ray

    # assay's private local Ray (loopback, token auth on), with 4 logical GPUs
    localray.start(num_cpus=8, num_gpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        localray.shutdown()


def test_tensor_parallel_replicas_get_placement_groups(ray_with_gpus: Any) -> None:
    ray = ray_with_gpus
    executor = RayExecutor(ExecutorSpec(kind="ray", placement_timeout_s=5))
    spec = target("tp2", tp=2, replicas=2)

    async def scenario() -> None:
        pool = await executor.pool("target", spec, max_retries=0, backoff_s=0.01)
        groups = pool.groups  # type: ignore[attr-defined]
        assert len(groups) == 2
        for g in groups:
            info = ray.util.placement_group_table(g)
            assert info["state"] == "CREATED" and info["strategy"] == "STRICT_PACK"
            assert [b.get("GPU") for b in info["bundles"].values()] == [1.0, 1.0]
        # All four logical GPUs are held by the two groups.
        assert ray.available_resources().get("GPU", 0) == 0
        where = [await a.where.remote() for a in pool.replicas]  # type: ignore[attr-defined]
        assert sorted(w["placement_group"] for w in where) == sorted(g.id.hex() for g in groups)
        prompts = pa.table({"test_id": ["t1", "t2"], "text": ["hello", "world"]})
        out = await pool.call("generate", encode_payload(prompts), 2)
        assert out.column("test_id").to_pylist() == ["t1", "t2"]
        # A third tensor-parallel model cannot fit: a clear error, and nothing left reserved.
        with pytest.raises(FatalError, match="placement group.*not available after 5 s"):
            await executor.pool("target", target("tp4", tp=4, replicas=1), 0, 0.01)
        await executor.shutdown()
        # Removing a group is asynchronous in Ray: wait (bounded) for the GPUs to come back.
        for _ in range(100):
            if ray.available_resources().get("GPU", 0) == 4:
                break
            await asyncio.sleep(0.1)
        assert ray.available_resources().get("GPU", 0) == 4

    asyncio.run(scenario())
