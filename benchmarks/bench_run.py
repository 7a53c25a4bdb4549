"""Rows per second of `assay run`, against a plain loop over the same models, in one process.

Two measurements, written as JSON to benchmarks/results/run.json (or --out):

* ``overhead``: an instant scripted backend (``fake``) for targets and judges, so the figure is
  what assay itself costs per row (actors, scheduling, Arrow, Parquet commits), for the in-process
  executor and for Ray.
* ``tiny``: the tiny random-weight transformers models (built offline): `assay run` with one
  target and one judge, against a plain loop that sends the same requests through the same
  backend in the same batch sizes, with no actors and no storage.

    python benchmarks/bench_run.py                 # both
    python benchmarks/bench_run.py --rows 4000 --skip-tiny
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from assay.cluster.run import run  # noqa: E402
from assay.engine.config import RunConfig  # noqa: E402


def _suite(path: Path, rows: int) -> Path:
    langs = ("en", "zh")
    risks = ("Cybersecurity", "Data_Privacy", "Hate_Speech", "Extremism")
    with path.open("w") as f:
        for i in range(rows):
            f.write(
                json.dumps(
                    {
                        "text": f"benchmark prompt number {i}: how would one do thing {i}?",
                        "lang": langs[i % 2],
                        "risk": risks[i % 4],
                    }
                )
                + "\n"
            )
    return path


def _timed_run(cfg: RunConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = run(cfg)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 3),
        "startup_seconds": result.startup_seconds,
        "work_seconds": result.work_seconds,
        "work_verdict_rows_per_second": round(
            result.rows_judged / max(result.work_seconds, 1e-9), 1
        ),
        "verdicts": result.rows_judged,
        "generations": result.rows_generated,
        "verdict_rows_per_second": round(result.rows_judged / seconds, 1),
    }


def overhead(work: Path, rows: int) -> dict[str, Any]:
    """assay's own cost per row with an instant backend."""
    suite = _suite(work / "overhead.jsonl", rows)
    out: dict[str, Any] = {"rows": rows}
    for kind in ("local", "ray"):
        cfg = RunConfig.model_validate(
            {
                "suite": {"url": str(suite), "format": "jsonl"},
                "output": str(work / f"runs-{kind}"),
                "shard_size": 256,
                "max_shards_in_flight": 8,
                "progress": False,
                "executor": {"kind": kind, "num_cpus": 8},
                "targets": [
                    {
                        "name": "t",
                        "backend": "fake",
                        "model": "echo",
                        "max_batch": 64,
                        "resources": {"num_cpus": 0.5},
                    }
                ],
                "judges": [
                    {
                        "name": "j",
                        "format": "llama-guard-3",
                        "backend": "fake",
                        "model": "lg",
                        "max_batch": 64,
                        "options": {"replies": [["", "safe"]]},
                        "resources": {"num_cpus": 0.5},
                    }
                ],
            }
        )
        out[kind] = _timed_run(cfg)
    return out


async def _plain_loop(
    models: dict[str, Path],
    prompts: list[tuple[str, str, str]],
    batch: int,
    max_tokens: int,
    judge_tokens: int,
) -> float:
    from assay.actors.backends.base import BackendSpec, create_backend
    from assay.engine.judges import JudgeItem, get_judge
    from assay.engine.requests import ChatMessage, GenerationRequest, SamplingParams

    target = create_backend(BackendSpec(backend="transformers", model=str(models["tiny-target-a"])))
    judge_backend = create_backend(
        BackendSpec(backend="transformers", model=str(models["tiny-judge-a"]))
    )
    judge = get_judge("llama-guard-3")
    sampling = SamplingParams(max_tokens=max_tokens)
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        reqs = [
            GenerationRequest(
                request_id=tid,
                messages=(ChatMessage(role="user", content=text),),
                sampling=sampling,
            )
            for tid, text, _ in chunk
        ]
        answers = await target.generate(reqs)
        jreqs = [
            judge.build_request(
                JudgeItem(prompt=text, response=a.text, lang=lang),
                request_id=tid,
                sampling=SamplingParams(max_tokens=judge_tokens),
            )
            for (tid, text, lang), a in zip(chunk, answers, strict=True)
        ]
        for r, res in zip(jreqs, await judge_backend.generate(jreqs), strict=True):
            judge.parse(res.text)
            judge.risk_score(res.label_logprobs)
            del r
    seconds = time.perf_counter() - t0
    await target.close()
    await judge_backend.close()
    return seconds


def tiny(work: Path, max_tokens: int = 16, judge_tokens: int = 8) -> dict[str, Any]:
    """assay run vs a plain loop on the tiny transformers models."""
    from make_tiny_models import build_tiny_models

    models = build_tiny_models(work / "models")
    starter = ROOT / "examples" / "starter_suite.jsonl"
    rows = [json.loads(line) for line in starter.read_text().splitlines() if line.strip()]
    prompts = [(str(i), r["text"], r["lang"]) for i, r in enumerate(rows)]
    batch = 16
    plain = asyncio.run(_plain_loop(models, prompts, batch, max_tokens, judge_tokens))
    out: dict[str, Any] = {
        "rows": len(rows),
        "max_tokens": max_tokens,
        "judge_max_tokens": judge_tokens,
        "batch": batch,
        "plain_loop": {"seconds": round(plain, 3), "rows_per_second": round(len(rows) / plain, 1)},
    }
    for kind in ("local", "ray"):
        cfg = RunConfig.model_validate(
            {
                "suite": {"url": str(starter), "format": "jsonl"},
                "output": str(work / f"tiny-{kind}"),
                "shard_size": 32,
                "progress": False,
                "executor": {"kind": kind, "num_cpus": 8},
                "targets": [
                    {
                        "name": "t",
                        "backend": "transformers",
                        "model": str(models["tiny-target-a"]),
                        "max_batch": batch,
                        "sampling": {"max_tokens": max_tokens},
                        "resources": {"num_cpus": 1},
                    }
                ],
                "judges": [
                    {
                        "name": "j",
                        "format": "llama-guard-3",
                        "backend": "transformers",
                        "model": str(models["tiny-judge-a"]),
                        "max_batch": batch,
                        "sampling": {"max_tokens": judge_tokens},
                        "resources": {"num_cpus": 1},
                    }
                ],
            }
        )
        res = _timed_run(cfg)
        res["rows_per_second"] = round(len(rows) / res["seconds"], 1)
        res["ratio_to_plain_loop"] = round(res["seconds"] / plain, 3)
        res["work_ratio_to_plain_loop"] = round(res["work_seconds"] / plain, 3)
        out[kind] = res
    return out


def main() -> None:
    """Runs the measurements and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4096, help="rows for the overhead run")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "run.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="assay-bench-run-"))
    try:
        result: dict[str, Any] = {
            "benchmark": "run",
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "overhead": overhead(work, args.rows),
        }
        if not args.skip_tiny:
            result["tiny"] = tiny(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
