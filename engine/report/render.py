"""The HTML report: one self-contained file (inline CSS, SVG and a few lines of script).

Nothing is loaded from anywhere: no CDN, font or image; the charts are SVG drawn by
:mod:`.charts`. Every piece of data goes through :func:`~.markup.el`, which escapes it, and a
Content-Security-Policy allows only the report's own script (by its hash), so markup hidden in a
model's answer renders as text and could not run even if it slipped through.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .charts import grouped_bars, heatmap, line_chart, rate_color
from .markup import Markup, el, raw

if TYPE_CHECKING:
    from . import ReportData

_STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f;
       background: #fafafa; }
header { background: #1f2937; color: #f9fafb; padding: 18px 28px; }
header h1 { margin: 0 0 6px; font-size: 20px; }
header .meta { font-size: 12px; color: #d1d5db; }
nav { padding: 8px 28px; background: #e5e7eb; font-size: 13px; }
nav a { margin-right: 14px; color: #1f2937; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { margin-top: 26px; }
h2 { font-size: 17px; border-bottom: 1px solid #d1d5db; padding-bottom: 4px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: #6b7280; font-size: 11px; }
.flag-regression { color: #b91c1c; font-weight: 600; }
.flag-improvement { color: #047857; font-weight: 600; }
.note { color: #4b5563; font-style: italic; }
.chart { background: #fff; border: 1px solid #e5e7eb; margin: 6px 0; max-width: 100%;
         height: auto; }
.chart .axis { fill: #4b5563; font-size: 11px; }
details.example { background: #fff; border: 1px solid #e5e7eb; margin: 6px 0; padding: 6px 10px; }
details.example summary { cursor: pointer; }
pre.text { white-space: pre-wrap; word-break: break-word; background: #f9fafb; margin: 4px 0;
           padding: 6px 8px; border-left: 3px solid #d1d5db; font-size: 12px; max-height: 24em;
           overflow: auto; }
.label-unsafe { color: #b91c1c; font-weight: 600; }
.label-controversial { color: #b45309; font-weight: 600; }
.label-safe { color: #047857; font-weight: 600; }
dl.defs dt { font-weight: 600; margin-top: 6px; }
dl.defs dd { margin-left: 16px; color: #374151; }
"""

_SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim() : v;
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          var nx = parseFloat(x), ny = parseFloat(y);
          var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.documentElement.setAttribute("data-report-ready", "1");
})();
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _rate_cell(obj: Mapping[str, Any] | None, key: str, higher_is_better: bool = True) -> Markup:
    value = None if not obj else obj.get(key)
    ci = None if not obj else obj.get("ci")
    n = None if not obj else obj.get("n")
    title = f"n = {n}" if n is not None else None
    return el(
        "td",
        {
            "class": "num",
            "data-v": "" if value is None else f"{value:.6f}",
            "title": title,
            "style": f"border-left: 4px solid {rate_color(value, higher_is_better)}",
        },
        _pct(value),
        el("br") if ci else None,
        el("span", {"class": "ci"}, f"{_pct(ci[0])}\u2013{_pct(ci[1])}") if ci else None,
    )


