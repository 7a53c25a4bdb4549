"""Run folders for the metrics, comparison and report tests, built with the fake backend.

The fake target answers from a script keyed on substrings of the prompt, and the fake judges
label from a script keyed on substrings of the rendered judge prompt (which holds the answer),
so a test decides exactly which answers are unsafe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from assay.cluster.run import RunResult, run
from assay.engine.attacks.derive import derive_all
from assay.engine.config import RunConfig
from assay.engine.importers import ImportConfig, import_suite
from assay.engine.records import TestCase
from assay.engine.suite import open_suite, write_suite

ROOT = Path(__file__).parents[1]
STARTER = ROOT / "examples" / "starter_suite.jsonl"

REFUSE = "I can't help with that."
COMPLY = "Sure, here is how: step one..."
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def starter_cases(tmp: Path) -> list[TestCase]:
    """The 176 base prompts of the starter suite (8 L1 dimensions, en and zh)."""
    out = tmp / "_starter"
    if not (out / "suite.json").exists():
        import_suite(
            ImportConfig(format="jsonl", source=str(STARTER), output=str(out), overwrite=True)
        )
    return list(open_suite(str(out)).iter_cases())


def tagged_suite(tmp: Path, name: str = "tagged") -> str:
    """The starter prompts, each prefixed with its L1 dimension (``[Cybersecurity] ...``)."""
    cases = [
        TestCase(text=f"[{c.l1}] {c.text}", lang=c.lang, risk=c.risk, meta=c.meta)
        for c in starter_cases(tmp)
    ]
    url = str(tmp / name)
    write_suite(url, cases, name=name, overwrite=True)
    return url


def attack_suite(
    tmp: Path, attacked: int = 24, name: str = "attacked", base_rows: int | None = None
) -> str:
    """The starter prompts (the first ``base_rows``) plus the 10 attacks on the first
    ``attacked`` of them (with base_id), plus two attack rows without a base_id (as S-Eval
    imports have)."""
    base = starter_cases(tmp)[:base_rows]
    attacks = derive_all(base[:attacked], "all", seed=0)
    orphans = [
        TestCase(
            text=f"orphan attack {i}: how to pick a lock",
            lang="en",
            risk=base[0].risk,
            attack="positive_induction",
        )
        for i in range(2)
    ]
    url = str(tmp / name)
    write_suite(url, [*base, *attacks, *orphans], name=name, overwrite=True)
    return url


def judge_lg(**over: Any) -> dict[str, Any]:
    """A Llama Guard 3 judge: unsafe when the answer complies, safe otherwise."""
    spec = {
        "name": "lg",
        "format": "llama-guard-3",
        "backend": "fake",
        "model": "lg",
        "options": {
            "replies": [[COMPLY[:17], "unsafe\nS2"], ["当然", "unsafe\nS1"], ["", "safe"]],
            "label_logprobs": [[COMPLY[:17], {"safe": -2.3, "unsafe": -0.1}]],
        },
    }
    spec.update(over)
    return spec


def config(
    tmp: Path,
    suite_url: str,
    targets: list[dict[str, Any]],
    judges: list[dict[str, Any]],
    **over: Any,
) -> RunConfig:
    """A local run config with the fake backend; ``over`` replaces top-level fields."""
    data: dict[str, Any] = {
        "suite": {"url": suite_url},
        "output": str(tmp / "runs"),
        "shard_size": 40,
        "executor": {"kind": "local"},
        "progress": False,
        "retry_backoff_s": 0.0,
        "targets": targets,
        "judges": judges,
    }
    data.update(over)
    return RunConfig.model_validate(data)


def target(name: str, replies: list[list[str]]) -> dict[str, Any]:
    return {"name": name, "backend": "fake", "model": name, "options": {"replies": replies}}


def mixed_run(tmp: Path, suite: str | None = None) -> RunResult:
    """Two targets, two judges with varied labels, unparsable outputs and failed generations."""
    suite = suite or attack_suite(tmp)
    targets = [
        target("t-mixed", [["how", COMPLY], ["怎么", "当然，方法如下"], ["", REFUSE]]),
        {
            "name": "t-flaky",
            "backend": "fake",
            "model": "t-flaky",
            "options": {
                "replies": [["Pretend", COMPLY], ["", REFUSE]],
                "fail_substring": "password",
            },
        },
    ]
    judges = [
        judge_lg(),
        {
            "name": "q3",
            "format": "qwen3guard",
            "backend": "fake",
            "model": "q3",
            "options": {
                "replies": [
                    [COMPLY[:17], "Unsafe\nCategories: Violent"],
                    ["当然", "Controversial\nCategories: None"],
                    ["help with", "Safe\nCategories: None"],
                    ["", "no idea"],
                ]
            },
        },
    ]
    return run(config(tmp, suite, targets, judges))


def joined(run_url: str, suite_url: str) -> pa.Table:
    """Every verdict of a run joined to its suite row, read with plain pyarrow."""
    verdicts = ds.dataset(Path(run_url) / "verdicts", format="parquet").to_table(
        columns=["test_id", "target", "judge", "label", "risk_score", "parse_ok", "error"]
    )
    suite = ds.dataset(suite_url, format="parquet").to_table(
        columns=["test_id", "lang", "risk", "attack", "base_id"]
    )
    out = verdicts.join(suite, keys="test_id", join_type="inner")
    assert out.num_rows == verdicts.num_rows
    l1 = pc.list_element(pc.split_pattern(out.column("risk"), "/"), 0)
    return out.append_column("l1", l1)
