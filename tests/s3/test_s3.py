"""assay on a real S3 server (Ceph radosgw on loopback): suites, runs, resume, an outage.

Every run here writes its run folder to s3:// and the results are read back with plain pyarrow
(``pyarrow.dataset`` over ``pyarrow.fs.S3FileSystem``), no assay and no fsspec involved.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from assay.cluster.run import GENERATIONS, VERDICTS, derive_run_id, run
from assay.engine.config import RunConfig
from assay.engine.errors import AssayError, InputError, StorageError
from assay.engine.importers import ImportConfig, import_suite
from assay.engine.runfolder import RunFolder
from assay.engine.suite import open_suite

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
STARTER = ROOT / "examples" / "starter_suite.jsonl"
N = 176  # rows of the starter suite
ASSAY = str(Path(sys.executable).parent / "assay")


@pytest.fixture(scope="module")
def suite_url(s3_server: Any) -> str:
    """The starter suite, imported once into the session's bucket."""
    url = s3_server.url("suites", "starter")
    import_suite(
        ImportConfig(
            format="jsonl",
            source=str(STARTER),
            output=url,
            storage_options=s3_server.storage_options,
            overwrite=True,
        )
    )
    return url


def config(s3: Any, suite: str, output: str, **over: Any) -> RunConfig:
    data: dict[str, Any] = {
        "suite": {"url": suite, "format": "suite"},
        "output": output,
        "shard_size": 32,
        "executor": {"kind": "local"},
        "progress": False,
        "retry_backoff_s": 0.0,
        "storage_options": s3.storage_options,
        "targets": [
            {"name": "t-echo", "backend": "fake", "model": "echo", "max_batch": 8},
            {
                "name": "t-comply",
                "backend": "fake",
                "model": "comply",
                "options": {"replies": [["", "Sure, here is how: step one..."]]},
            },
        ],
        "judges": [
            {
                "name": "lg",
                "format": "llama-guard-3",
                "backend": "fake",
                "model": "lg",
                "options": {"replies": [["Sure, here is how", "unsafe\nS2"], ["", "safe"]]},
            },
            {
                "name": "q3",
                "format": "qwen3guard",
                "backend": "fake",
                "model": "q3",
                "options": {"replies": [["", "Controversial\nCategories: None"]]},
            },
        ],
    }
    data.update(over)
    return RunConfig.model_validate(data)


def read_plain(s3: Any, url: str, stage: str) -> list[dict[str, Any]]:
    """Every row of a stage's parts, read with pyarrow alone (no assay, no fsspec)."""
    path = url.removeprefix("s3://") + f"/{stage}"
    dataset = ds.dataset(path, format="parquet", filesystem=s3.pyarrow_fs())
    assert all(Path(f).name.startswith("part-") for f in dataset.files), dataset.files
    return dataset.to_table().to_pylist()  # type: ignore[no-any-return]


def check_exactly_once(s3: Any, url: str, targets: int = 2, judges: int = 2) -> None:
    """Each (test, target) generated once and each (test, target, judge) judged once."""
    gens = read_plain(s3, url, GENERATIONS)
    keys = [(g["test_id"], g["target"]) for g in gens]
    assert len(keys) == len(set(keys)) == N * targets
    verdicts = read_plain(s3, url, VERDICTS)
    keys3 = [(v["test_id"], v["target"], v["judge"]) for v in verdicts]
    assert len(keys3) == len(set(keys3)) == N * targets * judges
    assert len({v["test_id"] for v in verdicts}) == N
    assert all(v["error"] is None for v in verdicts)


