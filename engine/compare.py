"""Comparing two runs: per target, judge and category, is the change in a rate real?

Each rate of run A's summary is set against the same rate of run B's (safety score per L1
dimension, attack success per L1 dimension and per attack, adaptive attack success per L1, and
optionally per L2 category or language) with **Fisher's exact test** (two-sided) on the two
``k of n`` counts the summaries report. The p-values of one target and judge are corrected for
multiple comparisons (Holm by default, or Benjamini-Hochberg), and a category is flagged as a
**regression** or an **improvement** only when its corrected p-value is below ``alpha`` (and the
change is at least ``min_delta``): safety down or attack success up is a regression. Overall rates
are reported with their raw p-values as context and are never flagged: a change overall shows in
the categories that carry it.

Two runs are comparable when they cover the same suite (same fingerprint). Runs over different
suites are refused unless ``intersection`` is asked for: both runs' metrics are then recomputed
from their run folders over the tests the two suites share (test ids are content hashes, so a
shared id is the same prompt).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError
from .io import StorageOptions
from .metrics import compute_metrics, load_metrics, open_run_suite
from .runfolder import RunFolder, read_shard

Correction = Literal["holm", "bh", "none"]
Scope = Literal["l1", "l2", "attack", "lang"]
SCOPES: tuple[str, ...] = ("l1", "l2", "attack", "lang")
DEFAULT_SCOPES: tuple[str, ...] = ("l1", "attack")

# metric name -> (key of the count in a rate object, key of the rate, True if higher is better)
_METRICS: dict[str, tuple[str, str, bool]] = {
    "safety": ("safe", "score", True),
    "attack_success": ("unsafe", "asr", False),
    "adaptive_attack_success": ("broken", "asr", False),
}
# (scope, metric) -> where the per-category rates live in a judge's block
_VIEWS: dict[tuple[str, str], tuple[str, ...]] = {
    ("l1", "safety"): ("safety_by_l1",),
    ("l1", "attack_success"): ("attack_success_by_l1",),
    ("l1", "adaptive_attack_success"): ("adaptive_attack_success", "by_l1"),
    ("l2", "safety"): ("safety_by_l2",),
    ("attack", "attack_success"): ("attack_success_by_attack",),
    ("lang", "safety"): ("safety_by_lang",),
    ("lang", "attack_success"): ("attack_success_by_lang",),
}


# -- statistics -----------------------------------------------------------------------------------


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided p-value of Fisher's exact test on ``k_a of n_a`` against ``k_b of n_b``.

    The p-value sums the hypergeometric probabilities of every table with the same margins that
    is no more likely than the observed one (with a 1e-7 relative tolerance, as SciPy does).
    """
    if not (0 <= k_a <= n_a and 0 <= k_b <= n_b):
        raise ValueError(f"invalid counts {k_a}/{n_a}, {k_b}/{n_b}")
    total, hits = n_a + n_b, k_a + k_b
    lo, hi = max(0, n_a - (total - hits)), min(n_a, hits)
    if lo == hi:
        return 1.0
    x = np.arange(lo, hi, dtype=np.float64)
    # log P(x+1) - log P(x) of the hypergeometric, summed up from P(lo)
    steps = np.log((hits - x) * (n_a - x)) - np.log((x + 1) * (total - hits - n_a + x + 1))
    logp = np.concatenate(([0.0], np.cumsum(steps)))
    logp -= logp.max()
    p = np.exp(logp)
    p /= p.sum()
    observed = p[k_a - lo]
    total_p = float(p[p <= observed * (1 + 1e-7)].sum())
    return 1.0 if total_p > 1 - 1e-9 else total_p  # the mode itself: 1, not 1 - rounding


def adjust(p_values: Sequence[float], method: Correction = "holm") -> list[float]:
    """p-values corrected for multiple comparisons (Holm step-down or Benjamini-Hochberg)."""
    m = len(p_values)
    if method == "none" or m == 0:
        return list(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p_values[i]))
            out[i] = running
        return out
    if method == "bh":
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i = order[rank]
            running = min(running, min(1.0, m * p_values[i] / (rank + 1)))
            out[i] = running
        return out
    raise ConfigError(f"unknown correction {method!r}: holm, bh or none")


