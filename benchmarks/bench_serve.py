"""Load on the judge service (`assay serve`) against the same judge called in-process.

The judge is the instant scripted backend (``fake``), so the figures are what the service adds
per request: HTTP and JSON on loopback, auth and rate checks, the ingress-to-replica call,
``serve.batch`` and the Arrow/JSON conversions. For each concurrency, two shapes of request:

* ``single``: one item per request (an application scoring answers one by one);
* ``batched``: ``--batch`` items per request (a pipeline scoring lists).

The in-process baseline sends the same requests, at the same concurrency, straight to a
``JudgeActor`` in this process (no HTTP, no Ray). Results, with requests per second, items per
second and p50/p95/p99 latency, and the service/in-process ratio, go to
benchmarks/results/serve.json (or --out). Loopback only; bounded by --requests per case and
--max-seconds per case.

    python benchmarks/bench_serve.py
    python benchmarks/bench_serve.py --concurrency 1 8 32 --requests 400 --batch 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import yaml

from assay.actors.workers import JUDGE_TASK_SCHEMA, JudgeActor
from assay.engine.config import JudgeSpec

ASSAY = shutil.which("assay") or "assay"

ROOT = Path(__file__).parents[1]
TOKEN = "bench-token"
JUDGE = {
    "name": "fake",
    "format": "llama-guard-3",
    "backend": "fake",
    "model": "fake",
    "options": {"replies": [["bomb", "unsafe\nS1"], ["", "safe"]]},
    "resources": {"replicas": 1, "num_cpus": 1},
}


def _items(n: int, offset: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"benchmark prompt {offset + i}: how would one do thing {i}?",
            "response": "I would rather not say." if i % 3 else "Sure: first, get a bomb...",
            "id": str(offset + i),
        }
        for i in range(n)
    ]


def _stats(latencies: list[float], seconds: float, items: int) -> dict[str, Any]:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "items": items,
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "items_per_second": round(items / seconds, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


async def _load(
    call: Callable[[list[dict[str, Any]]], Awaitable[int]],
    concurrency: int,
    requests: int,
    size: int,
    max_seconds: float,
) -> dict[str, Any]:
    """``requests`` calls of ``size`` items, ``concurrency`` at a time (stops at max_seconds)."""
    latencies: list[float] = []
    items = 0
    next_i = 0
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal items, next_i
        while next_i < requests and time.perf_counter() < deadline:
            batch = _items(size, next_i * size)
            next_i += 1
            t0 = time.perf_counter()
            got = await call(batch)  # not `items += await ...`: that reads items before
            latencies.append(time.perf_counter() - t0)
            items += got

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _stats(latencies, time.perf_counter() - t0, items)


async def _service_case(
    url: str, concurrency: int, requests: int, size: int, max_seconds: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        await http.post("/v1/score", json={"items": _items(1, 0)})  # warm the connection

        async def call(batch: list[dict[str, Any]]) -> int:
            r = await http.post("/v1/score", json={"items": batch})
            r.raise_for_status()
            return len(r.json()["verdicts"])

        return await _load(call, concurrency, requests, size, max_seconds)


async def _health_case(url: str, requests: int, max_seconds: float) -> dict[str, Any]:
    """The floor: GET /v1/health (proxy and ingress, no auth, no judge call), one at a time."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await http.get("/v1/health")

        async def call(batch: list[dict[str, Any]]) -> int:
            (await http.get("/v1/health")).raise_for_status()
            return 0

        return await _load(call, 1, requests, 1, max_seconds)


async def _inprocess_case(
    actor: JudgeActor, concurrency: int, requests: int, size: int, max_seconds: float
) -> dict[str, Any]:
    async def call(batch: list[dict[str, Any]]) -> int:
        table = pa.Table.from_pydict(
            {
                "test_id": [b["id"] for b in batch],
                "target": [""] * len(batch),
                "prompt": [b["prompt"] for b in batch],
                "response": [b["response"] for b in batch],
                "lang": ["en"] * len(batch),
                "generation_error": [None] * len(batch),
            },
            schema=JUDGE_TASK_SCHEMA,
        )
        verdicts = await actor.judge(table)
        return len(verdicts.to_pylist())  # the service turns rows into JSON; so does this

    return await _load(call, concurrency, requests, size, max_seconds)


def _start_service(
    tmp: Path, max_batch_size: int, batch_wait_s: float
) -> tuple[subprocess.Popen[bytes], str, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "port": port,
                "judges": [JUDGE],
                "limits": {"rate_limit_per_minute": None},
                "batching": {
                    "max_batch_size": max_batch_size,
                    "batch_wait_timeout_s": batch_wait_s,
                },
            }
        )
    )
    log = tmp / "serve.out"
    env = {**os.environ, "ASSAY_SERVE_TOKENS": TOKEN}
    proc = subprocess.Popen(
        [ASSAY, "serve", str(config)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while "ready at" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"assay serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}", log


def main() -> None:
    """Runs the cases and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="Requests per case.")
    parser.add_argument("--batch", type=int, default=64, help="Items per batched request.")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="Cap per case.")
    parser.add_argument("--max-batch-size", type=int, default=8, help="serve.batch size.")
    parser.add_argument("--batch-wait-s", type=float, default=0.005, help="serve.batch wait.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()

    actor = JudgeActor(JudgeSpec.model_validate(JUDGE))
    with tempfile.TemporaryDirectory() as tmpdir:
        t0 = time.perf_counter()
        proc, url, _ = _start_service(Path(tmpdir), args.max_batch_size, args.batch_wait_s)
        startup = time.perf_counter() - t0
        cases: list[dict[str, Any]] = []
        try:
            floor = asyncio.run(_health_case(url, args.requests, args.max_seconds))
            print(
                f"floor    c=1   GET /v1/health {floor['requests_per_second']:8.1f} req/s "
                f"p50 {floor['p50_ms']:7.2f} ms (HTTP proxy + ingress, no judge call)",
                flush=True,
            )
            for shape, size in (("single", 1), ("batched", args.batch)):
                for c in args.concurrency:
                    n = args.requests if shape == "single" else max(c, args.requests // 4)
                    svc = asyncio.run(_service_case(url, c, n, size, args.max_seconds))
                    inp = asyncio.run(_inprocess_case(actor, c, n, size, args.max_seconds))
                    case = {
                        "shape": shape,
                        "items_per_request": size,
                        "concurrency": c,
                        "service": svc,
                        "in_process": inp,
                        "throughput_ratio": round(
                            svc["items_per_second"] / inp["items_per_second"], 4
                        ),
                        "p50_latency_ratio": round(svc["p50_ms"] / max(inp["p50_ms"], 1e-3), 1),
                    }
                    cases.append(case)
                    print(
                        f"{shape:8s} c={c:<3d} service {svc['requests_per_second']:8.1f} req/s "
                        f"{svc['items_per_second']:9.1f} items/s p50 {svc['p50_ms']:7.2f} ms "
                        f"p99 {svc['p99_ms']:7.2f} ms | in-process "
                        f"{inp['items_per_second']:10.1f} items/s | ratio "
                        f"{case['throughput_ratio']:.4f}",
                        flush=True,
                    )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    result = {
        "benchmark": "serve",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        },
        "judge": "fake (instant scripted backend): the figures are the service's own cost",
        "service_startup_seconds": round(startup, 1),
        "max_batch_size": args.max_batch_size,
        "batch_wait_timeout_s": args.batch_wait_s,
        "floor_health_c1": floor,
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
