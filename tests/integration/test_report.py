"""Metrics, comparison, history and report on real run folders (fake backend, local executor)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner, Result
from report_runs import (
    COMPLY,
    REFUSE,
    attack_suite,
    config,
    joined,
    judge_lg,
    mixed_run,
    starter_cases,
    tagged_suite,
    target,
)

from assay.cluster.cli_report import EXIT_REGRESSION, register
from assay.cluster.run import RunResult, run
from assay.engine.compare import compare_runs
from assay.engine.errors import ConfigError, StorageError
from assay.engine.history import read_history
from assay.engine.metrics import compute_metrics, iter_disagreements, open_run
from assay.engine.records import TestCase
from assay.engine.suite import write_suite


def cli() -> click.Group:
    @click.group()
    def group() -> None:
        pass

    register(group)
    return group


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli(), list(args), catch_exceptions=True)


# -- metrics against plain pyarrow -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, str]:
    tmp = tmp_path_factory.mktemp("mixed")
    suite = attack_suite(tmp)
    return mixed_run(tmp, suite), suite


def share(rows: pa.Table, label: str) -> float:
    labelled = rows.filter(pc.is_valid(rows.column("label")))
    return pc.sum(pc.equal(labelled.column("label"), label)).as_py() / labelled.num_rows


def by(rows: pa.Table, column: str) -> dict[str, pa.Table]:
    return {
        key: rows.filter(pc.equal(rows.column(column), key))
        for key in rows.column(column).unique().to_pylist()
        if key is not None
    }


def test_summary_equals_direct_pyarrow_computation(mixed: tuple[RunResult, str]) -> None:
    result, suite = mixed
    summary = json.loads((Path(result.url) / "summary.json").read_text())
    table = joined(result.url, suite)
    assert summary["rows"] == table.num_rows
    checked = 0
    for (t, j), rows in _groups(table).items():
        m = summary["targets"][t][j]
        base = rows.filter(pc.is_null(rows.column("attack")))
        attack = rows.filter(pc.is_valid(rows.column("attack")))
        assert m["safety"]["score"] == share(base, "safe")
        assert m["attack_success"]["asr"] == share(attack, "unsafe")
        for l1, part in by(base, "l1").items():
            assert m["safety_by_l1"][l1]["score"] == share(part, "safe"), (t, j, l1)
        for lang, part in by(base, "lang").items():
            assert m["safety_by_lang"][lang]["score"] == share(part, "safe")
        for name, part in by(attack, "attack").items():
            assert m["attack_success_by_attack"][name]["asr"] == share(part, "unsafe")
        # adaptive: a base prompt is broken when any of its attack variants was judged unsafe
        linked = attack.filter(pc.is_valid(attack.column("base_id")))
        grouped = linked.append_column(
            "unsafe", pc.fill_null(pc.equal(linked.column("label"), "unsafe"), False)
        ).append_column("labelled", pc.is_valid(linked.column("label")))
        per_base = grouped.group_by("base_id").aggregate([("unsafe", "any"), ("labelled", "any")])
        bases = pc.sum(per_base.column("labelled_any")).as_py()
        broken = pc.sum(per_base.column("unsafe_any")).as_py()
        adaptive = m["adaptive_attack_success"]
        assert (adaptive["n"], adaptive["broken"]) == (bases, broken)
        assert adaptive["attack_rows_without_base_id"] == attack.num_rows - linked.num_rows == 2
        failures = pc.and_(pc.invert(rows.column("parse_ok")), pc.is_null(rows.column("error")))
        assert m["parse_failure_rate"] == pc.sum(failures).as_py() / rows.num_rows
        errors = pc.sum(pc.is_valid(rows.column("error"))).as_py()
        assert m["error_rate"] == errors / rows.num_rows
        checked += 1
    assert checked == 4
    # the scripted outputs give every kind of row: unsafe, controversial, failed generations
    flaky = summary["targets"]["t-flaky"]["lg"]
    assert flaky["errors"]["k"] > 0 and summary["generation_errors"]["t-flaky"]["k"] > 0
    assert summary["targets"]["t-mixed"]["q3"]["safety"]["controversial"] > 0
    assert summary["suite_fingerprint"] and summary["config_hash"] and summary["complete"]


def _groups(table: pa.Table) -> dict[tuple[str, str], pa.Table]:
    out = {}
    for t in table.column("target").unique().to_pylist():
        for j in table.column("judge").unique().to_pylist():
            out[(t, j)] = table.filter(
                pc.and_(pc.equal(table.column("target"), t), pc.equal(table.column("judge"), j))
            )
    return out


def test_folder_metrics_equal_the_streamed_summary(mixed: tuple[RunResult, str]) -> None:
    result, _ = mixed
    folder = open_run(result.url)
    streamed = folder.read_summary()
    computed = compute_metrics(folder)
    for s in (streamed, computed):
        s.pop("computed_at")
    assert computed == streamed
    # judge agreement: kappa and the rows where the two judges disagree
    pair = streamed["judge_agreement"]["lg|q3"]["(all targets)"]
    all_rows = list(iter_disagreements(folder))
    assert len(all_rows) == pair["disagreements"] > 0
    assert all(r.label_a != r.label_b for r in all_rows)
    assert -1.0 <= pair["kappa"] <= 1.0


# -- compare ---------------------------------------------------------------------------------------

QWEN = {
    "name": "q3",
    "format": "qwen3guard",
    "backend": "fake",
    "model": "q3",
    "options": {
        "replies": [[COMPLY[:17], "Unsafe\nCategories: Violent"], ["", "Safe\nCategories: None"]]
    },
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Before: both targets refuse. After: t1 complies on Cybersecurity prompts only. Other:
    the after run over a different suite (no Extremism prompts, three new ones)."""
    tmp = tmp_path_factory.mktemp("compare")
    suite = tagged_suite(tmp)
    judges = [judge_lg(), QWEN]
    t2 = target("t2", [["", REFUSE]])
    before = run(config(tmp, suite, [target("t1", [["", REFUSE]]), t2], judges))
    unsafe_t1 = target("t1", [["[Cybersecurity]", COMPLY], ["", REFUSE]])
    after = run(config(tmp, suite, [unsafe_t1, t2], judges))
    cases = [
        TestCase(text=f"[{c.l1}] {c.text}", lang=c.lang, risk=c.risk, meta=c.meta)
        for c in starter_cases(tmp)
        if c.l1 != "Extremism"
    ]
    extra = [
        TestCase(text=f"[Hate_Speech] new prompt {i}", lang="en", risk="Hate_Speech/Defamation")
        for i in range(3)
    ]
    other_suite = str(tmp / "other")
    write_suite(other_suite, [*cases, *extra], name="other")
    other = run(config(tmp, other_suite, [unsafe_t1, t2], judges))
    limited = run(config(tmp, suite, [unsafe_t1, t2], judges, suite={"url": suite, "limit": 100}))
    return {
        "tmp": tmp,
        "before": before,
        "after": after,
        "other": other,
        "limited": limited,
        "common": len(cases),
    }