# -- results --------------------------------------------------------------------------------------


@dataclass
class Change:
    """One rate of one target and judge in both runs, and whether it changed."""

    target: str
    judge: str
    metric: str
    """safety, attack_success or adaptive_attack_success."""
    scope: str
    """l1, l2, attack, lang, or overall."""
    category: str
    k_a: int
    n_a: int
    k_b: int
    n_b: int
    rate_a: float | None
    rate_b: float | None
    delta: float | None
    """rate_b - rate_a."""
    p_value: float | None
    p_adjusted: float | None = None
    flag: Literal["regression", "improvement"] | None = None


@dataclass
class Comparison:
    """Run A against run B."""

    run_a: str
    run_b: str
    suite_fingerprint_a: str
    suite_fingerprint_b: str
    mode: Literal["same-suite", "intersection"]
    tests: int | None
    """Tests compared (those both suites hold in intersection mode)."""
    only_a: int = 0
    only_b: int = 0
    alpha: float = 0.05
    correction: str = "holm"
    min_delta: float = 0.0
    scopes: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPES))
    changes: list[Change] = field(default_factory=list)
    overall: list[Change] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Targets or judges that only one run has."""

    @property
    def flagged(self) -> list[Change]:
        """The changes flagged as regressions or improvements."""
        return [c for c in self.changes if c.flag is not None]

    @property
    def regressions(self) -> list[Change]:
        """The changes flagged as regressions."""
        return [c for c in self.changes if c.flag == "regression"]

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-able dict (with ``flags``: the flagged changes)."""
        data = asdict(self)
        data["flags"] = [asdict(c) for c in self.flagged]
        return data


