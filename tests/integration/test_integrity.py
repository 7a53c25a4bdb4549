"""Run-folder integrity as a user meets it: the `assay` console script over real run folders
(fake backend, local executor), broken the ways issue 12 found, never reporting a wrong result."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

ASSAY = shutil.which("assay")
STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
N = 176  # rows of the starter suite
pytestmark = pytest.mark.skipif(ASSAY is None, reason="the assay console script is not installed")

CONFIG = f"""\
suite: {{url: {STARTER}, format: jsonl}}
shard_size: 16
executor: {{kind: local}}
progress: false
retry_backoff_s: 0
targets:
  - {{name: t-echo, backend: fake, model: echo, max_batch: 8}}
  - name: t-comply
    backend: fake
    model: comply
    options: {{replies: [["", "Sure, here is how: step one..."]]}}
judges:
  - name: lg
    format: llama-guard-3
    backend: fake
    model: lg
    options: {{replies: [["Sure, here is how", "unsafe\\nS2"], ["", "safe"]]}}
  - name: q3
    format: qwen3guard
    backend: fake
    model: q3
    options: {{replies: [["", "Controversial\\nCategories: None"]]}}
"""


def assay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASSAY, *args], capture_output=True, text=True, timeout=300)  # type: ignore[list-item]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG + f"output: {tmp_path / 'runs'}\n")
    return path


def run_ok(cfg: Path, *sets: str) -> tuple[Path, str]:
    args = [a for s in sets for a in ("--set", s)]
    r = assay("run", str(cfg), "--json", *args)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return Path(out["url"]), r.stdout + r.stderr


def shards_run(cfg: Path, *sets: str) -> int:
    _, out = run_ok(cfg, *sets)
    return int(json.loads(out[: out.rindex("}") + 1])["shards_run"])


def report(folder: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "report.json"
    r = assay("report", str(folder), "--json", str(out))
    assert r.returncode == 0, r.stderr
    summary: dict[str, Any] = json.loads(out.read_text())["summary"]
    return summary


def verify(folder: Path) -> subprocess.CompletedProcess[str]:
    return assay("verify", str(folder))


def keys(folder: Path) -> list[tuple[str, str, str]]:
    """Every verdict key a plain pyarrow.dataset read of the folder sees."""
    table = ds.dataset(folder / "verdicts", format="parquet").to_table()
    return list(
        zip(*(table.column(c).to_pylist() for c in ("test_id", "target", "judge")), strict=True)
    )


def test_a_lost_manifest_and_another_shard_size_redo_the_run(cfg: Path, tmp_path: Path) -> None:
    """Finding 1: was "nothing to do, all 6 shards are done", 64 rows, complete, 100% on n=16."""
    folder, _ = run_ok(cfg)
    assert len(keys(folder)) == N * 4
    (folder / "manifest.json").unlink()
    (folder / "summary.json").unlink()
    again, out = run_ok(cfg, "shard_size=32")
    assert again == folder
    result = json.loads(out[: out.rindex("}") + 1])
    assert (result["shards_total"], result["shards_run"], result["shards_done_before"]) == (6, 6, 0)
    assert "committed under another plan" in out  # each stale marker is named as it goes
    summary = report(folder, tmp_path)
    assert summary["complete"] is True and summary["shards_done"] == 6
    assert summary["targets"]["t-echo"]["lg"]["safety"]["n"] == N
    assert summary["targets"]["t-comply"]["lg"]["safety"]["n"] == N
    ks = keys(folder)  # no part of the old plan is left for a plain reader either
    assert len(ks) == len(set(ks)) == N * 4
    assert sorted(p.name for p in (folder / "verdicts").iterdir()) == [
        f"part-{i:05d}.parquet" for i in range(6)
    ]
    r = verify(folder)
    assert r.returncode == 0, r.stdout
    assert "OK; 12 part(s)" in r.stdout and "verdicts 6/6" in r.stdout


def test_a_part_replaced_by_another_shards_part_is_redone(cfg: Path, tmp_path: Path) -> None:
    """Finding 1, second half: a part swapped for another shard's was mis-joined."""
    folder, _ = run_ok(cfg)
    shutil.copyfile(folder / "verdicts/part-00001.parquet", folder / "verdicts/part-00000.parquet")
    summary = report(folder, tmp_path)
    assert summary["complete"] is False and summary["shards_done"] == 10  # not mis-joined
    r = verify(folder)
    assert r.returncode == 1
    assert "BAD " in r.stdout and "verdicts/part-00000.parquet" in r.stdout
    assert shards_run(cfg) == 1
    assert verify(folder).returncode == 0
    assert report(folder, tmp_path)["complete"] is True
    # the part and its marker copied together: the marker names another shard
    shutil.copyfile(folder / "verdicts/part-00003.parquet", folder / "verdicts/part-00002.parquet")
    shutil.copyfile(folder / "_done/verdicts-00003", folder / "_done/verdicts-00002")
    r = verify(folder)
    assert r.returncode == 1 and "the marker names verdicts shard 3" in r.stdout
    assert shards_run(cfg) == 1
    ks = keys(folder)
    assert len(ks) == len(set(ks)) == N * 4