def test_compare_a_run_with_itself_flags_nothing(runs: dict[str, Any]) -> None:
    url = runs["before"].url
    cmp = compare_runs(open_run(url), open_run(url))
    assert cmp.flagged == [] and cmp.changes and cmp.mode == "same-suite"
    r = invoke("compare", url, url, "--fail-on-regression")
    assert r.exit_code == 0, r.output
    assert "no significant changes" in r.output


def test_compare_flags_the_one_dimension_made_unsafe(runs: dict[str, Any]) -> None:
    a, b = runs["before"].url, runs["after"].url
    cmp = compare_runs(open_run(a), open_run(b))
    flagged = {(c.target, c.judge, c.metric, c.scope, c.category, c.flag) for c in cmp.flagged}
    assert flagged == {
        ("t1", "lg", "safety", "l1", "Cybersecurity", "regression"),
        ("t1", "q3", "safety", "l1", "Cybersecurity", "regression"),
    }
    (overall,) = [c for c in cmp.overall if (c.target, c.judge, c.metric) == ("t1", "lg", "safety")]
    assert overall.rate_a == 1.0 and overall.rate_b == pytest.approx(154 / 176)
    r = invoke("compare", a, b, "--json", "--fail-on-regression")
    assert r.exit_code == EXIT_REGRESSION
    data = json.loads(r.output)
    assert {f["category"] for f in data["flags"]} == {"Cybersecurity"}
    assert {f["target"] for f in data["flags"]} == {"t1"}
    # finer categories: what is flagged lies inside that dimension; languages, when asked for,
    # carry the drop too (11 of the 22 prompts are in each)
    r = invoke("compare", a, b, "--by", "l1,l2,lang", "--correction", "bh", "--all")
    assert r.exit_code == 0, r.output
    flagged = [line for line in r.output.splitlines() if "REGRESSION" in line]
    by_category = [line for line in flagged if "[lang]" not in line]
    assert by_category and all("Cybersecurity" in line for line in by_category)
    assert {line.split("safety ")[1][:2] for line in flagged if "[lang]" in line} <= {"en", "zh"}
    assert "IMPROVEMENT" not in r.output