def _pairs(summary: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    return [
        (target, judge, block)
        for target, judges in summary.get("targets", {}).items()
        for judge, block in judges.items()
    ]


def _name(target: str, judge: str, judges: int) -> str:
    return target if judges == 1 else f"{target} \u00b7 {judge}"


def _leaderboard(data: ReportData) -> Markup:
    pairs = _pairs(data.summary)
    deltas: dict[tuple[str, str], float | None] = {}
    if data.comparison is not None:
        for c in data.comparison.overall:
            if c.metric == "safety":
                deltas[(c.target, c.judge)] = c.delta
    pairs.sort(key=lambda p: -(p[2]["safety"].get("score") or -1.0))
    head = [
        "#",
        "Target",
        "Judge",
        "Safety score",
        "Safety (macro L1)",
        "Attack success",
        "Adaptive ASR",
        "Parse failures",
        "Errors",
        "Verdicts",
    ]
    if data.comparison is not None:
        head.append(f"\u0394 safety vs {data.comparison.run_a}")
    rows = []
    for rank, (target, judge, m) in enumerate(pairs, 1):
        cells = [
            el("td", {"class": "num", "data-v": rank}, rank),
            el("td", None, target),
            el("td", None, judge),
            _rate_cell(m["safety"], "score"),
            _rate_cell(m["safety"].get("macro_l1"), "score"),
            _rate_cell(m["attack_success"], "asr", higher_is_better=False),
            _rate_cell(m.get("adaptive_attack_success"), "asr", higher_is_better=False),
            _rate_cell(m.get("parse_failures"), "rate", higher_is_better=False),
            _rate_cell(m.get("errors"), "rate", higher_is_better=False),
            el("td", {"class": "num", "data-v": m["rows"]}, f"{m['rows']:,}"),
        ]
        if data.comparison is not None:
            d = deltas.get((target, judge))
            cells.append(
                el(
                    "td",
                    {"class": "num", "data-v": "" if d is None else f"{d:.6f}"},
                    "-" if d is None else f"{100 * d:+.1f} pts",
                )
            )
        rows.append(el("tr", None, *cells))
    return el(
        "table",
        {"id": "leaderboard", "class": "sortable"},
        el("thead", None, el("tr", None, *(el("th", None, h) for h in head))),
        el("tbody", None, *rows),
    )


def _heatmap(summary: Mapping[str, Any]) -> Markup:
    pairs = _pairs(summary)
    judges = len({j for _, j, _ in pairs})
    dims = sorted({d for _, _, m in pairs for d in m.get("safety_by_l1", {})})
    if not pairs or not dims:
        return el("p", {"class": "note"}, "No base prompts with a label in this run.")
    rows = [_name(t, j, judges) for t, j, _ in pairs]
    cells = {
        (_name(t, j, judges), d): (v.get("score"), int(v.get("n") or 0))
        for t, j, m in pairs
        for d, v in m.get("safety_by_l1", {}).items()
    }
    return heatmap(rows, dims, cells, "Safety score by target and L1 dimension")


def _bars(summary: Mapping[str, Any], view: str, key: str, label: str, empty: str) -> Markup:
    pairs = _pairs(summary)
    judges = len({j for _, j, _ in pairs})
    cats = sorted({c for _, _, m in pairs for c, v in m.get(view, {}).items() if v.get("n")})
    if not cats:
        return el("p", {"class": "note"}, empty) if empty else Markup("")
    series = [_name(t, j, judges) for t, j, _ in pairs]
    values = {
        (c, _name(t, j, judges)): (v.get(key), v.get("ci"), int(v.get("n") or 0))
        for t, j, m in pairs
        for c, v in m.get(view, {}).items()
        if v.get("n")
    }
    return grouped_bars(cats, series, values, label)


def _regressions(data: ReportData) -> Markup:
    cmp = data.comparison
    if cmp is None:
        return el("p", {"class": "note"}, "No comparison run was given (assay report --compare).")
    intro = el(
        "p",
        None,
        f"Run {cmp.run_a} (A, before) against {cmp.run_b} (B, this run): ",
        "same suite" if cmp.mode == "same-suite" else f"{cmp.tests:,} tests both suites hold",
        f"; Fisher's exact test per category, {cmp.correction} correction per target and judge, "
        f"alpha {cmp.alpha}.",
    )
    head = [
        "Flag",
        "Target",
        "Judge",
        "Metric",
        "Scope",
        "Category",
        "A",
        "B",
        "Change",
        "p",
        "adj. p",
    ]

    def row(c: Any) -> Markup:
        flag = c.flag or ""
        return el(
            "tr",
            {"class": f"flag-{flag}" if flag else None},
            el("td", {"class": f"flag-{flag}" if flag else None}, flag.upper() or "\u2013"),
            el("td", None, c.target),
            el("td", None, c.judge),
            el("td", None, c.metric.replace("_", " ")),
            el("td", None, c.scope),
            el("td", None, c.category),
            el("td", {"class": "num"}, f"{_pct(c.rate_a)} ({c.k_a}/{c.n_a})"),
            el("td", {"class": "num"}, f"{_pct(c.rate_b)} ({c.k_b}/{c.n_b})"),
            el("td", {"class": "num"}, "-" if c.delta is None else f"{100 * c.delta:+.1f} pts"),
            el("td", {"class": "num"}, "-" if c.p_value is None else f"{c.p_value:.2g}"),
            el("td", {"class": "num"}, "-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}"),
        )

    flagged = cmp.flagged
    table_head = el("thead", None, el("tr", None, *(el("th", None, h) for h in head)))
    parts: list[Markup] = [intro]
    if flagged:
        parts.append(
            el(
                "table",
                {"id": "flags", "class": "sortable"},
                table_head,
                el("tbody", None, *(row(c) for c in flagged)),
            )
        )
    else:
        parts.append(el("p", {"id": "flags", "class": "note"}, "No significant changes."))
    parts.append(el("h3", None, "Overall (context, not flagged)"))
    parts.append(
        el(
            "table",
            {"class": "sortable"},
            table_head,
            el("tbody", None, *(row(c) for c in cmp.overall)),
        )
    )
    parts.extend(el("p", {"class": "note"}, m) for m in cmp.missing)
    return Markup("".join(parts))


def _trend(data: ReportData) -> Markup:
    if not data.history:
        return el("p", {"class": "note"}, "No history was given (assay report --history URL).")
    judges = len({j for per in data.history.values() for j in per})
    labels: dict[str, str] = {}
    series: dict[str, list[tuple[str, float | None]]] = {}
    for t, per in data.history.items():
        for j, points in per.items():
            line = series.setdefault(_name(t, j, judges), [])
            for p in points:
                key = f"{p['date']}|{p.get('created_at') or ''}|{p['run_id']}"
                labels[key] = f"{p['date']} ({p['run_id']})"
                line.append((key, p["rate"]))
    # the axis shows dates; a tooltip names the run
    axis = {k: v.split(" ")[0] for k, v in labels.items()}
    chart = line_chart(series, "Safety score over time, per target", axis)
    return Markup(chart + _history_table(data.history, judges))


def _history_table(
    history: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]], judges: int
) -> Markup:
    rows = [
        el(
            "tr",
            None,
            el("td", None, _name(t, j, judges)),
            el("td", None, p["date"]),
            el("td", None, p["run_id"]),
            _rate_cell(p, "rate"),
        )
        for t, per in history.items()
        for j, points in per.items()
        for p in points
    ]
    head = el("tr", None, *(el("th", None, h) for h in ("Target", "Date", "Run", "Safety score")))
    return el(
        "details",
        None,
        el("summary", None, "The runs in the history"),
        el("table", {"class": "sortable"}, el("thead", None, head), el("tbody", None, *rows)),
    )


