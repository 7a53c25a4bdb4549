"""Run-folder integrity on a real S3 server: the cheap check's listing sizes, the plan
fingerprint after a lost manifest, checksums on read, and `assay verify` over s3://."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from assay.cluster.run import GENERATIONS, VERDICTS, run
from assay.engine.config import RunConfig
from assay.engine.errors import StorageError
from assay.engine.importers import ImportConfig, import_suite
from assay.engine.metrics import load_metrics, open_run
from assay.engine.runfolder import RunFolder

pytestmark = pytest.mark.slow

STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
N = 176  # rows of the starter suite
ASSAY = str(Path(sys.executable).parent / "assay")


@pytest.fixture(scope="module")
def suite_url(s3_server: Any) -> str:
    """The starter suite, imported once into the session's bucket."""
    url = s3_server.url("suites", "starter-integrity")
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


def config(s3: Any, suite: str, output: str, shard_size: int) -> RunConfig:
    judge = {"format": "llama-guard-3", "backend": "fake", "model": "lg"}
    return RunConfig.model_validate(
        {
            "suite": {"url": suite, "format": "suite"},
            "output": output,
            "shard_size": shard_size,
            "executor": {"kind": "local"},
            "progress": False,
            "storage_options": s3.storage_options,
            "targets": [
                {"name": "t-echo", "backend": "fake", "model": "echo"},
                {"name": "t-comply", "backend": "fake", "model": "comply"},
            ],
            "judges": [
                {**judge, "name": "lg", "options": {"replies": [["", "safe"]]}},
                {**judge, "name": "q3", "options": {"replies": [["", "unsafe\nS2"]]}},
            ],
        }
    )


def check_exactly_once(s3: Any, url: str) -> None:
    """Each (test, target) once and each (test, target, judge) once, read with plain pyarrow."""
    for stage, names, n in (
        (GENERATIONS, ["test_id", "target"], N * 2),
        (VERDICTS, ["test_id", "target", "judge"], N * 4),
    ):
        path = url.removeprefix("s3://") + f"/{stage}"
        table = ds.dataset(path, format="parquet", filesystem=s3.pyarrow_fs()).to_table()
        keys = list(zip(*(table.column(c).to_pylist() for c in names), strict=True))
        assert len(keys) == len(set(keys)) == n, stage


def verify(s3: Any, url: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ASSAY, "verify", url, "--storage-option", f"endpoint_url={s3.endpoint}", *more],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_integrity_on_s3(s3: Any, suite_url: str) -> None:
    cfg = config(s3, suite_url, s3.url("runs-integrity"), shard_size=16)
    first = run(cfg)
    assert first.shards_total == 11
    fs = s3.s3fs()
    root = first.url.removeprefix("s3://")
    r = verify(s3, first.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK; 22 part(s)" in r.stdout

    # a lost manifest and another shard size: nothing of the old plan counts or stays
    fs.rm(f"{root}/manifest.json")
    fs.rm(f"{root}/summary.json")
    again = run(config(s3, suite_url, s3.url("runs-integrity"), shard_size=32))
    assert again.url == first.url
    assert (again.shards_total, again.shards_run, again.shards_done_before) == (6, 6, 0)
    check_exactly_once(s3, again.url)  # plain pyarrow over s3: no stale part left
    folder = open_run(again.url, s3.storage_options)
    summary = load_metrics(folder, s3.storage_options)
    assert summary["complete"] and summary["targets"]["t-echo"]["lg"]["safety"]["n"] == N

    # a truncated part (one PUT from outside): the listing's size gives it away
    part = f"{root}/{VERDICTS}/part-00002.parquet"
    fs.pipe_file(part, fs.cat_file(part)[:-32])
    rf = RunFolder(cfg.output, again.run_id, cfg.storage_options)
    assert 2 not in rf.done_shards(VERDICTS)
    assert rf.current_summary() is None  # never served stale
    r = verify(s3, again.url)
    assert r.returncode == 1 and "verdicts/part-00002.parquet" in r.stdout
    redo = run(config(s3, suite_url, s3.url("runs-integrity"), shard_size=32))
    assert redo.shards_run == 1
    # corrupted at the same size: every read names the file
    gen = f"{root}/{GENERATIONS}/part-00001.parquet"
    data = bytearray(fs.cat_file(gen))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(gen, bytes(data))
    rf = RunFolder(cfg.output, again.run_id, cfg.storage_options)
    with pytest.raises(StorageError, match=r"generations/part-00001\.parquet"):
        rf.read_stage_part(GENERATIONS, 1)
    r = verify(s3, again.url, "--repair", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 1 and [p["url"].rsplit("/", 2)[-2:] for p in report["problems"]] == [
        ["generations", "part-00001.parquet"]
    ]
    assert run(config(s3, suite_url, s3.url("runs-integrity"), shard_size=32)).shards_run == 1
    assert verify(s3, again.url).returncode == 0
    check_exactly_once(s3, again.url)