def _get(block: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    cur: Any = block
    for key in path:
        cur = cur.get(key, {}) if isinstance(cur, Mapping) else {}
    return cur if isinstance(cur, Mapping) else {}


def _change(
    target: str,
    judge: str,
    metric: str,
    scope: str,
    category: str,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
) -> Change | None:
    count_key = _METRICS[metric][0]
    n_a, n_b = int(a.get("n") or 0), int(b.get("n") or 0)
    if not n_a and not n_b:
        return None
    k_a, k_b = int(a.get(count_key) or 0), int(b.get(count_key) or 0)
    rate_a = k_a / n_a if n_a else None
    rate_b = k_b / n_b if n_b else None
    tested = rate_a is not None and rate_b is not None
    return Change(
        target=target,
        judge=judge,
        metric=metric,
        scope=scope,
        category=category,
        k_a=k_a,
        n_a=n_a,
        k_b=k_b,
        n_b=n_b,
        rate_a=rate_a,
        rate_b=rate_b,
        delta=rate_b - rate_a if rate_a is not None and rate_b is not None else None,
        p_value=fisher_exact(k_a, n_a, k_b, n_b) if tested else None,
    )


def compare_summaries(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    alpha: float = 0.05,
    correction: Correction = "holm",
    min_delta: float = 0.0,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    mode: Literal["same-suite", "intersection"] = "same-suite",
) -> Comparison:
    """Compares two summaries of the same layout (see :mod:`assay.engine.metrics`)."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad:
        raise ConfigError(f"unknown comparison scope(s) {bad}: choose from {', '.join(SCOPES)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, not {alpha}")
    out = Comparison(
        run_a=str(a.get("run_id", "A")),
        run_b=str(b.get("run_id", "B")),
        suite_fingerprint_a=str(a.get("suite_fingerprint", "")),
        suite_fingerprint_b=str(b.get("suite_fingerprint", "")),
        mode=mode,
        tests=a.get("restricted_to_tests"),
        alpha=alpha,
        correction=correction,
        min_delta=min_delta,
        scopes=list(scopes),
    )
    targets_a, targets_b = a.get("targets", {}), b.get("targets", {})
    for target in sorted(set(targets_a) | set(targets_b)):
        judges_a, judges_b = targets_a.get(target, {}), targets_b.get(target, {})
        if not judges_a or not judges_b:
            out.missing.append(f"target {target} only in run {'A' if judges_a else 'B'}")
            continue
        for judge in sorted(set(judges_a) | set(judges_b)):
            if judge not in judges_a or judge not in judges_b:
                where = "A" if judge in judges_a else "B"
                out.missing.append(f"judge {judge} of target {target} only in run {where}")
                continue
            ja, jb = judges_a[judge], judges_b[judge]
            out.overall.extend(_overall(target, judge, ja, jb))
            family = list(_categories(target, judge, ja, jb, scopes))
            _flag(family, alpha, correction, min_delta)
            out.changes.extend(family)
    return out


def _overall(
    target: str, judge: str, ja: Mapping[str, Any], jb: Mapping[str, Any]
) -> Iterator[Change]:
    for metric, key in (
        ("safety", "safety"),
        ("attack_success", "attack_success"),
        ("adaptive_attack_success", "adaptive_attack_success"),
    ):
        change = _change(
            target, judge, metric, "overall", "overall", ja.get(key, {}), jb.get(key, {})
        )
        if change is not None:
            yield change


def _categories(
    target: str, judge: str, ja: Mapping[str, Any], jb: Mapping[str, Any], scopes: Sequence[str]
) -> Iterator[Change]:
    for (scope, metric), path in _VIEWS.items():
        if scope not in scopes:
            continue
        va, vb = _get(ja, path), _get(jb, path)
        for category in sorted(set(va) | set(vb)):
            change = _change(
                target, judge, metric, scope, category, va.get(category, {}), vb.get(category, {})
            )
            if change is not None:
                yield change


def _flag(changes: list[Change], alpha: float, correction: Correction, min_delta: float) -> None:
    tested = [c for c in changes if c.p_value is not None]
    for c, p in zip(tested, adjust([c.p_value or 0.0 for c in tested], correction), strict=True):
        c.p_adjusted = p
        if c.delta is None or p >= alpha or abs(c.delta) < min_delta or c.delta == 0:
            continue
        higher_is_better = _METRICS[c.metric][2]
        c.flag = "improvement" if (c.delta > 0) == higher_is_better else "regression"


# -- runs -----------------------------------------------------------------------------------------


def _test_ids(folder: RunFolder, storage_options: StorageOptions | None) -> pa.Array:
    """The test ids the run's plan covers (a run with a suite limit covers a prefix)."""
    manifest = folder.read_manifest()
    suite = open_run_suite(folder, manifest, storage_options)
    chunks = [
        read_shard(suite, shard, columns=["test_id"]).column("test_id").combine_chunks()
        for shard in manifest.plan.shards
    ]
    if not chunks:
        return pa.array([], pa.string())
    unique: pa.Array = pa.chunked_array(chunks, pa.string()).unique()
    return unique


def compare_runs(
    a: RunFolder,
    b: RunFolder,
    *,
    intersection: bool = False,
    alpha: float = 0.05,
    correction: Correction = "holm",
    min_delta: float = 0.0,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    storage_options: StorageOptions | None = None,
) -> Comparison:
    """Compares two run folders (their ``summary.json``, or metrics computed from the folders).

    Raises:
        ConfigError: The runs cover different suites and ``intersection`` is not set, or they
            share no test.
    """
    ma, mb = a.read_manifest(), b.read_manifest()
    same_suite = ma.suite_fingerprint == mb.suite_fingerprint
    # a suite ``limit`` makes a run cover a prefix of its suite: same suite, other tests
    same = same_suite and ma.plan.total_rows == mb.plan.total_rows
    if not same and not intersection:
        what = (
            f"different suites (fingerprints {ma.suite_fingerprint} and {mb.suite_fingerprint})"
            if not same_suite
            else f"different parts of suite {ma.suite_fingerprint} ({ma.plan.total_rows:,} and "
            f"{mb.plan.total_rows:,} rows)"
        )
        raise ConfigError(
            f"runs {ma.run_id} and {mb.run_id} cover {what}; compare them over the tests both "
            f"hold with --intersection"
        )
    if same:
        sa, sb = load_metrics(a, storage_options), load_metrics(b, storage_options)
        result = compare_summaries(
            sa,
            sb,
            alpha=alpha,
            correction=correction,
            min_delta=min_delta,
            scopes=scopes,
        )
        result.tests = ma.plan.total_rows
        _note_partial(result, sa, sb)
        return result
    ids_a, ids_b = _test_ids(a, storage_options), _test_ids(b, storage_options)
    common = ids_a.filter(pc.is_in(ids_a, value_set=ids_b))
    if len(common) == 0:
        raise ConfigError(f"runs {ma.run_id} and {mb.run_id} share no test; nothing to compare")
    sa = compute_metrics(a, storage_options=storage_options, test_ids=common)
    sb = compute_metrics(b, storage_options=storage_options, test_ids=common)
    result = compare_summaries(
        sa,
        sb,
        alpha=alpha,
        correction=correction,
        min_delta=min_delta,
        scopes=scopes,
        mode="intersection",
    )
    result.tests = len(common)
    result.only_a = len(ids_a) - len(common)
    result.only_b = len(ids_b) - len(common)
    _note_partial(result, sa, sb)
    return result


def _note_partial(result: Comparison, sa: Mapping[str, Any], sb: Mapping[str, Any]) -> None:
    for name, s in (("A", sa), ("B", sb)):
        if not s.get("complete", True):
            result.missing.append(
                f"run {name} ({s.get('run_id')}) is partial: {s.get('shards_done')}/"
                f"{s.get('shards_total')} shards done"
            )


# -- terminal -------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _p(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}")


def _line(c: Change) -> str:
    delta = "" if c.delta is None else f"{100 * c.delta:+.1f} pts"
    name = c.metric.replace("_", " ")
    return (
        f"{name} {c.category}: {_pct(c.rate_a)} ({c.k_a}/{c.n_a}) -> {_pct(c.rate_b)} "
        f"({c.k_b}/{c.n_b}) {delta}, p={_p(c.p_value)}"
        + ("" if c.p_adjusted is None or c.scope == "overall" else f" adj={_p(c.p_adjusted)}")
    )


def format_comparison(cmp: Comparison, show_all: bool = False) -> str:
    """A plain-terminal account: the setup, overall changes, then the flagged categories."""
    if cmp.mode == "same-suite":
        what = f"same suite {cmp.suite_fingerprint_a[:12]} ({cmp.tests or 0:,} tests)"
    else:
        what = (
            f"intersection of suites {cmp.suite_fingerprint_a[:12]} and "
            f"{cmp.suite_fingerprint_b[:12]}: {cmp.tests or 0:,} shared tests "
            f"({cmp.only_a:,} only in A, {cmp.only_b:,} only in B)"
        )
    method = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}.get(
        cmp.correction, cmp.correction
    )
    lines = [
        f"compare {cmp.run_a} (A) -> {cmp.run_b} (B): {what}",
        f"  Fisher exact test per category, {method} correction per target and judge, "
        f"alpha {cmp.alpha}"
        + (f", min change {100 * cmp.min_delta:.1f} pts" if cmp.min_delta else ""),
    ]
    keys = sorted({(c.target, c.judge) for c in cmp.overall + cmp.changes})
    for target, judge in keys:
        lines.append(f"target {target}, judge {judge}")
        for c in cmp.overall:
            if (c.target, c.judge) == (target, judge):
                lines.append(f"  overall {_line(c)}")
        for c in cmp.changes:
            if (c.target, c.judge) != (target, judge):
                continue
            if c.flag is not None:
                lines.append(f"  {c.flag.upper():<11} [{c.scope}] {_line(c)}")
            elif show_all:
                lines.append(f"  {'':<11} [{c.scope}] {_line(c)}")
    lines.extend(f"note: {m}" for m in cmp.missing)
    reg = len(cmp.regressions)
    imp = len(cmp.flagged) - reg
    lines.append(
        "no significant changes"
        if not cmp.flagged
        else f"{reg} regression(s), {imp} improvement(s)"
    )
    return "\n".join(lines)