def test_different_suites_are_refused_unless_intersection(runs: dict[str, Any]) -> None:
    a, other = runs["before"].url, runs["other"].url
    with pytest.raises(ConfigError, match="different suites.*--intersection"):
        compare_runs(open_run(a), open_run(other))
    r = invoke("compare", a, other)
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError)
    assert "different suites" in str(r.exception)
    cmp = compare_runs(open_run(a), open_run(other), intersection=True)
    assert cmp.mode == "intersection"
    assert (cmp.tests, cmp.only_a, cmp.only_b) == (runs["common"], 22, 3)
    assert {(c.target, c.category) for c in cmp.flagged} == {("t1", "Cybersecurity")}
    assert "Extremism" not in {c.category for c in cmp.changes}
    (overall,) = [c for c in cmp.overall if (c.target, c.judge, c.metric) == ("t2", "lg", "safety")]
    assert overall.n_a == overall.n_b == runs["common"]
    r = invoke("compare", a, other, "--intersection")
    assert r.exit_code == 0, r.output
    assert f"{runs['common']:,} shared tests" in r.output and "REGRESSION" in r.output
    # the same suite with a row limit covers other tests: refused too, then compared over them
    limited = runs["limited"].url
    with pytest.raises(ConfigError, match="different parts of suite"):
        compare_runs(open_run(a), open_run(limited))
    cmp = compare_runs(open_run(a), open_run(limited), intersection=True)
    assert (cmp.tests, cmp.only_a, cmp.only_b) == (100, 76, 0)
    assert {c.category for c in cmp.flagged} <= {"Cybersecurity"}


def test_every_command_has_help_with_an_example() -> None:
    for cmd in (["report"], ["compare"], ["history"], ["history", "add"], ["history", "show"]):
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.output, (cmd, r.output)


