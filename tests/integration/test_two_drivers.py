"""Two ``assay run`` drivers on one output: they share the shards through shard leases.

Real processes of the console script, the fake backend slowed down so that the drivers overlap,
small shards. Every (test, target, judge) must land exactly once, each driver must have done
part of the work, and a driver SIGKILLed while holding leases must not stop a second one from
finishing the run once the leases' TTL has passed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml

from assay.cluster.run import VERDICTS, derive_run_id, run
from assay.engine.config import RunConfig, load_config
from assay.engine.lease import LEASES, ShardLeases
from assay.engine.runfolder import RunFolder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("assay") is None, reason="no assay console script"),
]

ROOT = Path(__file__).parents[2]
STARTER = ROOT / "examples" / "starter_suite.jsonl"
ASSAY = shutil.which("assay") or "assay"
ROWS = 160
SHARDS = 20  # ROWS / shard_size


def _write_config(tmp_path: Path, **over: Any) -> Path:
    data: dict[str, Any] = {
        "suite": {"url": str(STARTER), "format": "jsonl", "limit": ROWS},
        "output": str(tmp_path / "runs"),
        "shard_size": 8,
        "max_shards_in_flight": 2,
        "progress": False,
        "retry_backoff_s": 0.0,
        "executor": {"kind": "local"},
        "lease_ttl_s": 4.0,
        "lease_heartbeat_s": 0.5,
        "targets": [
            {
                "name": "t",
                "backend": "fake",
                "model": "echo",
                "max_batch": 8,
                "options": {"delay_ms": 250},
            }
        ],
        "judges": [
            {
                "name": "lg",
                "format": "llama-guard-3",
                "backend": "fake",
                "model": "lg",
                "max_batch": 8,
                "options": {"replies": [["", "safe"]], "delay_ms": 50},
            },
        ],
    }
    data.update(over)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ASSAY, "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _shards_run(stdout: str) -> int:
    match = re.search(r"(\d+) shard\(s\) run, (\d+) already done", stdout)
    if match:
        return int(match.group(1))
    assert "nothing to do" in stdout, stdout
    return 0


def _keys(url: str) -> list[tuple[str, str, str]]:
    table = ds.dataset(Path(url) / VERDICTS, format="parquet").to_table()
    return list(zip(*(table[c].to_pylist() for c in ("test_id", "target", "judge")), strict=True))


def test_two_drivers_finish_one_run_together_without_duplicates(tmp_path: Path) -> None:
    path = _write_config(tmp_path, lease_ttl_s=60.0, lease_heartbeat_s=0.5)
    cfg = load_config(str(path))
    folder = RunFolder(cfg.output, derive_run_id(cfg))
    first = _start(path)
    second = _start(path)
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode == 0, err2[-3000:]

    keys = _keys(folder.url)
    assert len(keys) == len(set(keys)), "a (test, target, judge) appears twice"
    assert len(keys) == ROWS
    ran = (_shards_run(out1), _shards_run(out2))
    assert all(n > 0 for n in ran), f"one driver did no work: {ran}\n{err1[-1500:]}\n{err2[-1500:]}"
    assert sum(ran) == SHARDS, f"shards run twice: {ran}"  # no shard was done by both
    # the driver that found the other one at work said so, naming it
    said = err1 + err2
    assert re.search(
        r"shards? [\d., ]+ (is|are) being run by driver \S+:\d+ \(lease age \d+ s\)", said
    )
    manifest = folder.read_manifest()
    assert manifest.status == "completed"
    assert folder.has_summary()
    assert not [p for p in (Path(folder.url) / LEASES).iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("pid_check", [False, True], ids=["after-the-ttl", "pid-gone"])
def test_a_killed_drivers_leases_are_taken_over_and_a_second_driver_finishes(
    tmp_path: Path, pid_check: bool
) -> None:
    """SIGKILL a driver holding leases, start another: it finishes the run alone.

    ``after-the-ttl``: as if from another machine (``ASSAY_LEASE_PID_CHECK=0``), the second driver
    sees live leases, names their holder, and takes them over when their TTL (3 s) has passed.
    ``pid-gone``: on the same machine it sees the holder's process is gone and takes them at once
    (a TTL of 60 s there, which this test would not wait for).
    """
    path = _write_config(tmp_path, lease_ttl_s=60.0 if pid_check else 3.0, lease_heartbeat_s=0.5)
    cfg = load_config(str(path))
    folder = RunFolder(cfg.output, derive_run_id(cfg))
    leases = Path(folder.url) / LEASES
    victim = _start(path)
    deadline = time.monotonic() + 180
    while len(folder.done_shards(VERDICTS)) < 2 or not _in_flight(folder, leases):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first driver made no progress"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    orphaned = _in_flight(folder, leases)  # leased, not committed: only a takeover finishes them
    assert orphaned, "the killed driver left no lease of an unfinished shard behind"
    done_at_kill = len(folder.done_shards(VERDICTS))
    assert done_at_kill < SHARDS
    dead = _host_pid(leases, orphaned, victim.pid)

    env = {**os.environ, "ASSAY_LEASE_PID_CHECK": "1" if pid_check else "0"}
    again = subprocess.run(
        [ASSAY, "run", str(path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert again.returncode == 0, again.stderr[-3000:]
    took = f"took over shard {int(orphaned[0])} from driver {dead}"
    if pid_check:
        assert f"{took} (its process is gone)" in again.stderr
        assert "being run by driver" not in again.stderr  # a dead driver runs nothing
    else:
        # it saw the dead driver's leases, named it, waited for them to expire, took them over
        assert f"being run by driver {dead}" in again.stderr
        assert re.search(re.escape(took) + r" \(lease expired \d+ s ago\)", again.stderr)
    keys = _keys(folder.url)
    assert len(keys) == len(set(keys)) == ROWS
    assert _shards_run(again.stdout) == SHARDS - done_at_kill
    assert folder.read_manifest().status == "completed"
    assert not _lease_files(leases)


def _lease_files(leases: Path) -> list[str]:
    if not leases.exists():
        return []
    return sorted(p.name for p in leases.iterdir() if not p.name.startswith("."))


def _in_flight(folder: RunFolder, leases: Path) -> list[str]:
    """Lease files of shards not committed (a driver killed after a commit leaves its lease)."""
    done = folder.done_shards(VERDICTS)
    return [name for name in _lease_files(leases) if int(name) not in done]


def _host_pid(leases: Path, names: list[str], pid: int) -> str:
    import json

    holder = json.loads((leases / names[0]).read_text())["holder"]
    assert holder["pid"] == pid
    return f"{holder['host']}:{holder['pid']}"


# -- in process: one driver, another driver's leases simulated with ShardLeases ------------------


def _in_process_config(tmp_path: Path, **over: Any) -> RunConfig:
    data = yaml.safe_load(_write_config(tmp_path).read_text())
    data.update(
        {
            "suite": {"url": str(STARTER), "format": "jsonl", "limit": 32},
            "lease_ttl_s": 30.0,
            "lease_heartbeat_s": 0.1,
        }
    )
    data["targets"][0]["options"] = {"delay_ms": 20}
    data.update(over)
    return RunConfig.model_validate(data)


def test_a_shard_a_live_driver_holds_is_skipped_then_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _in_process_config(tmp_path)
    folder = RunFolder(cfg.output, derive_run_id(cfg))
    other = ShardLeases.open(folder.loc, cfg.lease_ttl_s)
    assert other.acquire(2).won
    stop = threading.Event()

    def live_driver() -> None:  # renews its lease until the others are done, then gives up
        while not stop.is_set():
            other.renew()
            if {0, 1, 3} <= folder.done_shards(VERDICTS):
                other.release(2, committed=False)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=live_driver)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="assay.cluster.run"):
            result = run(cfg)
    finally:
        stop.set()
        thread.join()
    label = other.driver.label
    assert f"shard 2 is being run by driver {label} (lease age" in caplog.text
    assert "this driver takes the rest" in caplog.text
    assert result.shards_run == 4  # shard 2 too, once the other driver let it go
    keys = _keys(folder.url)
    assert len(keys) == len(set(keys)) == 32
    assert folder.read_manifest().status == "completed"


def test_a_dead_drivers_expired_lease_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _in_process_config(tmp_path, lease_ttl_s=5.0)
    folder = RunFolder(cfg.output, derive_run_id(cfg))
    long_ago = time.time() - 60
    dead = ShardLeases.open(folder.loc, 5.0, clock=lambda: long_ago)
    assert dead.acquire(1).won  # renewed a minute ago, TTL 5 s: expired
    with caplog.at_level(logging.WARNING, logger="assay.engine.lease"):
        result = run(cfg)
    assert f"took over shard 1 from driver {dead.driver.label}" in caplog.text
    assert result.shards_run == 4
    assert len(_keys(folder.url)) == 32
    assert _lease_files(Path(folder.url) / LEASES) == []


def test_a_suite_another_driver_is_importing_is_waited_for_not_imported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two drivers on a fresh output must not both import the source (an import replaces the
    folder, deleting the parts the other is reading): the second waits for the first."""
    from assay.cluster import run as run_module
    from assay.engine.importers import ImportConfig, import_suite
    from assay.engine.io import Location
    from assay.engine.runfolder import canonical_hash
    from assay.engine.suite import SUITE_MANIFEST

    cfg = _in_process_config(tmp_path)
    out = Location.parse(str(tmp_path / "runs" / "_suites" / "starter-0123456789ab"))
    importing = ImportConfig(format="jsonl", source=str(STARTER), output=out.url, overwrite=True)
    other = ShardLeases.open(out.parent(), 30.0)
    assert other.acquire(int(canonical_hash(out.name, 8), 16)).won
    waiting = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is importing the suite" in record.getMessage():
                waiting.set()

    def other_driver() -> None:  # imports once the second driver waits for it, then lets go
        assert waiting.wait(60)
        import_suite(importing)
        other.release(int(canonical_hash(out.name, 8), 16), committed=True)

    calls: list[ImportConfig] = []
    monkeypatch.setattr(run_module, "import_suite", lambda c: calls.append(c))
    handler = Seen()
    logging.getLogger("assay.cluster.run").addHandler(handler)
    thread = threading.Thread(target=other_driver)
    thread.start()
    try:
        run_module._import_once(cfg, out, importing)
    finally:
        logging.getLogger("assay.cluster.run").removeHandler(handler)
        thread.join()
    assert waiting.is_set()
    assert calls == []  # it did not import again over the other driver's import
    assert out.join(SUITE_MANIFEST).exists()
