"""Tests of engine/suite.py: writing, committing, opening and fingerprinting suites."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from assay.engine.errors import InputError, StorageError
from assay.engine.records import SCHEMA_VERSION, TestCase, Verdict
from assay.engine.suite import (
    SUITE_MANIFEST,
    Fingerprint,
    SuiteManifest,
    SuiteWriter,
    open_suite,
    write_suite,
)

Cases = Callable[..., list[TestCase]]


def _names(url: str) -> list[str]:
    """File names directly in a folder, on any file system (hidden ones included)."""
    fs, path = fsspec.core.url_to_fs(url)
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def _write(url: str, cases: list[TestCase], **kwargs: Any) -> SuiteManifest:
    writer = SuiteWriter(url, **kwargs)
    for case in cases:
        writer.write(case)
    return writer.commit()


def _crashed_writer(url: str, cases: list[TestCase], **kwargs: Any) -> SuiteWriter:
    """A writer that flushed temporary part files and then 'crashed' (no commit, no abort)."""
    writer = SuiteWriter(url, rows_per_file=20, batch_rows=10, **kwargs)
    for case in cases:
        writer.write(case)
    # 40 rows at 20 per file: both temporary files are closed, so no handle is left open.
    assert len(cases) % 20 == 0
    return writer


def _value_counts(arr: pa.ChunkedArray) -> dict[str, int]:
    return {d["values"]: d["counts"] for d in pc.value_counts(arr).to_pylist()}


@pytest.fixture(params=["local", "memory"])
def suite_url(
    request: pytest.FixtureRequest, tmp_path: Path, sf_memory_url: Callable[[str], str]
) -> str:
    """A fresh suite location on the local disk or in memory."""
    if request.param == "local":
        return str(tmp_path / "mysuite")
    return sf_memory_url("mysuite")


# -- roundtrip and layout ----------------------------------------------------------------------


def test_roundtrip_preserves_every_field(suite_url: str, sf_cases: Cases) -> None:
    cases = sf_cases(300)
    manifest = write_suite(suite_url, cases, created_by=["unit test"])
    suite = open_suite(suite_url)

    assert suite.manifest == manifest
    assert suite.name == "mysuite"
    assert manifest.created_by == ["unit test"]
    assert manifest.schema_version == SCHEMA_VERSION
    back = list(suite.iter_cases(batch_size=37))
    expected = [c.model_copy(update={"suite": "mysuite"}) for c in cases]
    assert back == expected
    assert {c.lang for c in back} == {"en", "zh"}
    meta = {"idx": 3, "from_traceid": "t-3", "tags": ["a", "中文"], "nested": {"k": 3}}
    assert back[3].meta == meta
    table = suite.to_table()
    assert table.num_rows == 300
    assert table.schema.equals(TestCase.arrow_schema())
    assert table.column("test_id").to_pylist() == [c.test_id for c in cases]
    # Only the committed files and the manifest are left: no temporaries.
    assert _names(suite_url) == sorted([SUITE_MANIFEST, *(f.path for f in manifest.files)])


def test_writer_splits_rows_into_part_files(suite_url: str, sf_cases: Cases) -> None:
    cases = sf_cases(300)
    manifest = _write(suite_url, cases, rows_per_file=50, batch_rows=10)

    assert [f.path for f in manifest.files] == [f"part-{i:05d}.parquet" for i in range(6)]
    assert [f.rows for f in manifest.files] == [50] * 6
    assert sum(f.rows for f in manifest.files) == manifest.counts.rows == 300
    suite = open_suite(suite_url)
    assert suite.file_rows() == [50] * 6
    assert [loc.name for loc in suite.files] == [f.path for f in manifest.files]
    for loc, rows in zip(suite.files, suite.file_rows(), strict=True):
        with loc.open("rb") as f:
            assert pq.ParquetFile(f).metadata.num_rows == rows
    assert suite.to_table().column("test_id").to_pylist() == [c.test_id for c in cases]


@pytest.mark.parametrize(
    "knobs",
    [{}, {"batch_rows": 30}, {"batch_rows": 7}, {"batch_rows": 1000, "batch_chars": 500}],
    ids=["default-batch", "batch-30", "batch-7", "char-flush"],
)
def test_rows_per_file_caps_file_size(
    tmp_path: Path, sf_cases: Cases, knobs: dict[str, int]
) -> None:
    cases = sf_cases(300)
    url = str(tmp_path / "s")
    manifest = _write(url, cases, rows_per_file=50, **knobs)
    assert [f.rows for f in manifest.files] == [50] * 6
    assert open_suite(url).to_table().column("test_id").to_pylist() == [c.test_id for c in cases]


def test_write_table_matches_write_and_keeps_order(suite_url: str, sf_cases: Cases) -> None:
    """Arrow tables and single cases, mixed: same rows, order, files and fingerprint as write()."""
    cases = sf_cases(300)
    reference = _write(suite_url + "-ref", cases, rows_per_file=50, batch_rows=10)
    writer = SuiteWriter(suite_url, rows_per_file=50, batch_rows=10)
    for case in cases[:7]:
        writer.write(case)
    writer.write_table(TestCase.to_table(cases[7:180]))
    for case in cases[180:200]:
        writer.write(case)
    writer.write_table(TestCase.to_table(cases[200:]))
    manifest = writer.commit()
    assert manifest.fingerprint == reference.fingerprint
    assert manifest.counts == reference.counts
    assert [f.rows for f in manifest.files] == [50] * 6
    table = open_suite(suite_url).to_table()
    assert table.column("test_id").to_pylist() == [c.test_id for c in cases]
    assert set(table.column("suite").to_pylist()) == {manifest.name}


def test_suite_column_is_the_suite_name(tmp_path: Path, sf_cases: Cases) -> None:
    cases = [c.model_copy(update={"suite": "somewhere-else"}) for c in sf_cases(20)]
    write_suite(str(tmp_path / "folder"), cases, name="named")
    suite = open_suite(str(tmp_path / "folder"))
    assert suite.name == "named"
    assert set(suite.to_table().column("suite").to_pylist()) == {"named"}

    write_suite(str(tmp_path / "from-folder"), cases)
    table = pq.read_table(tmp_path / "from-folder" / "part-00000.parquet")
    assert set(table.column("suite").to_pylist()) == {"from-folder"}


# -- fingerprint -------------------------------------------------------------------------------


def test_fingerprint_ignores_order_and_file_layout(tmp_path: Path, sf_cases: Cases) -> None:
    cases = sf_cases(200)
    shuffled = cases[:]
    random.Random(7).shuffle(shuffled)
    a = _write(str(tmp_path / "a"), cases)
    b = _write(str(tmp_path / "b"), shuffled, rows_per_file=40, batch_rows=20)
    assert len(b.files) == 5 and len(a.files) == 1
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 32
    # The suite name is not part of the fingerprint: it identifies the set of tests.
    c = _write(str(tmp_path / "c"), cases, name="another-name")
    assert c.fingerprint == a.fingerprint


def test_fingerprint_changes_when_one_test_differs(tmp_path: Path, sf_cases: Cases) -> None:
    cases = sf_cases(50)
    base = _write(str(tmp_path / "base"), cases).fingerprint
    changed = cases[:-1] + [cases[-1].model_copy(update={"test_id": "x" * 32})]
    retexted = cases[:-1] + [TestCase(text=cases[-1].text + "!", lang=cases[-1].lang)]
    fewer = cases[:-1]
    more = cases + sf_cases(1, start=50)
    others = [
        _write(str(tmp_path / name), variant).fingerprint
        for name, variant in [("c", changed), ("r", retexted), ("f", fewer), ("m", more)]
    ]
    assert base not in others
    assert len(set(others)) == 4


def test_fingerprint_accumulator() -> None:
    ids = [f"id-{i}" for i in range(100)]
    one, two = Fingerprint(), Fingerprint()
    one.add_many(ids)
    for tid in reversed(ids):
        two.add(tid)
    assert one.count == two.count == 100
    assert one.hexdigest() == two.hexdigest()
    dup = Fingerprint()
    dup.add_many([*ids, ids[0]])
    assert dup.hexdigest() != one.hexdigest()
    assert Fingerprint().hexdigest() != one.hexdigest()


# -- manifest counts and plain-Parquet readability ---------------------------------------------


def test_manifest_counts_match_a_direct_pyarrow_count(tmp_path: Path, sf_cases: Cases) -> None:
    url = str(tmp_path / "s")
    manifest = _write(url, sf_cases(300), rows_per_file=100, batch_rows=25)
    table = ds.dataset(url, format="parquet").to_table()
    l1 = pc.list_element(pc.split_pattern(table["risk"], "/", max_splits=1), 0)

    counts = manifest.counts
    assert counts.rows == table.num_rows == 300
    assert counts.by_lang == _value_counts(table["lang"])
    assert counts.by_risk_l1 == _value_counts(pc.fill_null(l1, "(none)"))
    assert counts.by_attack == _value_counts(pc.fill_null(table["attack"], "(base)"))
    assert counts.with_response == pc.sum(pc.is_valid(table["response"])).as_py()
    assert counts.with_label == pc.sum(pc.is_valid(table["label"])).as_py()
    for mapping in (counts.by_lang, counts.by_risk_l1, counts.by_attack):
        assert list(mapping.values()) == sorted(mapping.values(), reverse=True)
    on_disk = json.loads((tmp_path / "s" / SUITE_MANIFEST).read_text(encoding="utf-8"))
    assert SuiteManifest.model_validate(on_disk) == manifest


def test_files_are_plain_parquet_stamped_with_the_schema_version(
    tmp_path: Path, sf_cases: Cases
) -> None:
    cases = sf_cases(120)
    manifest = _write(str(tmp_path / "s"), cases, rows_per_file=60, batch_rows=20)
    ids = []
    for f in manifest.files:
        path = tmp_path / "s" / f.path
        table = pq.read_table(path)
        assert table.num_rows == f.rows
        meta = pq.read_schema(path).metadata
        assert meta[b"assay.schema_version"] == SCHEMA_VERSION.encode()
        assert meta[b"assay.record"] == b"TestCase"
        assert table.schema.names == TestCase.arrow_schema().names
        ids += table.column("test_id").to_pylist()
    assert ids == [c.test_id for c in cases]


def test_pyarrow_dataset_reads_exactly_the_committed_rows(tmp_path: Path, sf_cases: Cases) -> None:
    url = str(tmp_path / "s")
    committed = sf_cases(60)
    _write(url, committed, rows_per_file=25, batch_rows=5)
    # A second writer replacing the suite is under way: its temporary files sit next to the parts.
    pending = _crashed_writer(url, sf_cases(40, start=1000), overwrite=True)
    assert any(n.startswith(".tmp-") for n in _names(url))

    table = ds.dataset(url, format="parquet").to_table()
    assert sorted(table.column("test_id").to_pylist()) == sorted(c.test_id for c in committed)
    assert open_suite(url).to_table().num_rows == 60
    pending.abort()
    assert not any(n.startswith(".tmp-") for n in _names(url))


# -- crashes, abort, overwrite -----------------------------------------------------------------


def test_crashed_write_is_refused_as_unfinished(suite_url: str, sf_cases: Cases) -> None:
    _crashed_writer(suite_url, sf_cases(40))
    assert any(n.startswith(".tmp-") for n in _names(suite_url))
    assert SUITE_MANIFEST not in _names(suite_url)
    with pytest.raises(InputError, match="unfinished suite write"):
        open_suite(suite_url)


def test_crashed_overwrite_leaves_the_old_suite_readable(tmp_path: Path, sf_cases: Cases) -> None:
    url = str(tmp_path / "s")
    old = write_suite(url, sf_cases(30))
    _crashed_writer(url, sf_cases(40, start=500), overwrite=True)
    suite = open_suite(url)
    assert suite.manifest == old
    assert suite.scan()[1] == old.fingerprint


def test_abort_leaves_no_files(suite_url: str, sf_cases: Cases) -> None:
    writer = SuiteWriter(suite_url, rows_per_file=20, batch_rows=10)
    for case in sf_cases(45):
        writer.write(case)  # the last file is still open when abort() is called
    writer.abort()
    fs, path = fsspec.core.url_to_fs(suite_url)
    assert not fs.exists(path) or fs.ls(path, detail=False) == []


def test_abort_of_an_overwrite_keeps_the_old_suite(suite_url: str, sf_cases: Cases) -> None:
    old = write_suite(suite_url, sf_cases(30))
    before = _names(suite_url)
    writer = SuiteWriter(suite_url, overwrite=True, rows_per_file=20, batch_rows=10)
    for case in sf_cases(45, start=100):
        writer.write(case)
    writer.abort()
    assert _names(suite_url) == before
    assert open_suite(suite_url).manifest == old


def test_write_suite_aborts_when_the_input_fails(suite_url: str) -> None:
    # More rows than SuiteWriter's default batch_rows, so a temporary file exists at the failure.
    cases = [TestCase(text=f"prompt {i}", lang="en") for i in range(5_100)]

    def failing() -> Iterator[TestCase]:
        yield from cases
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_suite(suite_url, failing())
    fs, path = fsspec.core.url_to_fs(suite_url)
    assert not fs.exists(path) or fs.ls(path, detail=False) == []


def test_writing_over_a_suite_without_overwrite_raises(suite_url: str, sf_cases: Cases) -> None:
    old = write_suite(suite_url, sf_cases(10))
    with pytest.raises(StorageError, match="already exists"):
        write_suite(suite_url, sf_cases(5, start=100))
    with pytest.raises(StorageError):
        SuiteWriter(suite_url)
    assert open_suite(suite_url).manifest == old


def test_writer_refuses_a_file_location(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(StorageError, match="not a folder"):
        SuiteWriter(str(target))


def test_writing_over_a_foreign_dataset_without_overwrite_raises(
    tmp_path: Path, sf_cases: Cases
) -> None:
    folder = tmp_path / "foreign"
    folder.mkdir()
    pq.write_table(TestCase.to_table(sf_cases(10)), folder / "mydata.parquet")
    try:
        with pytest.raises(StorageError):
            write_suite(str(folder), sf_cases(5, start=100))
    finally:
        assert (folder / "mydata.parquet").exists(), "the user's file was deleted"


def test_overwrite_replaces_the_suite_completely(suite_url: str, sf_cases: Cases) -> None:
    _write(suite_url, sf_cases(100), rows_per_file=25, batch_rows=25)  # 4 part files
    crashed = _crashed_writer(suite_url, sf_cases(40, start=5000), overwrite=True)
    crashed_temps = {n for n in _names(suite_url) if n.startswith(".tmp-")}
    assert crashed_temps

    new_cases = sf_cases(30, start=200)
    manifest = write_suite(suite_url, new_cases, overwrite=True)

    assert _names(suite_url) == [SUITE_MANIFEST, "part-00000.parquet"]
    suite = open_suite(suite_url)
    assert suite.manifest == manifest
    assert suite.to_table().column("test_id").to_pylist() == [c.test_id for c in new_cases]
    assert manifest.counts.rows == 30
    crashed.abort()  # the crashed writer's temporaries are gone already; abort tolerates that
    assert open_suite(suite_url).to_table().num_rows == 30


def test_overwrite_cleans_a_crashed_write(suite_url: str, sf_cases: Cases) -> None:
    _crashed_writer(suite_url, sf_cases(40, start=900))
    cases = sf_cases(15)
    write_suite(suite_url, cases, overwrite=True)
    assert _names(suite_url) == [SUITE_MANIFEST, "part-00000.parquet"]
    assert open_suite(suite_url).scan()[0].rows == 15


def test_writer_is_unusable_after_commit_or_abort(suite_url: str, sf_cases: Cases) -> None:
    writer = SuiteWriter(suite_url)
    for case in sf_cases(20):
        writer.write(case)
    manifest = writer.commit()
    # A second commit must not start by deleting the committed suite's manifest and parts.
    with pytest.raises(StorageError, match="already committed or aborted"):
        writer.commit()
    with pytest.raises(StorageError):
        writer.write(sf_cases(1, start=99)[0])
    writer.abort()  # harmless after a commit: the temporaries were renamed already
    suite = open_suite(suite_url)
    assert suite.manifest == manifest
    assert suite.to_table().num_rows == 20

    other = SuiteWriter(suite_url, overwrite=True)
    other.abort()
    with pytest.raises(StorageError):
        other.commit()
    assert open_suite(suite_url).manifest == manifest


# -- foreign data and single files -------------------------------------------------------------


def test_foreign_parquet_missing_columns_suggests_import(tmp_path: Path) -> None:
    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"prompt": ["hello"], "category": ["x"]}), path)
    suite = open_suite(str(path))
    with pytest.raises(InputError, match="assay import parquet"):
        suite.to_table()

    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["hello"], "lang": ["en"]}), folder / "a.parquet")
    with pytest.raises(InputError, match="assay import parquet"):
        list(open_suite(str(folder)).iter_cases())


def test_foreign_parquet_of_another_record_or_schema_version_is_rejected(
    tmp_path: Path, sf_cases: Cases
) -> None:
    verdicts = Verdict.to_table([Verdict(test_id="t", target="m", judge="j")])
    pq.write_table(verdicts, tmp_path / "verdicts.parquet")
    with pytest.raises(InputError, match="Verdict rows"):
        open_suite(str(tmp_path / "verdicts.parquet")).to_table()

    table = TestCase.to_table(sf_cases(3))
    future = table.replace_schema_metadata(
        {b"assay.schema_version": b"99", b"assay.record": b"TestCase"}
    )
    pq.write_table(future, tmp_path / "future.parquet")
    with pytest.raises(InputError, match="schema version 99"):
        open_suite(str(tmp_path / "future.parquet")).to_table()


def test_foreign_folder_without_manifest_is_a_suite(tmp_path: Path, sf_cases: Cases) -> None:
    cases = sf_cases(30)
    table = TestCase.to_table(cases)
    names = table.schema.names[:]
    random.Random(3).shuffle(names)
    # Written by someone else: columns in another order, no assay metadata, an extra column.
    plain = pa.table({n: table.column(n) for n in names}).append_column(
        "extra", pa.array(range(30))
    )
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(plain.slice(0, 10), folder / "b-first.parquet")
    pq.write_table(plain.slice(10), folder / "c-second.parquet")
    (folder / "README.md").write_text("not data", encoding="utf-8")
    pq.write_table(plain.slice(0, 5), folder / "_ignored.parquet")

    suite = open_suite(str(folder))
    assert suite.manifest is None
    assert suite.name == "data"
    assert [loc.name for loc in suite.files] == ["b-first.parquet", "c-second.parquet"]
    assert suite.file_rows() == [10, 20]
    assert list(suite.iter_cases()) == cases
    counts, fingerprint = suite.scan()
    assert counts.rows == 30
    assert fingerprint == write_suite(str(tmp_path / "copy"), cases).fingerprint


def test_single_file_suite(suite_url: str, sf_cases: Cases) -> None:
    cases = sf_cases(40)
    fs, path = fsspec.core.url_to_fs(suite_url)
    fs.makedirs(path, exist_ok=True)
    url = f"{suite_url}/single.parquet"
    with fs.open(f"{path}/single.parquet", "wb") as f:
        pq.write_table(TestCase.to_table(cases), f, row_group_size=7)

    suite = open_suite(url)
    assert suite.manifest is None
    assert suite.name == "single"
    assert suite.url == url
    assert suite.file_rows() == [40]
    assert list(suite.iter_cases(batch_size=9)) == cases
    assert suite.scan()[0].rows == 40


def test_scan_equals_the_manifest(suite_url: str, sf_cases: Cases) -> None:
    manifest = _write(suite_url, sf_cases(250), rows_per_file=100, batch_rows=50)
    counts, fingerprint = open_suite(suite_url).scan()
    assert counts == manifest.counts
    assert fingerprint == manifest.fingerprint


def test_open_suite_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no suite at"):
        open_suite(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Parquet files"):
        open_suite(str(tmp_path / "empty"))


def test_empty_suite_commits_and_reads_back(suite_url: str) -> None:
    manifest = write_suite(suite_url, [])
    assert manifest.files == [] and manifest.counts.rows == 0
    suite = open_suite(suite_url)
    assert suite.to_table().num_rows == 0
    assert suite.scan() == (manifest.counts, manifest.fingerprint)


def test_local_suite_files_are_where_the_manifest_says(tmp_path: Path, sf_cases: Cases) -> None:
    url = str(tmp_path / "s")
    manifest = _write(url, sf_cases(70), rows_per_file=30, batch_rows=10)
    listed = sorted(os.listdir(url))
    assert listed == sorted([SUITE_MANIFEST, *(f.path for f in manifest.files)])
    assert [f.rows for f in manifest.files] == [30, 30, 10]