def test_truncated_deleted_and_corrupted_parts_are_noticed(cfg: Path, tmp_path: Path) -> None:
    """Finding 2: `assay run` said "nothing to do", `assay report` failed with a raw
    ArrowInvalid / ZSTD error naming no file, or showed the stale summary.json."""
    folder, _ = run_ok(cfg)
    part = folder / "verdicts/part-00002.parquet"
    part.write_bytes(part.read_bytes()[:-64])  # truncated
    (folder / "generations/part-00005.parquet").unlink()  # deleted
    summary = report(folder, tmp_path)  # the summary is stale: recomputed, not served
    assert summary["complete"] is False and summary["shards_done"] == 10  # shard 2 is out
    r = verify(folder)
    assert r.returncode == 1
    bad = [line for line in r.stdout.splitlines() if line.startswith("BAD ")]
    assert any("verdicts/part-00002.parquet" in line for line in bad), r.stdout
    assert any("_done/generations-00005" in line or "part-00005" in line for line in bad)
    assert shards_run(cfg) == 2  # both redone; the rest stay
    assert verify(folder).returncode == 0

    # corrupted in place, same size: the cheap check cannot see it, every reader can
    gen = folder / "generations/part-00003.parquet"
    data = bytearray(gen.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gen.write_bytes(bytes(data))
    r = verify(folder)
    assert r.returncode == 1
    assert "generations/part-00003.parquet: checksum does not match its marker" in r.stdout
    (folder / "summary.json").unlink()
    r = assay("report", str(folder))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "generations/part-00003.parquet" in r.stderr
    r = assay("verify", str(folder), "--repair")
    assert r.returncode == 1 and "removed " in r.stdout
    assert shards_run(cfg) == 1
    assert verify(folder).returncode == 0
    assert report(folder, tmp_path)["complete"] is True


def test_a_deleted_marker_never_serves_the_stale_summary(cfg: Path, tmp_path: Path) -> None:
    """Finding 2: after a deleted marker, `assay report` showed the old summary.json."""
    folder, _ = run_ok(cfg)
    assert report(folder, tmp_path)["complete"] is True
    (folder / "_done/verdicts-00004").unlink()
    summary = report(folder, tmp_path)
    assert summary["complete"] is False and summary["shards_done"] == 10
    assert summary["targets"]["t-echo"]["lg"]["safety"]["n"] == N - 16
    r = verify(folder)
    assert r.returncode == 1
    assert "manifest.json: says completed but only 10/11" in r.stdout
    assert "summary.json: stale" in r.stdout
    assert "verdicts/part-00004.parquet: no valid completion marker" in r.stdout
    assert shards_run(cfg) == 1
    assert report(folder, tmp_path)["complete"] is True


def test_verify_json_and_a_folder_without_a_run(tmp_path: Path, cfg: Path) -> None:
    folder, _ = run_ok(cfg)
    r = assay("verify", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["problems"] == [] and data["parts_checked"] == 22
    r = assay("verify", str(tmp_path / "runs" / "run-none"))
    assert r.returncode == 1 and r.stderr.startswith("error: no run at")


def test_a_taxonomy_that_does_not_exist_stops_the_run(cfg: Path, tmp_path: Path) -> None:
    """`taxonomy:` was hashed into the run id but never read: a missing file ran with exit 0."""
    r = assay("run", str(cfg), "--set", f"taxonomy={tmp_path / 'nope.yaml'}")
    assert r.returncode != 0
    assert "nope.yaml" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_verify_has_help_with_an_example() -> None:
    r = assay("verify", "--help")
    assert r.returncode == 0 and "Example" in r.stdout and "--repair" in r.stdout


def test_a_taxonomy_is_used_for_import_and_per_leaf_metrics(tmp_path: Path) -> None:
    """`taxonomy:` resolves the source's risks at import and the summary reports L3/L4 leaves."""
    taxonomy = Path(__file__).parents[2] / "examples" / "taxonomy-l3-example.yaml"
    src = tmp_path / "leaves.jsonl"
    risks = [
        "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing/Precursor_Chemicals",
        "drug trafficking",  # a name: resolved through the taxonomy to its canonical path
        "Cybersecurity/Hacker_Attack/Phishing",
    ]
    src.write_text(
        "".join(
            json.dumps({"text": f"question {i} about {r}?", "lang": "en", "risk": r}) + "\n"
            for i, r in enumerate(risks * 2)
        )
    )
    path = tmp_path / "leaves.yaml"
    path.write_text(
        f"suite: {{url: {src}, format: jsonl}}\noutput: {tmp_path / 'runs'}\n"
        f"taxonomy: {taxonomy}\nexecutor: {{kind: local}}\nprogress: false\n"
        "targets: [{name: t, backend: fake, model: echo}]\n"
        "judges: [{name: lg, format: llama-guard-3, backend: fake, model: lg, "
        'options: {replies: [["", "safe"]]}}]\n'
    )
    folder, _ = run_ok(path)
    lg = report(folder, tmp_path)["targets"]["t"]["lg"]
    assert set(lg["safety_by_l3"]) == {
        "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing",
        "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Trafficking",
        "Cybersecurity/Hacker_Attack/Phishing",
    }
    assert set(lg["safety_by_l4"]) == {
        "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing/Precursor_Chemicals"
    }
    assert lg["safety_by_l3"]["Cybersecurity/Hacker_Attack/Phishing"]["n"] == 2
    assert verify(folder).returncode == 0
