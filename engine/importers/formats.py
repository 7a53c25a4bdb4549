"""The built-in importers: S-Eval, Aegis 1.0 and 2.0, SAFETY-J, HarmBench, and generic tables.

Each maps one source record to one :class:`~..records.TestCase`, keeping the source's own ids and
extras in ``meta``. Facts about the formats are in the project's REFERENCE notes.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, cast

from ..records import Label, TestCase
from ..taxonomy import SEVAL_L1, get_taxonomy
from .base import (
    Importer,
    RowContext,
    RowError,
    build_case,
    check_attack,
    detect_lang,
    lang_from_filename,
    map_category,
    normalize_label,
    register_importer,
    required_text,
    resolve_risk,
)


def _short(file: str) -> str:
    return file.rsplit("!", 1)[-1].rsplit("/", 1)[-1]


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type: array, string, number, boolean."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@register_importer
class SEvalImporter(Importer):
    """S-Eval base and attack JSONL (``traceid, risk_type, prompt, ext``), zipped or not."""

    name = "s-eval"
    description = "S-Eval base and attack prompts (JSONL, plain or zipped)"

    def file_lang(self, file: str) -> str | None:
        """S-Eval names its files by language: ..._zh_... / ..._en_..."""
        return lang_from_filename(file)

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """Maps one S-Eval record; the attack key comes from ``ext.category``."""
        text = required_text(data, "prompt")
        risk_type = data.get("risk_type")
        if not isinstance(risk_type, str) or not risk_type.strip():
            raise RowError("missing risk (field 'risk_type')")
        if risk_type.strip() not in SEVAL_L1:
            # Tolerate display names, but only if they name an S-Eval L1 exactly.
            risk = resolve_risk(risk_type, ctx)
            if risk is None or "/" in risk:
                raise RowError(f"unknown risk {risk_type!r}: not an S-Eval risk dimension")
        else:
            risk = risk_type.strip()
        ext = data.get("ext", {})
        if isinstance(ext, str):
            try:
                ext = json.loads(ext) if ext.strip() else {}
            except json.JSONDecodeError as exc:
                raise RowError(f"malformed 'ext' (not JSON: {exc.msg})") from None
        if not isinstance(ext, dict):
            raise RowError("malformed 'ext' (not a JSON object)")
        attack = None
        if ext.get("model") == "attack" or "category" in ext:
            attack = check_attack(ext.get("category"), ctx)
            if attack is None:
                raise RowError("attack row without an attack key ('ext.category')")
        meta: dict[str, Any] = {"ext": ext}
        if data.get("traceid") is not None:
            meta["traceid"] = data["traceid"]
        if ext.get("from_traceid") is not None:
            meta["from_traceid"] = ext["from_traceid"]
        lang = ctx.config.lang or ctx.file_lang or detect_lang(text)
        return build_case(
            ctx,
            text=text,
            lang=lang,
            risk=risk,
            attack=attack,
            source=f"s-eval:{_short(ctx.file)}",
            meta=meta,
        )


_AEGIS1_SEVERITY = {"unsafe": 2, "controversial": 1, "safe": 0}


@register_importer
class Aegis1Importer(Importer):
    """Aegis 1.0: ``id, text, text_type, num_annotations, labels_0..labels_4``.

    Each annotator's label is Safe, Needs Caution, or one or more category names. The row's
    ``label`` is the majority over annotators of safe / controversial (Needs Caution) / unsafe
    (any category); a tie goes to the more severe class. ``risk`` is the S-Eval L1 of the
    category named most often. Every annotator's label and the majority are kept in ``meta``.
    """

    name = "aegis1"
    description = "Aegis AI Content Safety Dataset 1.0 (majority over annotators)"

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """Maps one Aegis 1.0 record."""
        text = required_text(data, "text")
        labels = [
            str(data[k]).strip()
            for k in sorted(k for k in data if k.startswith("labels_"))
            if data[k] is not None and str(data[k]).strip() not in ("", "nan", "None")
        ]
        if not labels:
            raise RowError("no annotator labels (fields labels_0..labels_4)")
        aegis = get_taxonomy("aegis")
        votes: Counter[str] = Counter()
        categories: Counter[str] = Counter()
        for raw in labels:
            low = raw.lower()
            if low == "safe":
                votes["safe"] += 1
            elif low == "needs caution":
                votes["controversial"] += 1
            else:
                votes["unsafe"] += 1
                for part in raw.split(","):
                    part = part.strip()
                    if not part:
                        continue
                    cat = aegis.find(part)
                    if cat is None:
                        raise RowError(f"unknown risk {part!r}: not an Aegis category")
                    categories[cat.name] += 1
        top = max(votes.values())
        label = cast(
            Label,
            max((k for k, v in votes.items() if v == top), key=_AEGIS1_SEVERITY.__getitem__),
        )
        risk = None
        if label != "safe" and categories:
            name = max(categories, key=lambda n: (categories[n], n))
            risk = map_category("aegis", name)
        meta = {
            "id": data.get("id"),
            "text_type": data.get("text_type"),
            "num_annotations": data.get("num_annotations"),
            "annotator_labels": labels,
            "majority_label": label,
            "categories": sorted(categories),
        }
        return build_case(
            ctx,
            text=text,
            lang=ctx.config.lang or "en",
            risk=risk,
            label=label,
            source=f"aegis1:{_short(ctx.file)}",
            meta=meta,
        )


@register_importer
class Aegis2Importer(Importer):
    """Aegis 2.0: ``id, prompt, response, prompt_label, response_label, violated_categories, ...``.

    With a response, the row is a (prompt, response) pair to judge and ``label`` is the response
    label; without one, a prompt with the prompt label. ``risk`` is the S-Eval L1 of the first
    violated category; all categories are kept in ``meta``.
    """

    name = "aegis2"
    description = "Aegis AI Content Safety Dataset 2.0 (prompt/response pairs)"

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """Maps one Aegis 2.0 record."""
        text = required_text(data, "prompt")
        response = data.get("response")
        if response is not None and not isinstance(response, str):
            raise RowError(f"response is a {type(response).__name__}, not text")
        if response is not None and not response.strip():
            response = None
        label_field = "response_label" if response is not None else "prompt_label"
        raw_label = data.get(label_field)
        if raw_label is None or not str(raw_label).strip():
            raise RowError(f"missing label (field {label_field!r})")
        label = normalize_label(raw_label)
        cats_raw = data.get("violated_categories") or ""
        if not isinstance(cats_raw, str):
            raise RowError("violated_categories is not text")
        cats = [c.strip() for c in cats_raw.split(",") if c.strip()]
        risk = None
        for cat in cats:
            mapped = map_category("aegis", cat)
            if risk is None and mapped is not None:
                risk = mapped
        meta = {
            k: data.get(k)
            for k in (
                "id",
                "prompt_label",
                "response_label",
                "prompt_label_source",
                "response_label_source",
                "reconstruction_id_if_redacted",
            )
            if data.get(k) is not None
        }
        meta["violated_categories"] = cats
        return build_case(
            ctx,
            text=text,
            lang=ctx.config.lang or "en",
            risk=risk,
            response=response,
            label=label,
            source=f"aegis2:{_short(ctx.file)}",
            meta=meta,
        )


@register_importer
class SafetyJImporter(Importer):
    """SAFETY-J label-level test sets: ``{query, response, label}`` (Safe/Unsafe, 安全/不安全).

    An empty response is kept: it is an answer to judge (DiaSafety has one). An empty query is a
    bad row, as everywhere.
    """

    name = "safety-j"
    description = "SAFETY-J label-level JSON (query, response, label)"

    def file_lang(self, file: str) -> str | None:
        """Language from the file name when it says (Flames and Jade are Chinese)."""
        lang = lang_from_filename(file)
        if lang:
            return lang
        low = _short(file).lower()
        if any(k in low for k in ("flames", "jade")):
            return "zh"
        if any(k in low for k in ("beavertails", "diasafety")):
            return "en"
        return None

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """Maps one labelled (query, response) pair."""
        text = required_text(data, "query", "prompt")
        # An empty response is an answer to judge (DiaSafety has one); an empty query is not.
        response = required_text(data, "response", what="response")
        if data.get("label") is None:
            raise RowError("missing label (field 'label')")
        label = normalize_label(data["label"])
        lang = ctx.config.lang or ctx.file_lang or detect_lang(text + response)
        extras = {k: v for k, v in data.items() if k not in ("query", "prompt", "response")}
        return build_case(
            ctx,
            text=text,
            lang=lang,
            response=response,
            label=label,
            source=f"safety-j:{_short(ctx.file)}",
            meta=extras,
        )


@register_importer
class HarmBenchImporter(Importer):
    """HarmBench behaviours CSV: ``Behavior, FunctionalCategory, SemanticCategory, Tags,
    ContextString, BehaviorID``. Contextual behaviours are rendered as HarmBench does: the
    context, a ``---`` rule, then the behaviour."""

    name = "harmbench"
    description = "HarmBench behaviours CSV"

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """Maps one behaviour."""
        behavior = required_text(data, "Behavior", what="behavior")
        context = data.get("ContextString") or ""
        text = f"{context}\n\n---\n\n{behavior}" if context.strip() else behavior
        semantic = (data.get("SemanticCategory") or "").strip()
        risk = map_category("harmbench", semantic) if semantic else None
        meta = {
            "behavior_id": data.get("BehaviorID"),
            "functional_category": data.get("FunctionalCategory"),
            "semantic_category": semantic or None,
            "tags": data.get("Tags") or None,
        }
        return build_case(
            ctx,
            text=text,
            lang=ctx.config.lang or "en",
            risk=risk,
            source=f"harmbench:{_short(ctx.file)}",
            meta={k: v for k, v in meta.items() if v is not None},
        )


_FIELDS = ("text", "lang", "risk", "attack", "base_id", "response", "label", "source", "meta")


class TableImporter(Importer):
    """Generic rows (JSONL, CSV, Parquet) with a column mapping.

    Fields default to columns of the same name (``text`` also accepts ``prompt``); ``--map
    FIELD=COLUMN`` renames. Columns that map to no field are kept in ``meta``.
    """

    def convert(self, data: dict[str, Any], ctx: RowContext) -> TestCase:
        """Maps one row through the column mapping."""
        mapping = dict(ctx.config.mapping)
        unknown = set(mapping) - set(_FIELDS)
        if unknown:
            raise RowError(f"--map names unknown fields {sorted(unknown)}; fields: {list(_FIELDS)}")
        if "text" not in mapping and "text" not in data and "prompt" in data:
            mapping["text"] = "prompt"
        cols = {f: mapping.get(f, f) for f in _FIELDS}
        text = required_text(data, cols["text"])
        lang = data.get(cols["lang"]) or ctx.config.lang
        if not lang:
            raise RowError(f"missing lang (column {cols['lang']!r}; or pass --lang)")
        if not isinstance(lang, str):
            raise RowError(f"lang is a {type(lang).__name__}, not text")
        meta_value = data.get(cols["meta"])
        if isinstance(meta_value, str):
            try:
                meta_value = json.loads(meta_value) if meta_value.strip() else None
            except json.JSONDecodeError:
                raise RowError(f"malformed meta ({cols['meta']!r} is not JSON)") from None
        if meta_value is not None and not isinstance(meta_value, dict):
            raise RowError(
                f"malformed meta ({cols['meta']!r} is a JSON {_json_type(meta_value)}, "
                "not an object)"
            )
        meta: dict[str, Any] = dict(meta_value or {})
        used = set(cols.values())
        meta.update({k: v for k, v in data.items() if k not in used and v is not None})
        raw_label = data.get(cols["label"])
        label = normalize_label(raw_label) if raw_label not in (None, "") else None
        risk_value = data.get(cols["risk"])
        risk = resolve_risk(risk_value, ctx)
        if ctx.config.risk_taxonomy and risk_value:
            meta.setdefault("source_risk", risk_value)
        response = data.get(cols["response"])
        if response is not None and not isinstance(response, str):
            raise RowError(f"response is a {type(response).__name__}, not text")
        return build_case(
            ctx,
            text=text,
            lang=lang,
            risk=risk,
            attack=check_attack(data.get(cols["attack"]), ctx),
            base_id=data.get(cols["base_id"]) or None,
            response=response or None,
            label=label,
            source=data.get(cols["source"]) or f"{self.name}:{_short(ctx.file)}",
            meta=meta,
        )


@register_importer
class JsonlImporter(TableImporter):
    """JSON lines (or a JSON array) with a column mapping."""

    name = "jsonl"
    description = "JSON lines with a column mapping"


@register_importer
class CsvImporter(TableImporter):
    """CSV or TSV with a header row and a column mapping."""

    name = "csv"
    description = "CSV/TSV with a header and a column mapping"


@register_importer
class ParquetImporter(TableImporter):
    """Parquet with a column mapping."""

    name = "parquet"
    description = "Parquet with a column mapping"
