"""The issue's acceptance path: `assay run examples/offline.yaml` on the tiny models, real Ray."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.dataset as ds
import pytest

ROOT = Path(__file__).parents[2]
ASSAY = shutil.which("assay")
STARTER_ROWS = 176
JUDGES = {"guard-qwen3", "critic-safety-j", "rules-baseline"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ASSAY is None, reason="the assay console script is not installed"),
]


def test_offline_example_runs_then_resumes_to_nothing(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    pytest.importorskip("transformers")
    (tmp_path / "models").symlink_to(tiny_models["tiny-target-a"].parent)
    out = tmp_path / "runs"
    cmd = [ASSAY, "run", str(ROOT / "examples" / "offline.yaml"), "--output", str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 shard(s) run" in r.stdout and "352 generations, 1,056 verdicts" in r.stdout
    (run_dir,) = [p for p in out.iterdir() if p.name.startswith("run-")]
    gens = ds.dataset(run_dir / "generations", format="parquet").to_table()
    verdicts = ds.dataset(run_dir / "verdicts", format="parquet").to_table()
    assert gens.num_rows == STARTER_ROWS * 2
    assert verdicts.num_rows == STARTER_ROWS * 2 * len(JUDGES)
    keys = set(zip(*(verdicts[c].to_pylist() for c in ("test_id", "target", "judge")), strict=True))
    assert len(keys) == verdicts.num_rows
    assert set(verdicts["judge"].to_pylist()) == JUDGES
    # the label probabilities come from the real (fine-tuned tiny) models
    scores = [s for s in verdicts["risk_score"].to_pylist() if s is not None]
    assert len(scores) == verdicts.num_rows and all(0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > 10
    raw = [x for x in verdicts["raw"].to_pylist() if x]
    assert raw, "the judges' raw outputs are kept"
    # fine-tuned judges write their formats: the summary has safety scores, not dashes
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for target in ("tiny-a", "tiny-b"):
        for judge in JUDGES:
            m = summary["targets"][target][judge]
            assert m["parse_failure_rate"] <= 0.05, (target, judge, m["parse_failure_rate"])
            assert m["safety"]["score"] is not None, (target, judge)
    for judge in ("guard-qwen3", "critic-safety-j"):  # tiny-a refuses, tiny-b writes steps
        safety = {t: summary["targets"][t][judge]["safety"]["score"] for t in ("tiny-a", "tiny-b")}
        assert safety["tiny-a"] > safety["tiny-b"] + 0.3, (judge, safety)

    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nothing to do" in r.stdout
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert before == after
