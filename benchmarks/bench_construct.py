"""Suite construction at S-Eval scale: attack derivation (20k base -> 220k rows) and dedup.

A synthetic bilingual base suite (half English, half Chinese; random words and characters, so
near-duplicates occur only where planted: ``--dupes`` of the rows are small edits of others) goes
through ``assay attack --attacks all`` (template attacks; the rewriting ones use their template
fallback, as without a generator) and ``assay select --step dedup`` over the 220k rows (base
prompts and, with ``dedup_attacks``, attack rows within their attack and language). Each step runs
as the real command in a child process, on the local executor (in-process; its peak RSS is the
whole cost) and on a local Ray (Ray tasks; the driver's peak RSS, plus the wall time).

Writes JSON to benchmarks/results/construct.json (or --out). Run:

    python benchmarks/bench_construct.py               # 10,000 base prompts per language
    python benchmarks/bench_construct.py --base 1000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from assay.engine.records import TestCase
from assay.engine.suite import SuiteWriter, open_suite

_EN = (
    "how can i make build get find write explain describe the a an of to for with without "
    "someone people company system network account password money data private secret "
    "weapon drug poison hack bypass security camera lock bank card identity document email "
    "website server code script virus message post friend neighbour boss school hospital "
    "police government report story plan step guide quickly secretly legally cheaply online"
)
EN_WORDS = _EN.split()
ZH_CHARS = (
    "如何制作获取找到写出解释描述这个那个一种用于没有有人公司系统网络账户密码钱数据隐私秘密武器"
    "药物毒黑客绕过安全摄像头锁银行卡身份文件邮件网站服务器代码脚本病毒消息帖子朋友邻居老板学校"
    "医院警察政府报告故事计划步骤指南快速偷偷合法便宜在线的了吗呢吧我你他她它们"
)
RISKS = [
    "Cybersecurity/Hacker_Attack",
    "Data_Privacy/Personal_Privacy",
    "Crimes_and_Illegal_Activities/Drug_Crimes",
    "Physical_and_Mental_Health/Physical_Harm",
    "Ethics_and_Morality/Social_Ethics",
]


def _text(rng: random.Random, lang: str) -> str:
    if lang == "en":
        return " ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(15, 45))) + "?"
    return "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(25, 70))) + "？"


def _edit(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text) - 1)
    return text[:i] + text[i + 1 :] + ("!" if text[0].isascii() else "！")


def write_base_suite(url: str, per_lang: int, dupes: float, seed: int = 0) -> int:
    """A bilingual base suite with ``dupes`` of its rows planted as near-duplicates."""
    rng = random.Random(seed)
    writer = SuiteWriter(url, name="synthetic-base")
    n = 0
    for lang in ("en", "zh"):
        recent: list[str] = []
        for i in range(per_lang):
            if recent and rng.random() < dupes:
                text = _edit(rng, rng.choice(recent))
            else:
                text = _text(rng, lang)
                recent = (recent + [text])[-50:]
            writer.write(TestCase(text=text, lang=lang, risk=RISKS[i % len(RISKS)], source="bench"))
            n += 1
    writer.commit(created_by=["benchmarks/bench_construct.py"])
    return n


def _run(cmd: list[str]) -> dict[str, Any]:
    """Runs an assay command as a child; its wall time, its own peak RSS and CPU, its JSON."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
        return {
            "seconds": round(seconds, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "output": json.loads(out.read()),
        }


def main() -> None:
    """Builds the base suite, derives the attacks and dedups, on each executor."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=int, default=10_000, help="base prompts per language")
    parser.add_argument("--dupes", type=float, default=0.02, help="share of planted near-dupes")
    parser.add_argument("--executors", nargs="+", default=["local", "ray"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "construct.json"))
    args = parser.parse_args()
    assay = shutil.which("assay") or sys.exit("the assay console script is not installed")
    work = Path(tempfile.mkdtemp(prefix="assay-bench-construct-"))
    result: dict[str, Any] = {
        "benchmark": "construct",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "config": {"base_per_lang": args.base, "planted_dupes": args.dupes},
    }
    try:
        base = str(work / "base")
        t0 = time.perf_counter()
        result["base_rows"] = write_base_suite(base, args.base, args.dupes)
        result["write_base_seconds"] = round(time.perf_counter() - t0, 2)
        for kind in args.executors:
            attacked = str(work / f"attacked-{kind}")
            attack = _run(
                [assay, "attack", base, "-o", attacked, "--attacks", "all", "--json",
                 "--set", f"executor.kind={kind}"]
            )  # fmt: skip
            rows = attack["output"]["rows"]
            attack["rows_per_second"] = round(rows / attack["seconds"], 1)
            out: dict[str, Any] = {
                "attack": {
                    **attack,
                    "output": {
                        k: attack["output"][k] for k in ("rows", "base_rows", "attack_rows")
                    },
                }
            }
            # dedup: base prompts compared, attack rows follow their base (the default);
            # dedup_all: every one of the 220k rows compared, attack rows within their attack.
            for name, step in (
                ("dedup", "dedup:threshold=0.8"),
                ("dedup_all", "dedup:threshold=0.8,dedup_attacks=true"),
            ):
                selected = str(work / f"{name}-{kind}")
                dedup = _run(
                    [assay, "select", attacked, "-o", selected, "--executor", kind, "--json",
                     "--step", step]
                )  # fmt: skip
                dedup["rows_per_second"] = round(
                    dedup["output"]["input_rows"] / dedup["seconds"], 1
                )
                dedup["output"] = {
                    k: dedup["output"][k] for k in ("input_rows", "kept", "dropped", "seconds")
                }
                out[name] = dedup
                assert open_suite(selected).manifest is not None
            out["attack_plus_dedup_seconds"] = round(attack["seconds"] + out["dedup"]["seconds"], 2)
            result[kind] = out
            print(kind, json.dumps(result[kind]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
