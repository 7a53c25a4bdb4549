"""`assay submit`, `status`, `logs` and `stop` against a real Ray head with the Jobs API (loopback).

The head runs the dashboard (the Jobs API server) on 127.0.0.1 with a free port. Jobs ship the
config and a small suite in their working_dir and this checkout's assay code in py_modules (the
default ``--ship source``); their driver joins the cluster (``executor.address: auto``).

Teardown kills the processes of the session ``ray start`` ran in (every Ray process it starts,
job drivers included, keeps that session id) rather than ``ray stop --force``, which would kill
every Ray process on the machine, other people's test clusters included.

The tests at the top need no cluster: they check what ``plan_job`` would send.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml

from assay.cluster.jobs import META_RUN_ID, META_RUN_URL, plan_job, resolve_address
from assay.cluster.localray import TOKEN_FILE, new_token_dir
from assay.engine.errors import ConfigError

STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
ROWS = 40


def write_config(folder: Path, **over: Any) -> Path:
    data: dict[str, Any] = {
        "suite": {"url": "./starter_suite.jsonl", "format": "jsonl", "limit": ROWS},
        "shard_size": 10,
        "progress": False,
        "retry_backoff_s": 0.0,
        "executor": {"kind": "ray", "address": "auto"},
        "targets": [
            {"name": "t-echo", "backend": "fake", "model": "echo", "resources": {"num_cpus": 0.25}}
        ],
        "judges": [
            {
                "name": "lg",
                "format": "llama-guard-3",
                "backend": "fake",
                "model": "lg",
                "options": {"replies": [["", "safe"]]},
                "resources": {"num_cpus": 0.25},
            }
        ],
    }
    data.update(over)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "quick.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- what submit sends (no cluster) ------------------------------------------------------------


def test_plan_ships_config_includes_and_source(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", executor={"kind": "ray"})
    plan = plan_job(
        str(cfg),
        tmp_path / "stage",
        overrides=["shard_size=5"],
        output="s3://bucket/runs",
        include=[str(STARTER)],
    )
    workdir = Path(plan.runtime_env["working_dir"])
    assert sorted(p.name for p in workdir.iterdir()) == ["quick.yaml", "starter_suite.jsonl"]
    assert (workdir / "quick.yaml").read_bytes() == cfg.read_bytes()  # shipped as written
    (modules,) = plan.runtime_env["py_modules"]
    assert Path(modules).name == "assay"
    for pkg in ("engine", "actors", "kernels", "cluster"):
        assert (Path(modules) / pkg / "__init__.py").is_file()
    assert (Path(modules) / "cluster" / "jobs.py").is_file()
    assert not list(Path(modules).rglob("__pycache__"))
    assert plan.entrypoint.startswith("python -m assay.cluster.cli run quick.yaml ")
    # a job's driver must join the cluster; the run id is pinned and recorded
    assert "--set executor.address=auto" in plan.entrypoint
    assert f"--set run_id={plan.run_id}" in plan.entrypoint
    assert "--set shard_size=5" in plan.entrypoint
    assert plan.entrypoint.endswith("--output s3://bucket/runs")
    assert plan.metadata[META_RUN_ID] == plan.run_id
    assert plan.metadata[META_RUN_URL] == f"s3://bucket/runs/{plan.run_id}"
    # the same config submitted from elsewhere names the same run (./ paths are not resolved)
    other = write_config(tmp_path / "elsewhere", executor={"kind": "ray"})
    again = plan_job(
        str(other), tmp_path / "stage2", ["shard_size=5"], "s3://bucket/runs", [str(STARTER)]
    )
    assert again.run_id == plan.run_id


def test_plan_for_an_installed_assay_ships_only_the_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, output="/shared/runs", run_id="nightly-1")
    plan = plan_job(str(cfg), tmp_path / "stage", ship="installed", pip=["httpx"])
    assert "py_modules" not in plan.runtime_env
    assert plan.runtime_env["pip"] == ["httpx"]
    assert plan.entrypoint == "assay run quick.yaml --output /shared/runs"
    assert plan.run_id == "nightly-1" and plan.run_url == "/shared/runs/nightly-1"


def test_plan_rejects_bad_configs_before_sending(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    with pytest.raises(ConfigError, match="relative path"):
        plan_job(str(cfg), tmp_path / "s1")  # output 'runs' would land in the job's temp dir
    bad = write_config(tmp_path / "bad", output="/x", shard_size=0)
    with pytest.raises(ConfigError, match="shard_size"):
        plan_job(str(bad), tmp_path / "s2")
    with pytest.raises(ConfigError, match="no config file"):
        plan_job(str(tmp_path / "nope.yaml"), tmp_path / "s3")
    with pytest.raises(ConfigError, match="--include"):
        plan_job(str(cfg), tmp_path / "s4", output="/x", include=[str(tmp_path / "missing")])


def test_address_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "http://127.0.0.1:8265"
    assert resolve_address("head:8265") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://a:1")
    assert resolve_address(None) == "http://a:1"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://b:2")
    assert resolve_address(None) == "https://b:2"


# -- a real head with the Jobs API -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
    return pids


def _kill_session(sid: int, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = _session_members(sid)
    while left and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        left = _session_members(sid)
    return left


@dataclass
class JobsHead:
    address: str
    env: dict[str, str]

    def assay(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("assay", path=self.env["PATH"])
        assert exe, "the assay console script is not installed"
        return subprocess.run(
            [exe, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def state(self, job_id: str) -> dict[str, Any]:
        r = self.assay("status", job_id, "--address", self.address, "--json")
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout))

    def wait(self, job_id: str, until: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state["job"]["status"] in until or time.monotonic() > deadline:
                return state
            time.sleep(0.5)


@pytest.fixture(scope="module")
def head() -> Iterator[JobsHead]:
    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Unix socket paths are bounded
    # `python` in a job's entrypoint must be this interpreter (it has ray and assay's deps).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # Token auth on, with a token of this cluster's own: `ray start`, the Jobs API client
    # (`assay submit`/`status`/...) and the job drivers all read it through RAY_AUTH_TOKEN_PATH.
    token_dir = new_token_dir()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_dir / TOKEN_FILE),
        "PATH": path,
    }
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=4",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"ray start failed:\n{out[-3000:]}"
        url = f"http://127.0.0.1:{dashboard}"
        # the dashboard checks Ray's token too
        token = (token_dir / TOKEN_FILE).read_text()
        probe = urllib.request.Request(
            f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}
        )
        deadline = time.monotonic() + 30
        while True:  # the Jobs API answers shortly after `ray start` returns
            try:
                with urllib.request.urlopen(probe, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield JobsHead(url, env)
    finally:
        left = _kill_session(proc.pid)
        subprocess.run(["rm", "-rf", temp_dir, str(token_dir)], check=False, timeout=60)
        assert not left, f"Ray processes still alive after teardown: {left}"


@pytest.mark.slow
def test_submit_status_and_logs_of_a_run(head: JobsHead, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    output = tmp_path / "runs"
    started = time.monotonic()
    r = head.assay(
        "submit",
        str(cfg),
        "--address",
        head.address,
        "--include",
        str(STARTER),
        "--output",
        str(output),
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert job_id.startswith("raysubmit_"), r.stdout
    state = head.wait(job_id, ("SUCCEEDED", "FAILED", "STOPPED"))
    took = time.monotonic() - started
    logs = head.assay("logs", job_id, "--address", head.address)
    assert state["job"]["status"] == "SUCCEEDED", logs.stdout[-3000:]

    # the run folder is complete: every (test, target, judge) exactly once
    run_id = state["job"]["run_id"]
    folder = output / run_id
    assert state["job"]["run_url"] == str(folder)
    assert state["run"]["status"] == "completed"
    assert state["run"]["progress"]["verdicts"]["rows_done"] == ROWS
    verdicts = ds.dataset(folder / "verdicts", format="parquet").to_table().to_pylist()
    assert len(verdicts) == ROWS
    assert len({(v["test_id"], v["target"], v["judge"]) for v in verdicts}) == ROWS
    assert (folder / "summary.json").is_file()

    # status by job id alone: the address from the environment, the run's progress below it
    env_head = JobsHead(head.address, {**head.env, "RAY_API_SERVER_ADDRESS": head.address})
    r = env_head.assay("status", job_id)
    assert r.returncode == 0, r.stderr
    assert f"job {job_id}: SUCCEEDED" in r.stdout
    assert f"run {run_id}: completed" in r.stdout
    assert f"verdicts          4/4 shards         {ROWS}/{ROWS} rows" in r.stdout

    # the logs are the run's own output
    assert logs.returncode == 0, logs.stderr
    assert "python -m assay.cluster.cli run quick.yaml" in logs.stdout
    assert f"run {run_id}: 4 shard(s) run, 0 already done" in logs.stdout
    assert "target t-echo" in logs.stdout
    follow = head.assay("logs", job_id, "--address", head.address, "--follow")
    assert follow.returncode == 0 and f"run {run_id}: 4 shard(s) run" in follow.stdout
    print(f"job submitted -> SUCCEEDED seen in {took:.1f} s")


@pytest.mark.slow
def test_a_failing_job_is_failed_with_the_error_in_its_logs(head: JobsHead, tmp_path: Path) -> None:
    # valid config, but the suite it names is not shipped: the run fails on the cluster
    cfg = write_config(tmp_path / "cfg", suite={"url": "./missing.jsonl", "format": "jsonl"})
    r = head.assay(
        "submit", str(cfg), "--address", head.address, "--output", str(tmp_path / "runs"), "--wait"
    )
    assert r.returncode == 1, r.stdout + r.stderr
    job_id = r.stdout.strip()
    assert job_id.startswith("raysubmit_")
    assert f"job {job_id}: FAILED" in r.stderr
    status = head.assay("status", job_id, "--address", head.address)
    assert status.returncode == 0, status.stderr
    assert f"job {job_id}: FAILED" in status.stdout
    assert "no manifest to show" in status.stdout  # it failed before planning the run
    logs = head.assay("logs", job_id, "--address", head.address).stdout
    assert "error:" in logs and "missing.jsonl" in logs, logs[-2000:]
    assert "Traceback" not in logs  # one clear line, as on a terminal
    print(next(line for line in logs.splitlines() if line.startswith("error:")))


@pytest.mark.slow
def test_a_running_job_shows_progress_and_stops(head: JobsHead, tmp_path: Path) -> None:
    slow_target = {
        "name": "t-slow",
        "backend": "fake",
        "model": "slow",
        "max_batch": 1,
        "options": {"delay_ms": 1000},
        "resources": {"num_cpus": 0.25},
    }
    cfg = write_config(
        tmp_path / "cfg", targets=[slow_target], shard_size=2, max_shards_in_flight=1
    )
    r = head.assay(
        "submit",
        str(cfg),
        "--address",
        head.address,
        "--include",
        str(STARTER),
        "--output",
        str(tmp_path / "runs"),
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    deadline = time.monotonic() + 60
    state = head.state(job_id)
    while time.monotonic() < deadline:
        state = head.state(job_id)
        run = state["run"] or {}
        if run.get("progress", {}).get("verdicts", {}).get("shards_done", 0) >= 1:
            break
        time.sleep(0.5)
    assert state["job"]["status"] == "RUNNING", state
    assert state["run"]["status"] == "running"
    done = state["run"]["progress"]["verdicts"]["shards_done"]
    assert 1 <= done < ROWS // 2
    stop = head.assay("stop", job_id, "--address", head.address)
    assert stop.returncode == 0 and "stop requested" in stop.stdout, stop.stderr
    assert head.wait(job_id, ("STOPPED", "FAILED", "SUCCEEDED"), 30)["job"]["status"] == "STOPPED"
    again = head.assay("stop", job_id, "--address", head.address)
    assert again.returncode == 0 and "already ended" in again.stdout


@pytest.mark.slow
def test_unknown_job_and_unreachable_api_are_clear_errors(head: JobsHead) -> None:
    r = head.assay("status", "raysubmit_doesnotexist00", "--address", head.address)
    assert r.returncode == 1 and r.stderr.startswith("error: job raysubmit_doesnotexist00"), (
        r.stderr
    )
    r = head.assay("logs", "raysubmit_x", "--address", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot reach the Ray Jobs API at http://127.0.0.1:"), (
        r.stderr
    )


@pytest.mark.slow
def test_a_client_without_the_clusters_token_is_refused(head: JobsHead, tmp_path: Path) -> None:
    # an empty home: no ~/.ray/auth_token to fall back on
    env = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    for extra in ({}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}):
        client = JobsHead(head.address, {**env, **extra, "HOME": str(tmp_path)})
        r = client.assay("status", "raysubmit_doesnotexist00", "--address", head.address)
        assert r.returncode == 1, r.stdout
        assert "401" in r.stderr or "uthenticat" in r.stderr, r.stderr
