"""`assay run` with the vLLM backend for targets and judges, checked against transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from assay.cluster.run import run
from assay.engine.config import RunConfig

STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
ROWS = 48
VLLM_OPTIONS = {
    "dtype": "float32",
    "max_model_len": 1024,
    "kv_cache_memory_bytes": 64 << 20,
    "max_num_seqs": 64,
    "enforce_eager": True,
}


def _config(tmp_path: Path, models: dict[str, Path], backend: str) -> RunConfig:
    options: dict[str, Any] = VLLM_OPTIONS if backend == "vllm" else {"dtype": "float32"}
    return RunConfig.model_validate(
        {
            "suite": {"url": str(STARTER), "format": "jsonl", "limit": ROWS},
            "output": str(tmp_path / backend),
            "shard_size": 16,
            "progress": False,
            "executor": {"kind": "local"},
            "targets": [
                {
                    "name": "t",
                    "backend": backend,
                    "model": str(models["tiny-target-a"]),
                    "options": options,
                    "sampling": {"max_tokens": 12},
                }
            ],
            "judges": [
                {
                    "name": "lg",
                    "format": "llama-guard-3",
                    "backend": backend,
                    "model": str(models["tiny-judge-a"]),
                    "options": options,
                    "sampling": {"max_tokens": 6},
                }
            ],
        }
    )


def _rows(result: Any, stage: str) -> dict[tuple[str, ...], dict[str, Any]]:
    table = ds.dataset(Path(result.url) / stage, format="parquet").to_table().to_pylist()
    return {(r["test_id"], r["target"]) + ((r["judge"],) if "judge" in r else ()): r for r in table}


def test_run_with_vllm_matches_transformers(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    with_vllm = run(_config(tmp_path, tiny_models, "vllm"))
    with_hf = run(_config(tmp_path, tiny_models, "transformers"))
    assert with_vllm.rows_generated == ROWS and with_vllm.rows_judged == ROWS
    gens_v, gens_h = _rows(with_vllm, "generations"), _rows(with_hf, "generations")
    assert gens_v.keys() == gens_h.keys() and len(gens_v) == ROWS
    assert all(g["error"] is None for g in gens_v.values())
    # Greedy decoding of the same model: the same tokens. vLLM's incremental detokenizer holds
    # back an incomplete multi-byte character at the very end that transformers decodes as
    # U+FFFD, so vLLM's text is a prefix of transformers' text, with the same token count.
    for key, g in gens_v.items():
        h = gens_h[key]
        assert g["output_tokens"] == h["output_tokens"], key
        assert h["response"].startswith(g["response"]), (g["response"], h["response"])
    same = [k for k in gens_v if gens_v[k]["response"] == gens_h[k]["response"]]
    assert len(same) >= ROWS // 2
    verdicts_v, verdicts_h = _rows(with_vllm, "verdicts"), _rows(with_hf, "verdicts")
    assert len(verdicts_v) == ROWS
    for key in same:
        v, h = verdicts_v[key + ("lg",)], verdicts_h[key + ("lg",)]
        assert v["risk_score"] is not None
        assert abs(v["risk_score"] - h["risk_score"]) < 1e-3, key
