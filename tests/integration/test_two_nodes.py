"""A run on a real two-node Ray cluster on this machine: replicas pinned by custom resources.

``ray start --head`` (resource ``node_a``) plus a second ``ray start --address`` (resource
``node_b``) make two raylets, i.e. two Ray nodes with their own ids. The target ``t-a`` and the
judge need ``node_a``, the target ``t-b`` needs ``node_b``, so both nodes must serve rows, and the
manifest's ``workers`` shows exactly how many each served.

Teardown kills the processes of the sessions this test started (every Ray process started by
``ray start`` keeps its session id), not ``ray stop --force``: that kills every Ray process of the
machine, including clusters other tests or people run at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from assay.cluster.localray import TOKEN_FILE, new_token_dir
from assay.cluster.run import GENERATIONS, VERDICTS, run
from assay.engine.config import RunConfig
from assay.engine.runfolder import RunFolder

pytestmark = pytest.mark.slow

STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
ROWS = 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:  # gone meanwhile, or not ours to see
                pass
    return pids


@dataclass
class LocalRay:
    """Ray nodes started by ``ray start`` in sessions of their own; ``stop()`` kills just those."""

    temp_dir: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    sessions: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str]) -> None:
        # Ports of every per-node service are chosen here: two raylets on one machine (and other
        # clusters running at the same time) must not fight over Ray's default ports.
        # (Ray turns --node-ip-address=127.0.0.1 into the machine's address anyway.)
        common = [
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        proc = subprocess.Popen(
            ["ray", "start", *args, *common],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.sessions.append(proc.pid)
        out, _ = proc.communicate(timeout=90)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out[-3000:]}")

    def start_head(self, num_cpus: int, resources: dict[str, float], *extra: str) -> None:
        self._start(
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}",
                f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}",
                *extra,
            ]
        )

    def add_node(self, num_cpus: int, resources: dict[str, float]) -> None:
        self._start(
            [
                f"--address={self.address}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}",
            ]
        )

    def stop(self, timeout: float = 15.0) -> list[int]:
        """Kills every process of the started sessions; returns those still alive at the end."""
        deadline = time.monotonic() + timeout
        left: list[int] = []
        while time.monotonic() < deadline:
            left = [pid for sid in self.sessions for pid in _session_members(sid)]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        return left


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRay]:
    # Token auth on with this cluster's own token: both `ray start`s and this process's drivers
    # (the run's executor joins with the cluster's auth as configured here) read the file.
    token_dir = new_token_dir()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_dir / TOKEN_FILE))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Unix socket paths are bounded
    cluster = LocalRay(temp_dir, dict(os.environ))
    try:
        cluster.start_head(4, {"node_a": 8}, "--include-dashboard=false")
        cluster.add_node(4, {"node_b": 8})
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        left = cluster.stop()
        subprocess.run(["rm", "-rf", temp_dir, str(token_dir)], check=False, timeout=60)
        assert not left, f"Ray processes still alive after teardown: {left}"


def _config(tmp_path: Path, address: str) -> RunConfig:
    def fake(name: str, node: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "backend": "fake",
            "model": name,
            "max_batch": 4,
            "resources": {"replicas": 2, "num_cpus": 0.5, "custom": {node: 1}},
            **extra,
        }

    return RunConfig.model_validate(
        {
            "suite": {"url": str(STARTER), "format": "jsonl", "limit": ROWS},
            "output": str(tmp_path / "runs"),
            "shard_size": 8,
            "progress": False,
            "retry_backoff_s": 0.0,
            "executor": {"kind": "ray", "address": address},
            "targets": [fake("t-a", "node_a"), fake("t-b", "node_b")],
            "judges": [
                fake(
                    "lg",
                    "node_a",
                    format="llama-guard-3",
                    options={"replies": [["", "safe"]]},
                )
            ],
        }
    )


def test_replicas_pinned_by_custom_resources_serve_rows_on_both_nodes(
    tmp_path: Path, two_nodes: LocalRay
) -> None:
    import ray

    started = time.monotonic()
    result = run(_config(tmp_path, two_nodes.address))
    run_seconds = time.monotonic() - started

    folder = Path(result.url)
    gens = ds.dataset(folder / GENERATIONS, format="parquet").to_table().to_pylist()
    verdicts = ds.dataset(folder / VERDICTS, format="parquet").to_table().to_pylist()
    assert len(gens) == ROWS * 2
    assert len({(g["test_id"], g["target"]) for g in gens}) == ROWS * 2
    assert len(verdicts) == ROWS * 2
    assert len({(v["test_id"], v["target"], v["judge"]) for v in verdicts}) == ROWS * 2
    assert {v["label"] for v in verdicts} == {"safe"}

    manifest = RunFolder(str(tmp_path / "runs"), result.run_id).read_manifest()
    assert manifest.status == "completed"
    ray.init(address=two_nodes.address, logging_level="WARNING")
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    by_resource = {
        key: n["NodeID"] for n in nodes for key in ("node_a", "node_b") if key in n["Resources"]
    }
    assert len(nodes) == 2 and len(set(by_resource.values())) == 2, nodes
    # node_a served t-a's answers and every verdict; node_b served t-b's answers
    assert manifest.workers == {by_resource["node_a"]: ROWS + ROWS * 2, by_resource["node_b"]: ROWS}
    print(
        f"two-node run: {run_seconds:.1f} s (startup {result.startup_seconds} s, "
        f"work {result.work_seconds} s), rows per node {manifest.workers}"
    )


def test_a_process_that_ran_a_private_ray_then_joins_a_token_cluster(
    two_nodes: LocalRay,
) -> None:
    """Ray's core caches the auth mode it read first: after a private local Ray (token mode,
    then put back to the environment's settings), joining a token cluster must read the
    cluster's settings afresh. This failed with ``Failed to connect to Ray cluster`` in CI, where
    an earlier test of the same process had run a local Ray."""
    import ray

    from assay.cluster import localray

    os.environ.pop("RAY_AUTH_MODE")  # the private Ray starts from a user who set nothing
    localray.start(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    localray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "token"  # this cluster's settings (the fixture's token file)
    localray.join(two_nodes.address, logging_level="WARNING")
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    finally:
        ray.shutdown()