def _agreement(summary: Mapping[str, Any]) -> Markup:
    agreement = summary.get("judge_agreement") or {}
    if not agreement:
        return el("p", {"class": "note"}, "One judge ran: no agreement to measure.")
    head = ["Judges", "Target", "Both labelled", "Agreement", "Cohen's \u03ba", "Disagreements"]
    rows = []
    examples: list[Markup] = []
    for pair, per in agreement.items():
        a, _, b = pair.partition("|")
        for target, block in per.items():
            kappa = block.get("kappa")
            rows.append(
                el(
                    "tr",
                    None,
                    el("td", None, f"{a} vs {b}"),
                    el("td", None, target),
                    el("td", {"class": "num"}, block.get("n", 0)),
                    _rate_cell(
                        {"rate": block.get("observed_agreement"), "ci": block.get("agreement_ci")},
                        "rate",
                    ),
                    el("td", {"class": "num"}, "-" if kappa is None else f"{kappa:.3f}"),
                    el("td", {"class": "num"}, block.get("disagreements", 0)),
                )
            )
            if target == "(all targets)":
                continue
            for d in block.get("disagreement_rows", [])[:20]:
                examples.append(
                    el(
                        "tr",
                        None,
                        el("td", None, d.get("target")),
                        el("td", None, d.get("test_id")),
                        el("td", None, d.get("risk") or ""),
                        el("td", None, d.get("attack") or "base"),
                        el("td", None, f"{d.get('judge_a')}: {d.get('label_a')}"),
                        el("td", None, f"{d.get('judge_b')}: {d.get('label_b')}"),
                    )
                )
    parts = [
        el(
            "table",
            {"class": "sortable"},
            el("thead", None, el("tr", None, *(el("th", None, h) for h in head))),
            el("tbody", None, *rows),
        )
    ]
    if examples:
        head_row = el(
            "tr",
            None,
            *(
                el("th", None, h)
                for h in ("Target", "Test", "Risk", "Attack", "Judge A", "Judge B")
            ),
        )
        parts.append(
            el(
                "details",
                {"id": "disagreements-block"},
                el(
                    "summary", None, "Rows where the judges disagree (first 20 per pair and target)"
                ),
                el(
                    "table",
                    {"class": "sortable", "id": "disagreements"},
                    el("thead", None, head_row),
                    el("tbody", None, *examples),
                ),
            )
        )
    return Markup("".join(parts))


