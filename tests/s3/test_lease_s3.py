"""Shard leases on the real S3 server (radosgw): conditional writes, races, two drivers.

Measured here first (and checked by these tests): radosgw honours ``If-None-Match: *`` and
``If-Match`` on PutObject (412 otherwise), so leases use them; ``If-Match`` compares only the
bare ETag there, which the lease store finds out and remembers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.cluster.run import VERDICTS, derive_run_id
from assay.engine.config import load_config
from assay.engine.importers import ImportConfig, import_suite
from assay.engine.io import Location
from assay.engine.lease import LEASES, ShardLeases, _S3Store
from assay.engine.runfolder import RunFolder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
STARTER = ROOT / "examples" / "starter_suite.jsonl"
ASSAY = str(Path(sys.executable).parent / "assay")


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def _folder(s3: Any) -> Location:
    return Location.parse(s3.url("leases", uuid.uuid4().hex[:10]), s3.storage_options)


def test_leases_on_s3_use_conditional_writes(s3: Any) -> None:
    folder = _folder(s3)
    clock = Clock()
    a = ShardLeases.open(folder, 10, clock=clock, mode="exclusive")
    b = ShardLeases.open(folder, 10, clock=clock, mode="exclusive")
    assert isinstance(a.store, _S3Store)  # the server decides races, no read-back protocol

    assert a.acquire(5).won
    refused = b.acquire(5)
    assert not refused.won and refused.holder is not None
    assert refused.holder.holder.token == a.driver.token

    clock.now += 4
    assert a.renew() == []  # If-Match with the lease's own ETag (bare, on radosgw)
    assert b.holders()[5].seq == 1
    clock.now += 8  # 4 s since the renewal: still live
    assert not b.acquire(5).won

    clock.now += 3  # 11 s since the renewal: expired
    claim = b.acquire(5)
    assert claim.won and claim.took_over is not None
    assert a.renew() == [5]  # the old holder learns it lost the lease
    a.release(5, committed=False)  # and does not delete the new holder's lease
    assert b.holders()[5].holder.token == b.driver.token
    b.release(5, committed=True)
    assert b.holders() == {}
    assert s3.s3fs().find(folder.join(LEASES).path) == []  # released leases are deleted


@pytest.mark.parametrize("expired", [False, True])
def test_exactly_one_of_many_racing_drivers_wins_on_s3(s3: Any, expired: bool) -> None:
    folder = _folder(s3)
    clock = Clock()
    if expired:
        ShardLeases.open(folder, 5, clock=clock).acquire(0)
        clock.now += 6
    drivers = [ShardLeases.open(folder, 5, clock=clock, mode="exclusive") for _ in range(12)]
    start = threading.Barrier(len(drivers))
    wins = [False] * len(drivers)

    def race(i: int) -> None:
        start.wait()
        wins[i] = drivers[i].acquire(0).won

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(drivers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == 1
    winner = drivers[wins.index(True)]
    assert ShardLeases.open(folder, 5).holders()[0].holder.token == winner.driver.token


def test_two_drivers_share_one_run_on_s3(s3: Any, tmp_path: Path) -> None:
    suite = s3.url("suites", f"lease-{uuid.uuid4().hex[:6]}")
    import_suite(
        ImportConfig(
            format="jsonl",
            source=str(STARTER),
            output=suite,
            storage_options=s3.storage_options,
            overwrite=True,
        )
    )
    data: dict[str, Any] = {
        "suite": {"url": suite, "format": "suite", "limit": 96},
        "output": s3.url("runs", uuid.uuid4().hex[:8]),
        "shard_size": 8,
        "max_shards_in_flight": 2,
        "progress": False,
        "retry_backoff_s": 0.0,
        "executor": {"kind": "local"},
        "storage_options": s3.storage_options,
        "lease_ttl_s": 60.0,
        "lease_heartbeat_s": 0.5,
        "targets": [
            {
                "name": "t",
                "backend": "fake",
                "model": "echo",
                "max_batch": 8,
                "options": {"delay_ms": 300},
            }
        ],
        "judges": [
            {
                "name": "lg",
                "format": "llama-guard-3",
                "backend": "fake",
                "model": "lg",
                "max_batch": 8,
                "options": {"replies": [["", "safe"]]},
            }
        ],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(str(path))
    procs = [
        subprocess.Popen(
            [ASSAY, "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ran = []
    for out, _ in outs:
        match = re.search(r"(\d+) shard\(s\) run", out)
        ran.append(int(match.group(1)) if match else 0)
    assert all(n > 0 for n in ran), f"one driver did no work: {ran}"
    assert sum(ran) == 12, f"shards run twice: {ran}"

    folder = RunFolder(cfg.output, derive_run_id(cfg), cfg.storage_options)
    table = folder.read_stage(VERDICTS)
    keys = list(zip(*(table[c].to_pylist() for c in ("test_id", "target", "judge")), strict=True))
    assert len(keys) == len(set(keys)) == 96
    assert folder.read_manifest().status == "completed"
