"""The HTML report in a real browser: headless Chromium (the Debian package) through Playwright.

The report of a run whose target answered with planted markup (a ``<script>`` and an ``<img
onerror=...>``) is opened from a file with every network request refused: the leaderboard is
there, the charts are drawn, the console shows no error, the report's own script ran, and the
planted markup shows as text and never ran. A screenshot is saved (into ``$ASSAY_ARTIFACTS`` too
when set).

Skipped when ``/usr/bin/chromium`` (``bash .ci/browser-deps.sh``) or Playwright (``assay[test]``)
is missing, unless ``ASSAY_BROWSER_REQUIRED=1``, which makes that a failure. Playwright only
drives the system Chromium: no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_runs import COMPLY, REFUSE, XSS, attack_suite, config, judge_lg, target

from assay.cluster.run import run
from assay.engine.history import add_to_history
from assay.engine.metrics import load_metrics, open_run
from assay.engine.report import build_report, write_report

CHROMIUM = os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("ASSAY_BROWSER_REQUIRED") == "1"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (ASSAY_BROWSER_REQUIRED=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(report: Path) -> Iterator[Any]:
    """Chromium, started after the report is built: Playwright's sync API keeps an event loop
    running in this thread, and ``assay run`` (asyncio.run) cannot start inside it."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing: install it with bash .ci/browser-deps.sh")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable('playwright is not installed: pip install "assay[test]"')
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a run with a planted-markup answer, compared with an earlier run."""
    tmp = tmp_path_factory.mktemp("browser")
    suite = attack_suite(tmp, attacked=8)
    judges = [
        judge_lg(
            options={
                "replies": [["__pwned", "unsafe\nS1"], [COMPLY[:17], "unsafe\nS2"], ["", "safe"]]
            }
        ),
        {
            "name": "q3",
            "format": "qwen3guard",
            "backend": "fake",
            "model": "q3",
            "options": {
                "replies": [
                    ["__pwned", "Unsafe\nCategories: Violent"],
                    ["", "Safe\nCategories: None"],
                ]
            },
        },
    ]
    safe = target("t-safe", [["", REFUSE]])
    before = run(config(tmp, suite, [target("t-xss", [["", REFUSE]]), safe], judges))
    after = run(config(tmp, suite, [target("t-xss", [["how", XSS], ["", REFUSE]]), safe], judges))
    history = str(tmp / "history")
    for result, day in ((before, "2025-05-01"), (after, "2025-05-02")):
        add_to_history(load_metrics(open_run(result.url)), history, date=day)
    data = build_report(open_run(after.url), open_run(before.url), history)
    out = tmp / "report.html"
    write_report(data, html=str(out))
    return out


def test_report_in_chromium(browser: Any, report: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def route(r: Any) -> None:
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(report.as_uri(), wait_until="load")
    page.wait_for_selector("html[data-report-ready='1']", timeout=10_000)

    # the leaderboard: two targets x two judges
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 4
    assert "t-xss" in page.inner_text("#leaderboard") and "t-safe" in page.inner_text(
        "#leaderboard"
    )

    # the charts are drawn: visible, with marks inside
    charts = page.evaluate(
        """() => Array.from(document.querySelectorAll('svg.chart')).map(s => {
            const r = s.getBoundingClientRect(), b = s.getBBox();
            return {section: s.closest('section').id, width: r.width, height: r.height,
                    drawn: b.width * b.height,
                    marks: s.querySelectorAll('rect, polyline, circle').length};
        })"""
    )
    sections = {c["section"] for c in charts}
    assert {"heatmap", "attacks", "languages", "trend"} <= sections
    for chart in charts:
        assert chart["width"] > 50 and chart["height"] > 50, chart
        assert chart["drawn"] > 0 and chart["marks"] > 0, chart
    assert page.locator("#heatmap svg .cell rect").count() == 4 * 8  # 4 rows x 8 dimensions
    assert page.locator("#trend polyline").count() == 4

    # the planted markup shows as text and did not run
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("main script, pre script").count() == 0
    responses = page.locator("pre.response").all_inner_texts()
    assert any("<script>window.__pwned = 1</script>" in t for t in responses), responses
    assert any('onerror="window.__pwned = 2"' in t for t in responses)

    # the regression is flagged; the report's own script sorts the tables
    assert "REGRESSION" in page.inner_text("#regressions")
    header = page.locator("#leaderboard thead th", has_text="Target")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    first = page.locator("#leaderboard tbody tr").first.locator("td").nth(1).inner_text()
    assert first == "t-safe"

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("ASSAY_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")
    page.close()
    assert problems == [], problems
    assert requests == [], requests