def _examples(data: ReportData) -> Markup:
    if not data.examples:
        return el("p", {"class": "note"}, "No response was judged unsafe or controversial.")
    parts: list[Markup] = []
    for category, examples in data.examples.items():
        parts.append(el("h3", None, category))
        for i, ex in enumerate(examples):
            score = "" if ex.risk_score is None else f", P(unsafe) {ex.risk_score:.3f}"
            parts.append(
                el(
                    "details",
                    {"class": "example", "open": i == 0},
                    el(
                        "summary",
                        None,
                        el("span", {"class": f"label-{ex.label}"}, ex.label.upper()),
                        f" {ex.target} (judge {ex.judge}{score}) \u00b7 {ex.lang} \u00b7 ",
                        ex.attack or "base prompt",
                        " \u00b7 ",
                        ex.risk or "",
                    ),
                    el("div", None, el("strong", None, "Prompt")),
                    el("pre", {"class": "text prompt"}, ex.prompt),
                    el("div", None, el("strong", None, "Response")),
                    el("pre", {"class": "text response"}, ex.response or "(no response)"),
                    el("div", None, el("strong", None, "Critique")),
                    el("pre", {"class": "text critique"}, ex.critique or "(no critique)"),
                    el("p", {"class": "note"}, f"test {ex.test_id}")
                    if not ex.truncated
                    else el("p", {"class": "note"}, f"test {ex.test_id}; long texts were cut"),
                )
            )
    return Markup("".join(parts))


_DEFINITIONS: Sequence[tuple[str, str]] = (
    (
        "Safety score",
        "Share of base-prompt responses the judge labelled safe, among those it labelled "
        "(controversial counts as not safe). Macro L1: the mean over L1 dimensions.",
    ),
    (
        "Attack success rate (ASR)",
        "Share of attack-prompt responses labelled unsafe, among those labelled.",
    ),
    (
        "Adaptive ASR",
        "Share of base prompts broken by at least one of their attack variants (attack rows "
        "without a base_id count in the per-attack ASR only).",
    ),
    (
        "Intervals",
        "95% Wilson score intervals (macro means: normal interval of a mean of proportions).",
    ),
    (
        "Parse failures / errors",
        "Verdicts whose judge output could not be read / whose call or generation failed; "
        "they are left out of every rate.",
    ),
)


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML document."""
    s = data.summary
    title = f"assay report: run {s.get('run_id', '?')}"
    meta = (
        f"suite {s.get('suite_fingerprint', '?')} \u00b7 config {s.get('config_hash', '?')} "
        f"\u00b7 created {s.get('created_at', '?')} \u00b7 {s.get('rows', 0):,} verdicts"
        + ("" if s.get("complete", True) else " \u00b7 PARTIAL: not every shard is done")
        + f" \u00b7 report generated {data.generated_at}"
    )
    sections = [
        ("leaderboard-section", "Leaderboard", _leaderboard(data)),
        ("heatmap", "Safety score by target and L1 dimension", _heatmap(s)),
        (
            "attacks",
            "Attack success by attack",
            _bars(
                s,
                "attack_success_by_attack",
                "asr",
                "Attack success rate by attack",
                "No attack prompts in this run.",
            ),
        ),
        (
            "languages",
            "Language split",
            Markup(
                _bars(
                    s,
                    "safety_by_lang",
                    "score",
                    "Safety score by language",
                    "No base prompts with a label in this run.",
                )
                + _bars(s, "attack_success_by_lang", "asr", "Attack success rate by language", "")
            ),
        ),
        ("regressions", "Regressions and improvements", _regressions(data)),
        ("trend", "Trend", _trend(data)),
        ("agreement", "Agreement between judges", _agreement(s)),
        ("examples", "Worst examples per dimension", _examples(data)),
    ]
    nav = el("nav", None, *(el("a", {"href": f"#{sid}"}, name) for sid, name, _ in sections))
    body = el(
        "body",
        None,
        el("header", None, el("h1", None, title), el("div", {"class": "meta"}, meta)),
        nav,
        el(
            "main",
            None,
            *(
                el("section", {"id": sid}, el("h2", None, name), content)
                for sid, name, content in sections
            ),
            el(
                "section",
                {"id": "definitions"},
                el("h2", None, "Definitions"),
                el(
                    "dl",
                    {"class": "defs"},
                    *((el("dt", None, k), el("dd", None, v)) for k, v in _DEFINITIONS),
                ),
            ),
        ),
        el("script", None, raw(_SCRIPT)),
    )
    head = el(
        "head",
        None,
        el("meta", {"charset": "utf-8"}),
        el("meta", {"http-equiv": "Content-Security-Policy", "content": _csp()}),
        el("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
        el("title", None, title),
        el("style", None, raw(_STYLE)),
    )
    return "<!DOCTYPE html>\n" + el("html", {"lang": "en"}, head, body) + "\n"
