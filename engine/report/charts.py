"""The report's charts: inline SVG drawn here, so the report needs no plotting library or CDN.

Each chart is a function from plain values to one ``<svg>`` element (a :class:`Markup`), built
with :func:`~assay.engine.report.markup.el`, so every label is escaped. Values are rates in
[0, 1] or None (no data: drawn as an empty, hatched cell or a missing bar). Hovering an element
shows its exact figures through SVG ``<title>`` tooltips, which need no script.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .markup import Markup, el

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_FONT = 12
_CHAR_W = 6.8  # average width of a 12px sans-serif character, for layout without measuring


def series_color(i: int) -> str:
    """The colour of the ``i``-th series."""
    return PALETTE[i % len(PALETTE)]


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"


def _text_w(text: str) -> float:
    return len(text) * _CHAR_W


def _lerp(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


_RED, _YELLOW, _GREEN = (215, 48, 39), (254, 224, 139), (26, 152, 80)


def rate_color(value: float | None, higher_is_better: bool = True) -> str:
    """Red (bad) through yellow to green (good); grey for no data."""
    if value is None:
        return "#e5e5e5"
    v = min(1.0, max(0.0, value if higher_is_better else 1 - value))
    rgb = _lerp(_RED, _YELLOW, v * 2) if v < 0.5 else _lerp(_YELLOW, _GREEN, (v - 0.5) * 2)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _svg(width: float, height: float, label: str, *children: object) -> Markup:
    return el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "chart",
            "width": f"{width:.0f}",
            "height": f"{height:.0f}",
            "viewBox": f"0 0 {width:.0f} {height:.0f}",
            "role": "img",
            "aria-label": label,
            "font-family": "system-ui, sans-serif",
            "font-size": _FONT,
        },
        el("title", None, label),
        *children,
    )


def heatmap(
    rows: Sequence[str],
    cols: Sequence[str],
    cells: Mapping[tuple[str, str], tuple[float | None, int]],
    label: str,
    higher_is_better: bool = True,
) -> Markup:
    """A rows x columns grid of rates, each cell coloured and labelled (cells: (rate, n))."""
    cell_w, cell_h = 70, 30
    left = min(260.0, max(_text_w(_short(r, 36)) for r in rows) + 12) if rows else 40
    top = min(170.0, max(_text_w(_short(c, 24)) for c in cols) * 0.72 + 16) if cols else 20
    # rotated column labels lean right, past the last column
    right = max((_text_w(_short(c, 24)) for c in cols), default=0) * 0.77
    width = left + cell_w * len(cols) + max(10.0, right - cell_w / 2)
    height = top + cell_h * len(rows) + 10
    parts: list[Markup] = []
    for j, col in enumerate(cols):
        x = left + cell_w * j + cell_w / 2
        parts.append(
            el(
                "text",
                {
                    "x": f"{x:.1f}",
                    "y": f"{top - 6:.1f}",
                    "transform": f"rotate(-40 {x:.1f} {top - 6:.1f})",
                    "class": "axis",
                },
                el("title", None, col),
                _short(col, 24),
            )
        )
    for i, row in enumerate(rows):
        y = top + cell_h * i
        parts.append(
            el(
                "text",
                {"x": f"{left - 8:.1f}", "y": f"{y + cell_h / 2 + 4:.1f}", "text-anchor": "end"},
                el("title", None, row),
                _short(row, 36),
            )
        )
        for j, col in enumerate(cols):
            value, n = cells.get((row, col), (None, 0))
            x = left + cell_w * j
            fill = rate_color(value, higher_is_better)
            tip = (
                f"{row} \u00b7 {col}: {_pct(value)} of {n}" if n else f"{row} \u00b7 {col}: no data"
            )
            parts.append(
                el(
                    "g",
                    {"class": "cell"},
                    el("title", None, tip),
                    el(
                        "rect",
                        {
                            "x": x + 1,
                            "y": f"{y + 1:.1f}",
                            "width": cell_w - 2,
                            "height": cell_h - 2,
                            "fill": fill,
                            "rx": 3,
                        },
                    ),
                    el(
                        "text",
                        {
                            "x": f"{x + cell_w / 2:.1f}",
                            "y": f"{y + cell_h / 2 + 4:.1f}",
                            "text-anchor": "middle",
                            "fill": "#111",
                        },
                        _pct(value),
                    ),
                )
            )
    return _svg(width, height, label, *parts)


def grouped_bars(
    categories: Sequence[str],
    series: Sequence[str],
    values: Mapping[tuple[str, str], tuple[float | None, Sequence[float] | None, int]],
    label: str,
) -> Markup:
    """Horizontal bars: one group per category, one bar per series, with 95% interval whiskers.

    ``values[(category, series)]`` is (rate, [ci_low, ci_high] or None, n).
    """
    bar_h, gap = 14, 10
    left = min(240.0, max((_text_w(_short(c, 32)) for c in categories), default=40) + 12)
    plot_w = 420
    legend_h = 20 * ((len(series) + 2) // 3)
    group_h = bar_h * len(series) + gap
    width = left + plot_w + 60
    height = legend_h + 24 + group_h * len(categories) + 20
    y0 = legend_h + 20
    parts: list[Markup] = []
    parts.extend(_legend(series))
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * tick
        parts.append(
            el(
                "line",
                {
                    "x1": f"{x:.1f}",
                    "x2": f"{x:.1f}",
                    "y1": y0 - 4,
                    "y2": f"{height - 16:.1f}",
                    "stroke": "#ddd",
                },
            )
        )
        parts.append(
            el(
                "text",
                {
                    "x": f"{x:.1f}",
                    "y": f"{height - 4:.1f}",
                    "text-anchor": "middle",
                    "class": "axis",
                },
                f"{tick * 100:.0f}%",
            )
        )
    for c, cat in enumerate(categories):
        gy = y0 + group_h * c
        parts.append(
            el(
                "text",
                {"x": f"{left - 8:.1f}", "y": f"{gy + group_h / 2:.1f}", "text-anchor": "end"},
                el("title", None, cat),
                _short(cat, 32),
            )
        )
        for s, name in enumerate(series):
            value, ci, n = values.get((cat, name), (None, None, 0))
            if value is None:
                continue
            y = gy + bar_h * s
            w = max(1.0, plot_w * value)
            interval = f" [{_pct(ci[0])}-{_pct(ci[1])}]" if ci else ""
            bits = [
                el("title", None, f"{name} \u00b7 {cat}: {_pct(value)}{interval} of {n}"),
                el(
                    "rect",
                    {
                        "x": left,
                        "y": y,
                        "width": f"{w:.1f}",
                        "height": bar_h - 2,
                        "fill": series_color(s),
                    },
                ),
            ]
            if ci:
                x1, x2 = left + plot_w * ci[0], left + plot_w * ci[1]
                bits.append(
                    el(
                        "line",
                        {
                            "x1": f"{x1:.1f}",
                            "x2": f"{x2:.1f}",
                            "y1": f"{y + bar_h / 2 - 1:.1f}",
                            "y2": f"{y + bar_h / 2 - 1:.1f}",
                            "stroke": "#222",
                            "stroke-width": 1.2,
                        },
                    )
                )
            end = left + max(w, plot_w * ci[1] if ci else 0.0)
            bits.append(
                el(
                    "text",
                    {"x": f"{end + 4:.1f}", "y": y + bar_h - 4, "font-size": 10},
                    _pct(value),
                )
            )
            parts.append(el("g", {"class": "bar"}, *bits))
    return _svg(width, height, label, *parts)


def line_chart(
    series: Mapping[str, Sequence[tuple[str, float | None]]],
    label: str,
    labels: Mapping[str, str] | None = None,
) -> Markup:
    """Rates over time: one polyline per series.

    Points are (x key, rate); x keys sort in time order (several runs a day have distinct keys)
    and ``labels`` gives what the axis and tooltips show for a key (default: the key).
    """
    xs = sorted({x for points in series.values() for x, _ in points})
    names = dict(labels or {})
    left, top, plot_w, plot_h = 50, 40 + 20 * ((len(series) + 2) // 3), 560, 220
    width, height = left + plot_w + 60, top + plot_h + 50
    parts: list[Markup] = []
    parts.extend(_legend(series))
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(
            el(
                "line",
                {
                    "x1": left,
                    "x2": left + plot_w,
                    "y1": f"{y:.1f}",
                    "y2": f"{y:.1f}",
                    "stroke": "#ddd",
                },
            )
        )
        parts.append(
            el(
                "text",
                {"x": left - 6, "y": f"{y + 4:.1f}", "text-anchor": "end", "class": "axis"},
                f"{tick * 100:.0f}%",
            )
        )

    def x_of(x: str) -> float:
        if len(xs) == 1:
            return left + plot_w / 2
        return left + plot_w * xs.index(x) / (len(xs) - 1)

    step = max(1, len(xs) // 8)
    shown: set[str] = set()
    for k, x in enumerate(xs):
        text = names.get(x, x)
        if (k % step == 0 or k == len(xs) - 1) and text not in shown:
            shown.add(text)
            parts.append(
                el(
                    "text",
                    {
                        "x": f"{x_of(x):.1f}",
                        "y": top + plot_h + 18,
                        "text-anchor": "middle",
                        "class": "axis",
                    },
                    text,
                )
            )
    for i, (name, points) in enumerate(series.items()):
        pts = [(x_of(x), top + plot_h * (1 - v)) for x, v in points if v is not None]
        color = series_color(i)
        bits: list[Markup] = [el("title", None, name)]
        if len(pts) > 1:
            bits.append(
                el(
                    "polyline",
                    {
                        "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in pts),
                        "fill": "none",
                        "stroke": color,
                        "stroke-width": 2,
                    },
                )
            )
        for (x, v), (px, py) in zip([(x, v) for x, v in points if v is not None], pts, strict=True):
            bits.append(
                el(
                    "circle",
                    {"cx": f"{px:.1f}", "cy": f"{py:.1f}", "r": 4, "fill": color},
                    el("title", None, f"{name} \u00b7 {names.get(x, x)}: {_pct(v)}"),
                )
            )
        parts.append(el("g", {"class": "series"}, *bits))
    return _svg(width, height, label, *parts)


def _legend(series: Iterable[str]) -> list[Markup]:
    """A colour swatch and the name of each series, three per line."""
    parts = []
    for i, name in enumerate(series):
        lx, ly = 10 + (i % 3) * 200, 14 + (i // 3) * 20
        parts.append(
            el(
                "g",
                {"class": "legend"},
                el(
                    "rect",
                    {"x": lx, "y": ly - 10, "width": 12, "height": 12, "fill": series_color(i)},
                ),
                el("text", {"x": lx + 18, "y": ly}, el("title", None, name), _short(name, 26)),
            )
        )
    return parts
