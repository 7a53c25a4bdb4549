"""Placement: what each replica of a model asks of the Ray cluster.

- A model on one GPU (or a fraction of one) or on CPUs is one actor with ``num_gpus`` /
  ``num_cpus`` (fractions allowed) and the spec's custom resources.
- A model split over several GPUs by tensor parallelism (backend option
  ``tensor_parallel_size: N``) gets, per replica, a placement group of N bundles of one GPU each,
  packed on one node (``STRICT_PACK``: tensor-parallel all-reduces need NVLink or PCIe, not the
  network). The engine actor sits in bundle 0 with the replica's CPUs and no GPU of its own;
  vLLM, started inside the group, places its N GPU workers on the group's bundles (its Ray
  executor uses the current placement group, which the actor passes on to its children).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assay.engine.config import ModelSpec
from assay.engine.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """How one replica of a model is placed."""

    tensor_parallel_size: int
    """GPUs the model is split over (1: no tensor parallelism)."""
    actor_options: dict[str, Any] = field(default_factory=dict)
    """``ray.remote(...).options`` of the engine actor (without the scheduling strategy)."""
    bundles: list[dict[str, float]] | None = None
    """Bundles of the replica's placement group; None: no placement group."""
    strategy: str = "STRICT_PACK"
    """Placement group strategy."""


def tensor_parallel_size(spec: ModelSpec) -> int:
    """The tensor-parallel degree a model spec asks for (its backend option, default 1)."""
    value = spec.options.get("tensor_parallel_size", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{spec.name}: tensor_parallel_size must be an integer >= 1: {value!r}")
    return value


def placement_for(spec: ModelSpec, max_concurrency: int) -> Placement:
    """The placement of one replica of ``spec``.

    Raises:
        ConfigError: ``num_gpus`` contradicts ``tensor_parallel_size`` (with tensor parallelism,
            a replica takes exactly ``tensor_parallel_size`` whole GPUs; 0 means that many).
    """
    res = spec.resources
    tp = tensor_parallel_size(spec)
    custom = dict(res.custom)
    if tp == 1:
        return Placement(
            tensor_parallel_size=tp,
            actor_options={
                "num_cpus": res.num_cpus,
                "num_gpus": res.num_gpus,
                "resources": custom or None,
                "max_concurrency": max_concurrency,
            },
        )
    if res.num_gpus not in (0, tp):
        raise ConfigError(
            f"{spec.name}: tensor_parallel_size {tp} takes {tp} whole GPUs per replica; "
            f"resources.num_gpus is {res.num_gpus} (set it to {tp} or leave it 0)"
        )
    first: dict[str, float] = {"GPU": 1.0, **custom}
    if res.num_cpus:
        first["CPU"] = res.num_cpus
    bundles = [first] + [{"GPU": 1.0} for _ in range(tp - 1)]
    return Placement(
        tensor_parallel_size=tp,
        actor_options={
            "num_cpus": res.num_cpus,
            "num_gpus": 0,
            "resources": custom or None,
            "max_concurrency": max_concurrency,
        },
        bundles=bundles,
    )


__all__ = ["Placement", "placement_for", "tensor_parallel_size"]