def test_suite_import_and_info_on_s3(s3: Any) -> None:
    url = s3.url("suites", "cli-import")
    imported = subprocess.run(
        [ASSAY, "import", "jsonl", str(STARTER), "--output", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert report["imported"] == N
    info = subprocess.run(
        [ASSAY, "suite", "info", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["counts"]["rows"] == N
    assert data["fingerprint"] == data["manifest_fingerprint"] == report["fingerprint"]
    assert set(data["counts"]["by_lang"]) == {"en", "zh"}
    # the suite's files are plain Parquet for pyarrow too
    table = ds.dataset(
        url.removeprefix("s3://"), format="parquet", filesystem=s3.pyarrow_fs()
    ).to_table()
    assert table.num_rows == N


def test_full_run_to_s3_read_back_with_plain_pyarrow(s3: Any, suite_url: str) -> None:
    cfg = config(s3, suite_url, s3.url("runs-full"))
    result = run(cfg)
    assert result.url == f"{s3.url('runs-full')}/{result.run_id}"
    assert (result.shards_total, result.shards_run) == (6, 6)
    check_exactly_once(s3, result.url)
    verdicts = read_plain(s3, result.url, VERDICTS)
    comply = [v for v in verdicts if v["target"] == "t-comply" and v["judge"] == "lg"]
    assert {v["label"] for v in comply} == {"unsafe"}
    fs = s3.s3fs()
    root = result.url.removeprefix("s3://")
    manifest = json.loads(fs.cat_file(f"{root}/manifest.json"))
    assert manifest["status"] == "completed"
    assert manifest["progress"][VERDICTS]["shards_done"] == 6
    assert json.loads(fs.cat_file(f"{root}/summary.json"))["targets"]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/_done")) == sorted(
        f"{stage}-{i:05d}" for stage in (GENERATIONS, VERDICTS) for i in range(6)
    )
    # nothing but the contract's files: no temporaries, no leftovers of retried writes
    names = {p.rsplit("/", 1)[-1] for p in fs.find(root)}
    assert not [n for n in names if n.startswith(".")], names


def test_resume_on_s3_redoes_only_what_is_missing(s3: Any, suite_url: str) -> None:
    cfg = config(s3, suite_url, s3.url("runs-resume"))
    first = run(cfg)
    rf = RunFolder(cfg.output, first.run_id, cfg.storage_options)
    # shard 2 lost its verdicts marker (crash after the part's PUT), shard 4 lost everything
    rf.marker(VERDICTS, 2).remove()
    rf.marker(VERDICTS, 4).remove()
    rf.marker(GENERATIONS, 4).remove()
    rf.part(GENERATIONS, 4).remove()
    again = run(cfg)
    assert (again.shards_run, again.shards_done_before) == (2, 4)
    assert again.rows_generated == 32 * 2  # only shard 4 was generated again
    check_exactly_once(s3, again.url)
    assert run(cfg).nothing_to_do


def test_run_rides_out_a_gateway_outage(
    s3: Any, suite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """radosgw stops after a shard is committed and comes back 8 s later; the run finishes.

    botocore's own retries (up to ~15 s of silent backoff per call) are turned off here, so that
    it is assay's retry layer (engine/io.py) that rides out the outage, visibly in the log.
    """
    cfg = config(
        s3,
        suite_url,
        s3.url("runs-outage"),
        shard_size=16,
        max_shards_in_flight=2,
        storage_options={
            **s3.storage_options,
            "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}},
        },
        targets=[
            {"name": "t-slow", "backend": "fake", "model": "s", "options": {"delay_ms": 300}},
            {"name": "t-echo", "backend": "fake", "model": "e", "options": {"delay_ms": 100}},
        ],
    )
    done_dir = f"{cfg.output.removeprefix('s3://')}/{derive_run_id(cfg)}/_done"
    outcome: dict[str, Any] = {}
    t0 = time.monotonic()

    def target() -> None:
        try:
            outcome["result"] = run(cfg)
        except BaseException as exc:  # reported by the test below
            outcome["error"] = exc
        outcome["finished"] = time.monotonic() - t0

    timeline: list[str] = []

    def mark(event: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f}s  {event}")

    with caplog.at_level(logging.WARNING, logger="assay.engine.io"):
        worker = threading.Thread(target=target, name="assay-run", daemon=True)
        worker.start()
        mark("run started")
        fs = s3.s3fs()
        deadline = time.monotonic() + 60
        markers: list[str] = []
        while time.monotonic() < deadline and worker.is_alive():
            if fs.exists(done_dir):
                markers = [m for m in fs.ls(done_dir) if "verdicts-" in m]
            if markers:
                break
            time.sleep(0.1)
        assert markers, f"no shard was committed within 60 s: {outcome}"
        mark(f"{len(markers)} verdicts shard(s) committed")
        stopped = s3.script("stop-gateway")
        assert stopped.returncode == 0, stopped.stderr
        mark("gateway stopped")
        assert s3.script("status", 30).returncode != 0
        time.sleep(8)
        assert worker.is_alive(), f"the run ended during the outage: {outcome}"
        restarted = s3.script("start-gateway")
        assert restarted.returncode == 0, restarted.stderr
        mark("gateway started")
        worker.join(timeout=150)
        assert not worker.is_alive(), "the run did not finish after the gateway came back"
        mark(f"run finished ({outcome.get('finished', 0):.1f}s after start)")
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    print("\n".join(["outage timeline:", *timeline, f"{len(retries)} storage retries logged"]))
    for line in retries[:3]:
        print("  ", line)
    assert "error" not in outcome, f"run failed: {outcome.get('error')!r}"
    result = outcome["result"]
    assert result.shards_run == result.shards_total == 11
    assert retries, "the run never touched storage during the outage"
    # suite reads and run-folder writes alike, each logged with its URL
    assert all(f"s3://{s3.bucket}/" in r for r in retries)
    check_exactly_once(s3, result.url)
    manifest = json.loads(s3.s3fs().cat_file(result.url.removeprefix("s3://") + "/manifest.json"))
    assert manifest["status"] == "completed" and manifest["error"] is None


def test_missing_bucket_fails_at_once_naming_the_url(s3: Any) -> None:
    missing = f"s3://assay-missing-{uuid.uuid4().hex[:8]}/suites/x"
    t0 = time.monotonic()
    with pytest.raises(InputError, match=f"no suite at {missing}"):
        open_suite(missing, s3.storage_options)
    with pytest.raises(InputError, match=missing):
        run(config(s3, missing, s3.url("runs-missing")))
    assert time.monotonic() - t0 < 10  # a 404 is an answer: not retried
    # the CLI says it in one line
    info = subprocess.run(
        [ASSAY, "suite", "info", missing], capture_output=True, text=True, timeout=60, check=False
    )
    assert info.returncode != 0
    assert f"error: no suite at {missing}" in info.stderr and "Traceback" not in info.stderr


def test_invalid_bucket_fails_at_once_naming_the_url(s3: Any, suite_url: str) -> None:
    t0 = time.monotonic()
    bad = "s3://Not_A_Bucket!/suites/x"
    with pytest.raises(StorageError, match="s3://Not_A_Bucket!/suites/x"):
        open_suite(bad, s3.storage_options)
    # an output bucket the server refuses to create (InvalidBucketName)
    with pytest.raises(AssayError, match=r"s3://UPPERCASE/runs.*InvalidBucketName"):
        run(config(s3, suite_url, "s3://UPPERCASE/runs"))
    assert time.monotonic() - t0 < 10
