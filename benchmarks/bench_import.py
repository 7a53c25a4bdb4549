"""Import throughput and memory: a synthetic S-Eval-sized release (20k base + 200k attack rows).

Writes JSON to benchmarks/results/import.json (or --out). Run:

    python benchmarks/bench_import.py            # full size: 220,000 rows
    python benchmarks/bench_import.py --base 2000  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from seval_data import write_seval_release  # noqa: E402

from assay.engine.importers import ImportConfig, import_suite  # noqa: E402
from assay.engine.suite import open_suite  # noqa: E402


def main() -> None:
    """Generates the release, imports it, scans it, and writes the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=int, default=10_000, help="base prompts per language")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "import.json"))
    parser.add_argument("--generate-into", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_into:  # child process: keeps generation out of the parent's peak RSS
        write_seval_release(Path(args.generate_into), n_base=args.base, zipped_attacks=True)
        return
    work = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    try:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--base",
                str(args.base),
                "--generate-into",
                str(work / "src"),
            ],
            check=True,
        )
        n = {"base": 2 * args.base, "attack": 20 * args.base}
        src_bytes = sum(p.stat().st_size for p in (work / "src").iterdir())
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        report = import_suite(
            ImportConfig(format="s-eval", source=str(work / "src"), output=str(work / "suite"))
        )
        t_import = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        counts, fp = open_suite(str(work / "suite")).scan()
        t_scan = time.perf_counter() - t0
        assert fp == report.fingerprint and counts.rows == n["base"] + n["attack"]
        out_bytes = sum(p.stat().st_size for p in (work / "suite").iterdir())
        result = {
            "benchmark": "import_seval",
            "rows": report.imported,
            "source_bytes": src_bytes,
            "suite_bytes": out_bytes,
            "import_seconds": round(t_import, 3),
            "import_rows_per_second": round(report.imported / t_import),
            "scan_seconds": round(t_scan, 3),
            "scan_rows_per_second": round(counts.rows / t_scan),
            "peak_rss_mib_before": round(rss0 / 1024, 1),
            "peak_rss_mib_after_import": round(rss1 / 1024, 1),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
