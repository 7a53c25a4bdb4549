"""Shard leases (engine/lease.py) on local folders and memory://: acquire, conflict, renew,
expiry and takeover, release, races between threads, and the operator's message."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from assay.engine.config import RunConfig
from assay.engine.io import Location
from assay.engine.lease import (
    LEASES,
    DriverInfo,
    LeaseMode,
    ShardLeases,
    describe_holders,
)


class Clock:
    """A wall clock the test moves by hand (shared by the drivers of one test)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "memory", "read-back"])
def run_folder(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """A run folder on a local disk, on memory://, or on a local disk under read-back mode."""
    if request.param == "memory":
        return Location.parse(f"memory://lease-{uuid.uuid4().hex[:8]}/run")
    return Location.parse(str(tmp_path / f"run-{request.param}"))


@pytest.fixture
def mode(request: pytest.FixtureRequest, run_folder: Location) -> LeaseMode:
    return "read-back" if run_folder.url.endswith("run-read-back") else "auto"


Factory = Callable[..., ShardLeases]


@pytest.fixture
def driver(run_folder: Location, mode: LeaseMode) -> Factory:
    """Makes a driver's ShardLeases on the test's run folder."""

    def make(ttl_s: float = 10.0, clock: Clock | None = None) -> ShardLeases:
        return ShardLeases.open(
            run_folder,
            ttl_s,
            mode=mode,
            settle_s=0.0,
            clock=clock or Clock(),
            sleep=lambda s: None,
        )

    return make


def test_acquire_conflict_and_release(driver: Factory) -> None:
    clock = Clock()
    a, b = driver(clock=clock), driver(clock=clock)
    claim = a.acquire(3)
    assert claim.won and claim.holder is not None and claim.holder.holder == a.driver
    assert a.held == {3}

    other = b.acquire(3)
    assert not other.won
    assert other.holder is not None and other.holder.holder.token == a.driver.token
    assert b.held == set()
    assert b.acquire(4).won  # another shard is free

    assert set(b.holders()) == {3, 4}
    a.release(3, committed=False)
    assert set(b.holders()) == {4}
    assert b.acquire(3).won


def test_renew_keeps_a_live_lease(driver: Factory) -> None:
    clock = Clock()
    a, b = driver(ttl_s=10, clock=clock), driver(ttl_s=10, clock=clock)
    a.acquire(0)
    for _ in range(5):  # 20 s in all, but renewed every 4 s: never expires
        clock.now += 4
        assert a.renew() == []
        assert not b.acquire(0).won
    info = b.holders()[0]
    assert info.seq == 5 and info.renewed_at == clock.now


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(driver: Factory) -> None:
    clock = Clock()
    dead, b = driver(ttl_s=10, clock=clock), driver(ttl_s=10, clock=clock)
    dead.acquire(7)
    clock.now += 10.5  # the holder stopped renewing (SIGKILLed)
    claim = b.acquire(7)
    assert claim.won
    assert claim.took_over is not None and claim.took_over.holder.token == dead.driver.token
    assert b.holders()[7].holder.token == b.driver.token
    # a holder that was only stalled finds out at its next renewal and stops claiming it
    assert dead.renew() == [7]
    assert dead.held == set()
    assert b.renew() == []


def test_release_after_a_failure_leaves_another_drivers_lease(driver: Factory) -> None:
    clock = Clock()
    a, b = driver(ttl_s=10, clock=clock), driver(ttl_s=10, clock=clock)
    a.acquire(1)
    clock.now += 11
    assert b.acquire(1).won
    a.release(1, committed=False)  # a's lease was taken over: b's stays
    assert b.holders()[1].holder.token == b.driver.token
    a.release(1, committed=True)  # after a commit the shard is done: any lease may go
    assert b.holders() == {}


def test_a_lease_names_its_driver_and_ttl(driver: Factory) -> None:
    a = driver(ttl_s=12.5)
    a.acquire(0)
    info = a.holders()[0]
    assert info.holder.pid > 0 and info.holder.host and len(info.holder.token) == 16
    assert info.ttl_s == 12.5 and info.acquired_at == info.renewed_at


@pytest.mark.parametrize("expired", [False, True])
def test_only_one_of_many_racing_drivers_wins(
    run_folder: Location, mode: LeaseMode, expired: bool
) -> None:
    # the read-back protocol decides a race by its settle delay: every write lands within it here
    settle = 0.3 if mode == "read-back" else 0.0
    clock = Clock()
    if expired:
        ShardLeases.open(run_folder, 5, clock=clock, mode=mode, settle_s=settle).acquire(0)
        clock.now += 6
    drivers = [
        ShardLeases.open(run_folder, 5, mode=mode, clock=clock, settle_s=settle) for _ in range(16)
    ]
    start = threading.Barrier(len(drivers))
    wins: list[bool] = [False] * len(drivers)

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
    assert ShardLeases.open(run_folder, 5).holders()[0].holder.token == winner.driver.token


def test_local_leases_are_plain_files_and_leave_no_temporaries(tmp_path: Path) -> None:
    folder = Location.parse(str(tmp_path / "run"))
    clock = Clock()
    a, b = ShardLeases.open(folder, 5, clock=clock), ShardLeases.open(folder, 5, clock=clock)
    a.acquire(0)
    a.acquire(12)
    clock.now += 6
    b.acquire(0)
    a.renew()
    names = sorted(p.name for p in (tmp_path / "run" / LEASES).iterdir())
    assert names == [".lock", "00000", "00012"]  # .lock: the flock target, never removed
    b.clear()
    assert [p.name for p in (tmp_path / "run" / LEASES).iterdir()] == [".lock"]


def test_the_message_merges_shard_ranges_per_driver() -> None:
    d1 = DriverInfo(host="h1", pid=11, token="a" * 16, started_at=0)
    d2 = DriverInfo(host="h2", pid=22, token="b" * 16, started_at=0)
    leases = {}
    for sid in [*range(3, 10), 12, *range(40, 3000)]:
        leases[sid] = _info(sid, d1, renewed_at=100.0)
    leases[20] = _info(20, d2, renewed_at=110.0)
    lines = describe_holders(leases, now=112.0)
    assert lines == [
        "shards 3..9, 12, 40..2999 are being run by driver h1:11 (lease age 12 s)",
        "shard 20 is being run by driver h2:22 (lease age 2 s)",
    ]


def _info(sid: int, holder: DriverInfo, renewed_at: float):  # type: ignore[no-untyped-def]
    from assay.engine.lease import LeaseInfo

    return LeaseInfo(
        shard_id=sid, holder=holder, ttl_s=60, acquired_at=renewed_at, renewed_at=renewed_at
    )


def test_lease_settings_are_validated_and_do_not_change_the_run_id() -> None:
    from assay.cluster.run import derive_run_id

    base = {
        "suite": {"url": "s"},
        "judges": [{"name": "j", "format": "llama-guard-3", "backend": "fake", "model": "m"}],
    }
    cfg = RunConfig.model_validate(base)
    assert cfg.lease_heartbeat == cfg.lease_ttl_s / 4
    tuned = RunConfig.model_validate({**base, "lease_ttl_s": 5, "lease_heartbeat_s": 1})
    assert derive_run_id(tuned) == derive_run_id(cfg)
    assert tuned.lease_heartbeat == 1
    with pytest.raises(ValueError, match="lease_heartbeat_s .* must be below lease_ttl_s"):
        RunConfig.model_validate({**base, "lease_ttl_s": 5, "lease_heartbeat_s": 5})


def _driver_in(pid: int, started_at: float) -> DriverInfo:
    """A driver identity in this machine's process space, with the given pid."""
    here = DriverInfo.new()
    return here.model_copy(update={"pid": pid, "token": "f" * 16, "started_at": started_at})


def test_a_holder_on_this_machine_whose_process_is_gone_is_dead_before_its_ttl(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys
    import time

    if DriverInfo.new().space is None:
        pytest.skip("no /proc: a driver cannot tell whether a pid is alive")
    folder = Location.parse(str(tmp_path / "run"))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is gone now (reaped)
    clock = Clock()
    dead = ShardLeases.open(folder, 60, driver=_driver_in(child.pid, time.time()), clock=clock)
    assert dead.acquire(0).won
    assert dead.driver.gone()

    patient = ShardLeases.open(folder, 60, clock=clock, check_pids=False)
    assert not patient.acquire(0).won  # without the pid check it waits for the TTL
    claim = ShardLeases.open(folder, 60, clock=clock).acquire(0)
    assert claim.won and claim.took_over is not None

    # a live process is alive; a live pid whose process started after the driver is another one
    parent = _driver_in(os.getppid(), time.time())
    assert not parent.gone()
    reused = _driver_in(os.getppid(), started_at=0.0 + 1)  # "started" in 1970: the pid was reused
    assert reused.gone()
    elsewhere = parent.model_copy(update={"space": "another-machine/pid:[1]", "pid": child.pid})
    assert not elsewhere.gone()  # a pid of another machine tells nothing
