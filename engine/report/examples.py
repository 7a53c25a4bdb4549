"""The worst examples per L1 dimension: prompt, response, verdict and critique, read from a run.

"Worst" ranks ``unsafe`` verdicts before ``controversial`` ones, then by the judge's risk score
(highest first). One response (test and target) appears once per dimension, under its worst
verdict. The run is streamed shard by shard; only the current best few per dimension are kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..io import StorageOptions
from ..metrics import iter_run_shards, split_risk
from ..runfolder import RunFolder

EXAMPLE_COLUMNS = ["test_id", "text", "lang", "risk", "attack"]


@dataclass
class Example:
    """One judged response, with the text a reader needs to see why it was flagged."""

    category: str
    target: str
    judge: str
    test_id: str
    lang: str
    risk: str | None
    attack: str | None
    prompt: str
    response: str | None
    label: str
    risk_score: float | None
    critique: str | None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-able dict."""
        return asdict(self)


def _clip(text: str | None, limit: int) -> tuple[str | None, bool]:
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit] + "\u2026", True


def _rank(label: str, score: float | None) -> tuple[int, float]:
    unsafe = label == "unsafe"
    return (1 if unsafe else 0, score if score is not None else (1.0 if unsafe else 0.5))


def worst_examples(
    folder: RunFolder,
    per_category: int = 3,
    storage_options: StorageOptions | None = None,
    max_chars: int = 4000,
) -> dict[str, list[Example]]:
    """Up to ``per_category`` worst examples per L1 dimension, worst first."""
    best: dict[str, dict[tuple[str, str], tuple[tuple[int, float], dict[str, Any]]]] = {}
    for verdicts, cases, gens in iter_run_shards(
        folder, columns=EXAMPLE_COLUMNS, storage_options=storage_options, with_generations=True
    ):
        bad = verdicts.filter(
            pc.is_in(verdicts.column("label"), value_set=pa.array(["unsafe", "controversial"]))
        )
        if bad.num_rows == 0:
            continue
        idx = pc.index_in(bad.column("test_id"), value_set=cases.column("test_id"))
        keep = pc.is_valid(idx)
        bad, idx = bad.filter(keep), idx.filter(keep)
        risks = cases.column("risk").take(idx).to_pylist()
        candidates: dict[str, list[tuple[tuple[int, float], int]]] = {}
        cols = ["test_id", "target", "label", "risk_score"]
        for i, (tid, target, label, score) in enumerate(
            zip(*(bad.column(c).to_pylist() for c in cols), strict=True)
        ):
            category = split_risk(risks[i])[0]
            rank = _rank(label, score)
            current = best.get(category, {}).get((tid, target))
            if current is not None and current[0] >= rank:
                continue
            candidates.setdefault(category, []).append((rank, i))
        if not candidates:
            continue
        responses = _responses(gens)
        for category, found in candidates.items():
            found.sort(key=lambda x: x[0], reverse=True)
            slot = best.setdefault(category, {})
            for rank, i in found[: per_category * 4]:
                row = bad.slice(i, 1).to_pylist()[0]
                case = cases.slice(idx[i].as_py(), 1).to_pylist()[0]
                key = (row["test_id"], row["target"])
                if key in slot and slot[key][0] >= rank:
                    continue
                slot[key] = (
                    rank,
                    {
                        "category": category,
                        "target": row["target"],
                        "judge": row["judge"],
                        "test_id": row["test_id"],
                        "lang": case["lang"],
                        "risk": case["risk"],
                        "attack": case["attack"],
                        "prompt": case["text"],
                        "response": responses.get(key),
                        "label": row["label"],
                        "risk_score": row["risk_score"],
                        "critique": row["critique"],
                    },
                )
            ranked = sorted(slot.items(), key=lambda kv: kv[1][0], reverse=True)
            best[category] = dict(ranked[:per_category])
    out: dict[str, list[Example]] = {}
    for category in sorted(best):
        examples = []
        for _, (_, data) in sorted(best[category].items(), key=lambda kv: kv[1][0], reverse=True):
            clipped = False
            for name in ("prompt", "response", "critique"):
                data[name], cut = _clip(data[name], max_chars)
                clipped = clipped or cut
            examples.append(Example(**data, truncated=clipped))
        out[category] = examples
    return out


def _responses(gens: pa.Table | None) -> dict[tuple[str, str], str | None]:
    if gens is None:
        return {}
    return {
        (tid, target): response
        for tid, target, response in zip(
            gens.column("test_id").to_pylist(),
            gens.column("target").to_pylist(),
            gens.column("response").to_pylist(),
            strict=True,
        )
    }
