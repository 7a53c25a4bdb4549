"""Records: stable ids, explicit Arrow schemas with versions, round trips."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from assay.engine.records import (
    RECORD_TYPES,
    SCHEMA_VERSION,
    Generation,
    ResultRow,
    TestCase,
    Verdict,
    conform,
    make_test_id,
    schema_version_of,
)


def case(**kw: object) -> TestCase:
    fields: dict[str, object] = {
        "text": "How do I pick a lock?",
        "lang": "en",
        "risk": "Cybersecurity",
    }
    fields.update(kw)
    return TestCase(**fields)  # type: ignore[arg-type]


def test_test_id_is_a_stable_content_hash() -> None:
    a, b = case(), case(suite="other", source="x", meta={"k": 1}, base_id="b", label="unsafe")
    assert a.test_id == b.test_id  # suite, source, meta, base_id and label do not define a test
    assert len(a.test_id) == 32 and int(a.test_id, 16) >= 0
    assert a.test_id == make_test_id("How do I pick a lock?", "en", "Cybersecurity", None)
    # each defining field changes the id
    others = [
        case(text="How do I pick a lock? "),
        case(lang="zh"),
        case(risk="Data_Privacy"),
        case(attack="goal_hijacking"),
        case(response="No."),
    ]
    assert len({a.test_id, *(o.test_id for o in others)}) == 6
    # Unicode normalisation: composed and decomposed forms are the same prompt
    assert case(text="caf\u00e9").test_id == case(text="cafe\u0301").test_id


def test_given_test_id_is_kept() -> None:
    assert case(test_id="abc").test_id == "abc"


@pytest.mark.parametrize(
    "bad",
    [
        {"text": ""},
        {"text": "   \n"},
        {"lang": "English"},
        {"lang": ""},
        {"label": "maybe"},
        {"unknown_field": 1},
    ],
)
def test_invalid_test_cases_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        case(**bad)


def test_verdict_risk_score_is_a_probability() -> None:
    Verdict(test_id="t", target="m", judge="j", risk_score=0.0)
    Verdict(test_id="t", target="m", judge="j", risk_score=1.0)
    with pytest.raises(ValidationError):
        Verdict(test_id="t", target="m", judge="j", risk_score=1.5)


@pytest.mark.parametrize("record", list(RECORD_TYPES.values()), ids=list(RECORD_TYPES))
def test_arrow_schema_is_explicit_documented_and_versioned(record: type) -> None:
    schema = record.arrow_schema()
    assert schema.names == list(record.model_fields)
    for f in schema:
        assert f.metadata[b"description"], f"{record.__name__}.{f.name} has no description"
    assert schema_version_of(schema) == (record.RECORD_NAME, SCHEMA_VERSION)


def test_schema_types() -> None:
    s = TestCase.arrow_schema()
    assert s.field("text").type == pa.string() and not s.field("text").nullable
    assert s.field("risk").nullable and s.field("attack").nullable
    assert s.field("meta").type == pa.string()  # JSON text
    v = Verdict.arrow_schema()
    assert v.field("risk_tags").type == pa.list_(pa.string())
    assert v.field("risk_score").type == pa.float64() and v.field("parse_ok").type == pa.bool_()
    g = Generation.arrow_schema()
    assert g.field("output_tokens").type == pa.int64()


def test_round_trip_through_parquet_with_plain_pyarrow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = [case(text=f"prompt {i}", meta={"i": i, "zh": "中文"}) for i in range(5)]
    path = tmp_path / "t.parquet"
    pq.write_table(TestCase.to_table(cases), path)
    # plain pyarrow: the version is in the file's metadata
    assert pq.read_schema(path).metadata[b"assay.schema_version"] == SCHEMA_VERSION.encode()
    assert pq.read_schema(path).metadata[b"assay.record"] == b"TestCase"
    back = TestCase.from_table(pq.read_table(path))
    assert back == cases


def test_result_row_join() -> None:
    c = case(label="unsafe")
    g = Generation(test_id=c.test_id, target="m", response="Sure...", output_tokens=3)
    v = Verdict(
        test_id=c.test_id,
        target="m",
        judge="j",
        label="unsafe",
        risk_score=0.9,
        risk_tags=["Cybersecurity"],
    )
    row = ResultRow.join("run1", c, g, v)
    assert (row.run_id, row.test_id, row.target, row.judge) == ("run1", c.test_id, "m", "j")
    assert row.expected_label == "unsafe" and row.response == "Sure..." and row.risk_score == 0.9
    table = ResultRow.to_table([row])
    assert ResultRow.from_table(table) == [row]
    with pytest.raises(ValueError, match="different tests"):
        ResultRow.join("run1", c, g.model_copy(update={"test_id": "x"}), v)
    with pytest.raises(ValueError, match="verdict on"):
        ResultRow.join("run1", c, g, v.model_copy(update={"target": "other"}))


def test_conform_checks_columns() -> None:
    table = TestCase.to_table([case()])
    assert conform(table.select(list(reversed(table.schema.names))), TestCase).schema.names == (
        table.schema.names
    )
    with pytest.raises(ValueError, match="missing columns"):
        conform(table.drop(["lang"]), TestCase)
