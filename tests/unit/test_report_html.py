"""The HTML report escapes untrusted text everywhere and loads nothing from outside."""

from __future__ import annotations

import copy
import html
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from assay.engine.compare import compare_summaries
from assay.engine.metrics import MetricsAccumulator
from assay.engine.records import TestCase, Verdict
from assay.engine.report import Example, ReportData, render_html
from assay.engine.report.charts import grouped_bars, heatmap, line_chart, rate_color
from assay.engine.report.markup import Markup, el, esc, raw

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
EVIL = f"{SCRIPT}{IMG}"


class Tags(HTMLParser):
    """Collects the tags and attributes a browser's parser would see."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def evil_summary() -> dict[str, Any]:
    """A summary whose target, judge, risk and attack names are markup too."""
    cases = [
        TestCase(text="p1", lang="en", risk=f"{SCRIPT}/sub"),
        TestCase(text="p2", lang="en", risk="Cybersecurity/Hacker_Attack", attack=IMG),
    ]
    verdicts = [
        Verdict(test_id=c.test_id, target=EVIL, judge=judge, label=label, parse_ok=True)  # type: ignore[arg-type]
        for c in cases
        for judge, label in (("lg" + IMG, "unsafe"), ("q3", "safe"))
    ]
    acc = MetricsAccumulator()
    acc.add(
        Verdict.to_table(verdicts),
        TestCase.to_table(cases).select(["test_id", "lang", "risk", "attack", "base_id"]),
    )
    out = acc.result()
    out.update({"run_id": "run-x", "suite_fingerprint": "fp", "config_hash": "h"})
    return out


def evil_report() -> ReportData:
    summary = evil_summary()
    before = copy.deepcopy(summary)
    example = Example(
        category=SCRIPT,
        target=EVIL,
        judge="lg",
        test_id="t1",
        lang="en",
        risk=f"{SCRIPT}/sub",
        attack=IMG,
        prompt=f"Tell me {EVIL}",
        response=f"Sure! {EVIL} javascript:alert(3)",
        label="unsafe",
        risk_score=0.97,
        critique=f"The answer contains {SCRIPT}",
    )
    points = [
        {"date": "2025-01-01", "run_id": "run-1", "rate": 0.5, "n": 10, "ci": [0.2, 0.8]},
        {"date": "2025-01-02", "run_id": SCRIPT, "rate": 0.6, "n": 10, "ci": None},
    ]
    history = {EVIL: {"lg": points}}
    return ReportData(
        summary=summary,
        comparison=compare_summaries(before, summary),
        history=history,
        examples={SCRIPT: [example]},
    )


def test_untrusted_text_is_escaped_everywhere() -> None:
    page = render_html(evil_report())
    assert SCRIPT not in page and IMG not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    parser = Tags()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "img" not in tags
    assert tags.count("script") == 1  # the report's own
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # the one script is the report's own (sorting), allowed by hash in the CSP
    (own,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert "alert" not in own and "data-report-ready" in own


def test_self_contained_with_a_strict_policy() -> None:
    page = render_html(evil_report())
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    policy = html.unescape(csp.group(1))  # attribute values are entity-escaped like any other
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    for section in (
        "leaderboard",
        "heatmap",
        "attacks",
        "languages",
        "regressions",
        "trend",
        "examples",
    ):
        assert f'id="{section}' in page
    assert page.count("<svg") >= 3


def test_markup_builder() -> None:
    assert el("td", {"title": '"><script>'}, "<b>") == (
        '<td title="&quot;&gt;&lt;script&gt;">&lt;b&gt;</td>'
    )
    assert el("p", None, el("b", None, "x"), " & ", 3) == "<p><b>x</b> &amp; 3</p>"
    assert el("details", {"open": True, "hidden": False, "x": None}) == "<details open></details>"
    assert isinstance(esc("<"), Markup) and raw("<b>") == "<b>"
    for bad in ("onclick", "x y", '"'):
        with pytest.raises(ValueError):
            el("p", {bad: "1"})
    with pytest.raises(ValueError):
        el("scr ipt")


def test_charts_escape_labels_and_draw_marks() -> None:
    hm = heatmap([EVIL], ["Cyber"], {(EVIL, "Cyber"): (0.5, 10)}, "t")
    bars = grouped_bars(["a"], [EVIL], {("a", EVIL): (0.25, [0.1, 0.4], 8)}, "b")
    line = line_chart({EVIL: [("2025-01-01", 0.2), ("2025-01-02", 0.4)]}, "l")
    for chart in (hm, bars, line):
        assert chart.startswith("<svg") and SCRIPT not in chart
    assert hm.count("<rect") == 1 and "50%" in hm
    assert "<polyline" in line and line.count("<circle") == 2
    assert rate_color(None) == "#e5e5e5"
    assert rate_color(1.0) == "#1a9850" and rate_color(0.0) == "#d73027"
    assert rate_color(1.0, higher_is_better=False) == "#d73027"