def test_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no run at"):
        open_run(str(tmp_path / "runs" / "run-nope"))
    r = invoke("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert isinstance(r.exception, StorageError)


# -- history ---------------------------------------------------------------------------------------


def test_history_add_and_show(runs: dict[str, Any], tmp_path: Path) -> None:
    hist = str(tmp_path / "history")
    for name, day in (("before", "2025-03-01"), ("after", "2025-03-02")):
        r = invoke("history", "add", runs[name].url, "--to", hist, "--date", day)
        assert r.exit_code == 0, r.output
        assert f"date={day}" in r.output
    # adding a run again replaces its file, even under another date
    r = invoke("history", "add", runs["after"].url, "--to", hist, "--date", "2025-03-03")
    assert r.exit_code == 0, r.output
    files = sorted(
        p.relative_to(tmp_path / "history").as_posix()
        for p in (tmp_path / "history").rglob("*.parquet")
    )
    assert files == [
        f"date=2025-03-01/{runs['before'].run_id}.parquet",
        f"date=2025-03-03/{runs['after'].run_id}.parquet",
    ]
    # plain pyarrow reads it as a hive-partitioned dataset
    table = ds.dataset(hist, format="parquet", partitioning="hive").to_table()
    overall = table.filter(
        pc.and_(
            pc.equal(table.column("metric"), "safety"), pc.equal(table.column("scope"), "overall")
        )
    )
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    for row in overall.to_pylist():
        if row["judge"] == "lg":
            rates[row["target"]][str(row["date"])] = row["rate"]
    assert rates["t1"] == {"2025-03-01": 1.0, "2025-03-03": pytest.approx(154 / 176)}
    assert rates["t2"] == {"2025-03-01": 1.0, "2025-03-03": 1.0}
    assert read_history(hist).num_rows == table.num_rows
    r = invoke("history", "show", hist)
    assert r.exit_code == 0, r.output
    assert "target t1, judge lg" in r.output and "target t2, judge q3" in r.output
    t1 = r.output.split("target t1, judge lg")[1].split("target")[0]
    assert "100.0%" in t1 and "87.5%" in t1 and "-12.5" in t1
    r = invoke("history", "show", hist, "--target", "t2", "--json")
    data = json.loads(r.output)
    assert set(data["safety"]) == {"t2"} and len(data["safety"]["t2"]["lg"]) == 2
    r = invoke("history", "show", str(tmp_path / "nothing"))
    assert isinstance(r.exception, StorageError)
    r = invoke("history", "add", runs["before"].url, "--to", hist, "--date", "03/01/2025")
    assert isinstance(r.exception, ConfigError)


# -- report ----------------------------------------------------------------------------------------


def test_report_command_writes_html_and_json(runs: dict[str, Any], tmp_path: Path) -> None:
    hist = str(tmp_path / "history")
    for name in ("before", "after"):
        assert invoke("history", "add", runs[name].url, "--to", hist).exit_code == 0
    html, js = tmp_path / "out" / "report.html", tmp_path / "out" / "report.json"
    r = invoke(
        "report",
        runs["after"].url,
        "--compare",
        runs["before"].url,
        "--history",
        hist,
        "--html",
        str(html),
        "--json",
        str(js),
    )
    assert r.exit_code == 0, r.output
    assert "target t1" in r.output and "REGRESSION" in r.output and f"wrote {html}" in r.output
    page = html.read_text()
    assert 'id="leaderboard"' in page and "REGRESSION" in page
    assert page.count("<polyline") == 4  # two runs a line: t1 and t2, two judges each
    data = json.loads(js.read_text())
    assert {f["category"] for f in data["comparison"]["flags"]} == {"Cybersecurity"}
    assert data["summary"]["run_id"] == runs["after"].run_id
    assert set(data["history"]) == {"t1", "t2"}
    worst = data["examples"]["Cybersecurity"]
    assert worst and worst[0]["target"] == "t1" and worst[0]["response"].startswith("Sure")
    assert worst[0]["label"] == "unsafe" and worst[0]["prompt"].startswith("[Cybersecurity]")
    # a run alone: no comparison, no history, terminal summary only
    r = invoke("report", runs["before"].url, "--examples", "0")
    assert r.exit_code == 0 and "target t1" in r.output and "wrote" not in r.output


def test_report_on_a_run_without_summary_recomputes(
    mixed: tuple[RunResult, str], tmp_path: Path
) -> None:
    result, _ = mixed
    summary = Path(result.url) / "summary.json"
    saved = summary.read_bytes()
    summary.unlink()
    try:
        out = tmp_path / "r.json"
        r = invoke("report", result.url, "--json", str(out))
        assert r.exit_code == 0, r.output
        data = json.loads(out.read_text())
        assert data["summary"]["targets"]["t-mixed"]["lg"]["attack_success"]["n"] > 0
        assert set(data["examples"]) >= {"Cybersecurity", "Data_Privacy"}
    finally:
        summary.write_bytes(saved)


# -- a small run on the tiny transformers models ---------------------------------------------------


@pytest.mark.slow
def test_tiny_models_summary_equals_pyarrow(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    pytest.importorskip("transformers")
    suite = attack_suite(tmp_path, attacked=2, base_rows=16)  # 16 + 20 + 2 rows
    cfg = config(
        tmp_path,
        suite,
        [
            {
                "name": "tiny-a",
                "backend": "transformers",
                "model": str(tiny_models["tiny-target-a"]),
                "sampling": {"max_tokens": 8, "temperature": 0.0},
            }
        ],
        [
            {
                "name": "guard-qwen3",
                "format": "qwen3guard",
                "backend": "transformers",
                "model": str(tiny_models["tiny-judge-a"]),
                "sampling": {"max_tokens": 8},
            }
        ],
    )
    result = run(cfg)
    summary = json.loads((Path(result.url) / "summary.json").read_text())
    rows = joined(result.url, suite)
    m = summary["targets"]["tiny-a"]["guard-qwen3"]
    labelled = rows.filter(pc.is_valid(rows.column("label")))
    base = labelled.filter(pc.is_null(labelled.column("attack")))
    safe = pc.sum(pc.equal(base.column("label"), "safe")).as_py() or 0
    assert m["safety"]["n"] == base.num_rows and m["safety"]["safe"] == safe
    failures = rows.num_rows - labelled.num_rows
    assert m["parse_failures"]["k"] + m["errors"]["k"] == failures
    attack = labelled.filter(pc.is_valid(labelled.column("attack")))
    unsafe = pc.sum(pc.equal(attack.column("label"), "unsafe")).as_py() or 0
    assert m["attack_success"]["n"] == attack.num_rows and m["attack_success"]["unsafe"] == unsafe
    assert m["rows"] == rows.num_rows == 38
    # the risk scores come from the judge model's label probabilities, parsed or not
    all_base = rows.filter(pc.is_null(rows.column("attack")))
    mean = pc.mean(all_base.column("risk_score")).as_py()
    assert m["safety"]["mean_risk_score"] == pytest.approx(mean, abs=1e-9)
    print(json.dumps({k: m[k] for k in ("safety", "attack_success", "parse_failures")}))
