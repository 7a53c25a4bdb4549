"""Faults during a run: a killed actor, a killed driver. Every result ends up exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml

from assay.cluster.run import VERDICTS, derive_run_id, run
from assay.engine.config import RunConfig, load_config
from assay.engine.errors import FatalError
from assay.engine.runfolder import RunFolder

ROOT = Path(__file__).parents[2]
STARTER = ROOT / "examples" / "starter_suite.jsonl"
ASSAY = shutil.which("assay")


def _config(tmp_path: Path, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "suite": {"url": str(STARTER), "format": "jsonl", "limit": 96},
        "output": str(tmp_path / "runs"),
        "shard_size": 8,
        "progress": False,
        "retry_backoff_s": 0.0,
        "targets": [{"name": "t", "backend": "fake", "model": "echo", "max_batch": 4}],
        "judges": [
            {
                "name": "lg",
                "format": "llama-guard-3",
                "backend": "fake",
                "model": "lg",
                "max_batch": 4,
                "options": {"replies": [["", "safe"]]},
            },
        ],
    }
    data.update(over)
    return data


def _keys_once(result_url: str) -> int:
    table = ds.dataset(Path(result_url) / VERDICTS, format="parquet").to_table()
    keys = list(zip(*(table[c].to_pylist() for c in ("test_id", "target", "judge")), strict=True))
    assert len(keys) == len(set(keys)), "a (test, target, judge) appears twice"
    return len(keys)


@pytest.mark.slow
def test_killed_actors_are_replaced_and_every_result_lands_once(tmp_path: Path) -> None:
    target_crash = tmp_path / "target-crashed"
    judge_crash = tmp_path / "judge-crashed"
    data = _config(
        tmp_path,
        executor={"kind": "ray", "num_cpus": 8},
        targets=[
            {
                "name": "t",
                "backend": "fake",
                "model": "echo",
                "max_batch": 4,
                "options": {"delay_ms": 20, "crash_once_file": str(target_crash)},
                "resources": {"num_cpus": 0.5},
            }
        ],
        judges=[
            {
                "name": "lg",
                "format": "llama-guard-3",
                "backend": "fake",
                "model": "lg",
                "max_batch": 4,
                "resources": {"num_cpus": 0.5},
                "options": {
                    "replies": [["", "safe"]],
                    "delay_ms": 20,
                    "crash_once_file": str(judge_crash),
                },
            }
        ],
    )
    result = run(RunConfig.model_validate(data))
    # both actors really died (their pids are in the files) and were replaced
    assert target_crash.read_text().isdigit() and judge_crash.read_text().isdigit()
    assert _keys_once(result.url) == 96
    assert result.rows_generated == 96


@pytest.mark.slow
def test_spent_restart_budget_fails_the_run_naming_the_model(tmp_path: Path) -> None:
    data = _config(
        tmp_path,
        executor={"kind": "ray", "num_cpus": 8, "max_actor_restarts": 0},
        targets=[
            {
                "name": "fragile",
                "backend": "fake",
                "model": "fragile-model",
                "options": {"crash_once_file": str(tmp_path / "crashed")},
                "resources": {"num_cpus": 0.5},
            }
        ],
    )
    cfg = RunConfig.model_validate(data)
    with pytest.raises(FatalError, match="fragile.*restart budget"):
        run(cfg)
    manifest = RunFolder(cfg.output, derive_run_id(cfg)).read_manifest()
    assert manifest.status == "failed"


@pytest.mark.slow
@pytest.mark.skipif(ASSAY is None, reason="the assay console script is not installed")
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_driver_killed_mid_run_resumes_with_the_same_command(tmp_path: Path, executor: str) -> None:
    data = _config(
        tmp_path,
        executor={"kind": executor, "num_cpus": 8},
        max_shards_in_flight=1,
        targets=[
            {
                "name": "t",
                "backend": "fake",
                "model": "echo",
                "max_batch": 8,
                "options": {"delay_ms": 150},
            }
        ],
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(str(path))
    folder = RunFolder(cfg.output, derive_run_id(cfg))
    proc = subprocess.Popen(
        [ASSAY, "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while len(folder.done_shards(VERDICTS)) < 3:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = len(folder.done_shards(VERDICTS))
    assert done_at_kill < 12, "the run finished before it could be killed"
    assert folder.read_manifest().status == "running"  # a dead driver leaves it so

    again = subprocess.run([ASSAY, "run", str(path)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{12 - done_at_kill} shard(s) run, {done_at_kill} already done" in again.stdout
    assert _keys_once(folder.url) == 96
    assert folder.read_manifest().status == "completed"
