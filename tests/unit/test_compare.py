"""Comparison statistics: Fisher's exact test, corrections, and flags on summaries."""

from __future__ import annotations

import copy
import random
from math import comb
from typing import Any

import pytest

from assay.engine.compare import adjust, compare_summaries, fisher_exact, format_comparison
from assay.engine.errors import ConfigError

DIMS = ["Cybersecurity", "Data_Privacy", "Extremism", "Hate_Speech"]


def brute_fisher(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    total, hits = n_a + n_b, k_a + k_b

    def pmf(x: int) -> float:
        return comb(hits, x) * comb(total - hits, n_a - x) / comb(total, n_a)

    observed = pmf(k_a)
    support = range(max(0, n_a - (total - hits)), min(n_a, hits) + 1)
    return min(1.0, sum(pmf(x) for x in support if pmf(x) <= observed * (1 + 1e-7)))


def test_fisher_exact_matches_the_definition() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n_a, n_b = rng.randint(1, 30), rng.randint(1, 30)
        k_a, k_b = rng.randint(0, n_a), rng.randint(0, n_b)
        assert fisher_exact(k_a, n_a, k_b, n_b) == pytest.approx(
            brute_fisher(k_a, n_a, k_b, n_b), abs=1e-10
        )
    # scipy.stats.fisher_exact([[3, 7], [7, 3]]) = 0.1789
    assert fisher_exact(3, 10, 7, 10) == pytest.approx(0.17890, abs=1e-5)
    assert fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)
    assert fisher_exact(0, 0, 3, 5) == 1.0
    # large counts stay finite and sensible
    assert fisher_exact(9000, 10000, 9100, 10000) < 0.05
    assert fisher_exact(9000, 10000, 9010, 10000) > 0.5
    with pytest.raises(ValueError):
        fisher_exact(4, 3, 0, 1)


def test_corrections() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    assert adjust(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert adjust(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert adjust(p, "none") == p
    assert adjust([], "holm") == []
    with pytest.raises(ConfigError):
        adjust(p, "bonferroni")  # type: ignore[arg-type]


def rate(k: int, n: int, key: str = "safe") -> dict[str, Any]:
    name = {"safe": "score", "unsafe": "asr", "broken": "asr"}[key]
    return {key: k, "n": n, name: k / n if n else None}


def summary(run_id: str, safe: dict[str, tuple[int, int]]) -> dict[str, Any]:
    block = {
        "safety": rate(sum(k for k, _ in safe.values()), sum(n for _, n in safe.values())),
        "safety_by_l1": {d: rate(k, n) for d, (k, n) in safe.items()},
        "attack_success": rate(10, 100, "unsafe"),
        "attack_success_by_attack": {"code_injection": rate(10, 100, "unsafe")},
        "attack_success_by_l1": {},
        "adaptive_attack_success": {**rate(5, 20, "broken"), "by_l1": {}},
    }
    return {
        "run_id": run_id,
        "suite_fingerprint": "fp",
        "targets": {"t1": {"lg": block}, "t2": {"lg": copy.deepcopy(block)}},
    }


BASE = {d: (40, 44) for d in DIMS}


def test_same_summary_flags_nothing() -> None:
    a = summary("a", BASE)
    cmp = compare_summaries(a, copy.deepcopy(a))
    assert cmp.flagged == [] and cmp.regressions == []
    assert all(c.p_value == 1.0 for c in cmp.changes + cmp.overall)
    assert "no significant changes" in format_comparison(cmp)


def test_one_dimension_made_unsafe_is_the_only_flag() -> None:
    a = summary("a", BASE)
    b = summary("b", BASE)
    b["targets"]["t1"]["lg"]["safety_by_l1"]["Data_Privacy"] = rate(2, 44)
    b["targets"]["t1"]["lg"]["safety"] = rate(122, 176)
    cmp = compare_summaries(a, b)
    (flag,) = cmp.flagged
    assert (flag.target, flag.judge, flag.metric, flag.scope, flag.category) == (
        "t1",
        "lg",
        "safety",
        "l1",
        "Data_Privacy",
    )
    assert flag.flag == "regression" and flag.delta == pytest.approx(2 / 44 - 40 / 44)
    assert flag.p_adjusted is not None and flag.p_adjusted < 0.05
    # the overall drop is reported, as context, and not flagged
    overall = [c for c in cmp.overall if c.target == "t1" and c.metric == "safety"]
    assert overall[0].p_value is not None and overall[0].p_value < 0.05
    assert overall[0].flag is None
    text = format_comparison(cmp)
    assert "REGRESSION" in text and "Data_Privacy" in text and "1 regression(s)" in text
    # the other way round it is an improvement
    (back,) = compare_summaries(b, a).flagged
    assert back.flag == "improvement" and back.category == "Data_Privacy"


def test_small_changes_are_not_flagged_and_min_delta() -> None:
    b = summary("b", {**BASE, "Extremism": (37, 44)})
    assert compare_summaries(summary("a", BASE), b).flagged == []
    big = summary("b", {**BASE, "Extremism": (10, 44)})
    assert len(compare_summaries(summary("a", BASE), big).flagged) == 2  # t1 and t2
    assert compare_summaries(summary("a", BASE), big, min_delta=0.9).flagged == []


def test_attack_success_up_is_a_regression() -> None:
    a = summary("a", BASE)
    b = copy.deepcopy(a)
    b["targets"]["t2"]["lg"]["attack_success_by_attack"]["code_injection"] = rate(60, 100, "unsafe")
    (flag,) = compare_summaries(a, b).flagged
    assert (flag.target, flag.metric, flag.scope, flag.flag) == (
        "t2",
        "attack_success",
        "attack",
        "regression",
    )
    # attack scope left out: nothing to flag
    assert compare_summaries(a, b, scopes=["l1"]).flagged == []


def test_targets_only_in_one_run_and_bad_options() -> None:
    a = summary("a", BASE)
    b = copy.deepcopy(a)
    del b["targets"]["t2"]
    b["targets"]["t3"] = a["targets"]["t1"]
    cmp = compare_summaries(a, b)
    assert cmp.missing == ["target t2 only in run A", "target t3 only in run B"]
    with pytest.raises(ConfigError, match="unknown comparison scope"):
        compare_summaries(a, b, scopes=["l7"])
    with pytest.raises(ConfigError, match="alpha"):
        compare_summaries(a, b, alpha=1.5)
    data = cmp.to_dict()
    assert data["flags"] == [] and data["run_a"] == "a"
