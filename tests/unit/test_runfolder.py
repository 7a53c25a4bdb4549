"""Tests of engine/runfolder.py: shard plans, shard reads and the run-folder storage contract."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from assay.engine import runfolder
from assay.engine.errors import ConfigError, StorageError
from assay.engine.io import write_parquet_atomic
from assay.engine.records import Generation, TestCase, Verdict
from assay.engine.runfolder import (
    RunFolder,
    RunManifest,
    Shard,
    canonical_hash,
    plan_shards,
    read_shard,
)
from assay.engine.suite import Suite, SuiteWriter, open_suite

Cases = Callable[..., list[TestCase]]


def _suite(url: str, cases: list[TestCase], rows_per_file: int, batch_rows: int) -> Suite:
    writer = SuiteWriter(url, rows_per_file=rows_per_file, batch_rows=batch_rows)
    for case in cases:
        writer.write(case)
    writer.commit()
    return open_suite(url)


def _ids(table: pa.Table) -> list[str]:
    ids: list[str] = table.column("test_id").to_pylist()
    return ids


def _verdicts(shard_id: int, n: int, judge: str = "j") -> pa.Table:
    rows = [
        Verdict(test_id=f"s{shard_id}-t{i}", target="m", judge=judge, label="safe")
        for i in range(n)
    ]
    return Verdict.to_table(rows)


def _manifest(suite: Suite, run_id: str = "run-1", config_hash: str = "cfg-a") -> RunManifest:
    assert suite.manifest is not None
    return RunManifest(
        run_id=run_id,
        config={"targets": ["m"], "judge": "j"},
        config_hash=config_hash,
        suite_url=suite.url,
        suite_fingerprint=suite.manifest.fingerprint,
        plan=plan_shards(suite, 10),
        stages=["generations", "verdicts"],
        versions=runfolder.software_versions(),
    )


@pytest.fixture
def suite(tmp_path: Path, sf_cases: Cases) -> Suite:
    """A committed 45-row suite in three files (20, 20, 5 rows)."""
    return _suite(str(tmp_path / "suite"), sf_cases(45), rows_per_file=20, batch_rows=10)


@pytest.fixture
def run(tmp_path: Path) -> RunFolder:
    """An empty run folder on the local disk."""
    return RunFolder(str(tmp_path / "runs"), "run-1")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Makes runfolder's utc_now return the given times, in order (no sleeping, no real time)."""
    times: list[str] = []
    monkeypatch.setattr(runfolder, "utc_now", lambda: times.pop(0))
    yield times


# -- plan_shards and read_shard ----------------------------------------------------------------


def test_plan_is_deterministic(suite: Suite) -> None:
    first = plan_shards(suite, 7)
    again = plan_shards(open_suite(suite.url), 7)
    assert first == again
    assert first.model_dump() == again.model_dump()
    assert plan_shards(suite, 8) != first


@pytest.mark.parametrize("shard_size", [1, 3, 7, 20, 21, 1000])
def test_plan_covers_every_row_once(suite: Suite, shard_size: int) -> None:
    plan = plan_shards(suite, shard_size)
    assert plan.shard_size == shard_size
    assert plan.total_rows == 45
    assert [s.shard_id for s in plan.shards] == list(range(len(plan.shards)))
    assert sum(s.rows for s in plan.shards) == 45

    by_file: dict[str, list[Shard]] = {}
    for shard in plan.shards:
        by_file.setdefault(shard.file, []).append(shard)
    assert list(by_file) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for file, rows in zip(by_file, [20, 20, 5], strict=True):
        shards = by_file[file]
        assert shards[0].row_start == 0
        assert shards[-1].row_end == rows
        for before, after in zip(shards, shards[1:], strict=False):
            assert before.row_end == after.row_start
        assert all(s.rows == shard_size for s in shards[:-1])
        assert 0 < shards[-1].rows <= shard_size  # the last shard of a file may be shorter

    read = [tid for s in plan.shards for tid in _ids(read_shard(suite, s))]
    assert read == _ids(suite.to_table())


def test_plan_shorter_last_shard_per_file(suite: Suite) -> None:
    plan = plan_shards(suite, 7)
    file_no = {f"part-{i:05d}.parquet": i for i in range(3)}
    assert [(file_no[s.file], s.row_start, s.row_end) for s in plan.shards] == [
        (0, 0, 7), (0, 7, 14), (0, 14, 20),
        (1, 0, 7), (1, 7, 14), (1, 14, 20),
        (2, 0, 5),
    ]  # fmt: skip


def test_plan_rejects_a_bad_shard_size(suite: Suite) -> None:
    for size in (0, -3):
        with pytest.raises(ConfigError, match="shard_size"):
            plan_shards(suite, size)


@pytest.mark.parametrize("shard_size", [1, 4, 7, 10, 13, 50, 64])
def test_read_shard_spans_row_groups(tmp_path: Path, sf_cases: Cases, shard_size: int) -> None:
    cases = sf_cases(50)
    path = tmp_path / "grouped.parquet"
    pq.write_table(TestCase.to_table(cases), path, row_group_size=7)
    assert pq.ParquetFile(path).num_row_groups == 8
    suite = open_suite(str(path))

    plan = plan_shards(suite, shard_size)
    assert {s.file for s in plan.shards} == {"grouped.parquet"}
    expected = [c.test_id for c in cases]
    for shard in plan.shards:
        table = read_shard(suite, shard)
        assert table.num_rows == shard.rows
        assert _ids(table) == expected[shard.row_start : shard.row_end]
        assert table.schema.metadata[b"assay.record"] == b"TestCase"


def test_read_shard_arbitrary_ranges(tmp_path: Path, sf_cases: Cases) -> None:
    cases = sf_cases(50)
    path = tmp_path / "grouped.parquet"
    pq.write_table(TestCase.to_table(cases), path, row_group_size=7)
    suite = open_suite(str(path))
    expected = [c.test_id for c in cases]
    for start, end in [(0, 1), (6, 8), (7, 14), (3, 47), (13, 15), (49, 50), (0, 50)]:
        shard = Shard(shard_id=0, file="grouped.parquet", row_start=start, row_end=end)
        assert _ids(read_shard(suite, shard)) == expected[start:end]


def test_plan_and_read_on_memory(sf_memory_url: Callable[[str], str], sf_cases: Cases) -> None:
    cases = sf_cases(33)
    suite = _suite(sf_memory_url("suite"), cases, rows_per_file=15, batch_rows=4)
    plan = plan_shards(suite, 6)
    assert [s.file for s in plan.shards].count("part-00002.parquet") == 1
    read = [tid for s in plan.shards for tid in _ids(read_shard(suite, s))]
    assert read == [c.test_id for c in cases]


# -- manifest ----------------------------------------------------------------------------------


def test_init_creates_the_manifest(run: RunFolder, suite: Suite) -> None:
    assert not run.exists()
    with pytest.raises(StorageError, match="no run at"):
        run.read_manifest()
    written = run.init(_manifest(suite))
    assert run.exists()
    assert run.read_manifest() == written
    assert written.status == "created"
    path = Path(run.url) / "manifest.json"
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["run_id"] == "run-1"
    assert suite.manifest is not None
    assert on_disk["suite_fingerprint"] == suite.manifest.fingerprint
    assert on_disk["plan"]["total_rows"] == 45


def test_second_init_with_same_config_resumes(run: RunFolder, suite: Suite) -> None:
    first = run.init(_manifest(suite))
    run.update_manifest(status="running")
    again = run.init(_manifest(suite).model_copy(update={"config": {"other": "values"}}))
    assert again.status == "running"
    assert again.created_at == first.created_at
    assert again.config == first.config
    assert run.read_manifest() == again


def test_init_rejects_another_config_hash(run: RunFolder, suite: Suite) -> None:
    run.init(_manifest(suite))
    with pytest.raises(ConfigError, match="different config") as err:
        run.init(_manifest(suite, config_hash="cfg-b"))
    assert "cfg-a" in str(err.value) and "cfg-b" in str(err.value)
    assert run.read_manifest().config_hash == "cfg-a"


def test_init_rejects_another_suite_fingerprint(run: RunFolder, suite: Suite) -> None:
    run.init(_manifest(suite))
    changed = _manifest(suite).model_copy(update={"suite_fingerprint": "f" * 32})
    with pytest.raises(ConfigError, match="suite changed") as err:
        run.init(changed)
    assert "f" * 32 in str(err.value)


def test_manifest_of_another_run_is_rejected(run: RunFolder, suite: Suite) -> None:
    with pytest.raises(ConfigError, match="run-2"):
        run.write_manifest(_manifest(suite, run_id="run-2"))
    assert not run.exists()


def test_update_manifest_changes_status_and_bumps_updated_at(
    run: RunFolder, suite: Suite, clock: list[str]
) -> None:
    clock += ["2030-01-01T00:00:00+00:00", "2030-01-01T00:00:05+00:00"]
    base = _manifest(suite).model_copy(update={"created_at": "2030-01-01T00:00:00+00:00"})
    created = run.init(base)
    assert created.updated_at == "2030-01-01T00:00:00+00:00"

    updated = run.update_manifest(
        status="completed", progress={"verdicts": {"shards_done": 5, "shards_total": 6}}
    )
    assert updated.status == "completed"
    assert updated.updated_at == "2030-01-01T00:00:05+00:00"
    assert updated.created_at == created.created_at
    reread = run.read_manifest()
    assert reread == updated
    assert reread.progress["verdicts"].shards_done == 5
    assert reread.progress["verdicts"].shards_total == 6


@pytest.mark.parametrize(
    "changes", [{"status": "bogus"}, {"staus": "running"}], ids=["bad-status", "unknown-field"]
)
def test_update_manifest_rejects_invalid_changes(
    run: RunFolder, suite: Suite, changes: dict[str, Any]
) -> None:
    run.init(_manifest(suite))
    try:
        with pytest.raises(ValueError):  # pydantic's ValidationError or a ConfigError
            run.update_manifest(**changes)
    finally:
        assert run.read_manifest().status == "created"


# -- parts and markers -------------------------------------------------------------------------


def test_commit_writes_the_part_then_the_marker(
    run: RunFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = runfolder.write_json_atomic

    def spy(loc: Any, obj: Any) -> None:
        seen.append(run.part("verdicts", 3).exists())
        real(loc, obj)

    monkeypatch.setattr(runfolder, "write_json_atomic", spy)
    marker = run.commit("verdicts", 3, _verdicts(3, 4))

    assert seen == [True]  # the part was in place when the marker was written
    assert (marker.stage, marker.shard_id, marker.rows) == ("verdicts", 3, 4)
    assert run.is_done("verdicts", 3)
    assert not run.is_done("generations", 3)
    assert Path(run.part("verdicts", 3).path).name == "part-00003.parquet"
    assert Path(run.marker("verdicts", 3).path).name == "verdicts-00003"
    on_disk = json.loads(Path(run.marker("verdicts", 3).path).read_text(encoding="utf-8"))
    assert on_disk["rows"] == 4 and on_disk["shard_id"] == 3
    assert pq.read_table(run.part("verdicts", 3).path).equals(_verdicts(3, 4))


def test_iter_stage_returns_committed_shards_in_order(run: RunFolder) -> None:
    for shard_id in (4, 0, 2):
        run.commit("verdicts", shard_id, _verdicts(shard_id, shard_id + 1))
    run.commit_records("generations", 1, [Generation(test_id="x", target="m", response="r")])

    assert run.done_shards("verdicts") == {0, 2, 4}
    assert run.done_shards("generations") == {1}
    assert {k: m.rows for k, m in run.markers("verdicts").items()} == {0: 1, 2: 3, 4: 5}
    assert [(i, t.num_rows) for i, t in run.iter_stage("verdicts")] == [(0, 1), (2, 3), (4, 5)]
    table = run.read_stage("verdicts")
    assert table.num_rows == 9
    assert _ids(table)[:2] == ["s0-t0", "s2-t0"]
    assert _ids(run.read_stage("generations")) == ["x"]


def test_part_without_marker_is_not_read(run: RunFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    run.commit("verdicts", 0, _verdicts(0, 2))

    def crash(loc: Any, obj: Any) -> None:
        raise KeyboardInterrupt  # the process dies between the part and its marker

    with monkeypatch.context() as m:
        m.setattr(runfolder, "write_json_atomic", crash)
        with pytest.raises(KeyboardInterrupt):
            run.commit("verdicts", 1, _verdicts(1, 3))
    # And one written by hand, the way a crashed worker on another machine would leave it.
    write_parquet_atomic(run.part("verdicts", 2), _verdicts(2, 4))

    assert run.part("verdicts", 1).exists() and run.part("verdicts", 2).exists()
    assert not run.is_done("verdicts", 1)
    assert run.done_shards("verdicts") == {0}
    assert [i for i, _ in run.iter_stage("verdicts")] == [0]
    assert _ids(run.read_stage("verdicts")) == ["s0-t0", "s0-t1"]


def test_hidden_temporary_files_are_ignored(run: RunFolder) -> None:
    run.commit("verdicts", 0, _verdicts(0, 2))
    run.commit("verdicts", 1, _verdicts(1, 3))
    stage_dir = Path(run.url) / "verdicts"
    done_dir = Path(run.url) / "_done"
    # What a crash inside atomic_open leaves: a complete-looking file under a hidden name.
    pq.write_table(_verdicts(9, 7), stage_dir / ".tmp-part-00009.parquet-0123456789ab")
    marker = {"stage": "verdicts", "shard_id": 9, "rows": 7, "committed_at": "x"}
    (done_dir / ".tmp-verdicts-00009-0123456789ab").write_text(json.dumps(marker))

    assert run.done_shards("verdicts") == {0, 1}
    assert run.read_stage("verdicts").num_rows == 5
    dataset = ds.dataset(str(stage_dir), format="parquet")
    assert [Path(f).name for f in dataset.files] == ["part-00000.parquet", "part-00001.parquet"]
    assert dataset.count_rows() == 5
    assert sorted(_ids(dataset.to_table())) == sorted(_ids(run.read_stage("verdicts")))


def test_marker_without_its_part_raises(run: RunFolder) -> None:
    run.commit("verdicts", 0, _verdicts(0, 2))
    run.commit("verdicts", 1, _verdicts(1, 2))
    run.part("verdicts", 1).remove()
    with pytest.raises(StorageError, match="marked done but .*part-00001.parquet is missing"):
        run.read_stage("verdicts")


def test_marker_with_another_row_count_raises(run: RunFolder) -> None:
    run.commit("verdicts", 0, _verdicts(0, 3))
    write_parquet_atomic(run.part("verdicts", 0), _verdicts(0, 2))
    with pytest.raises(StorageError, match="has 2 rows, its marker says 3"):
        list(run.iter_stage("verdicts"))


def test_recommit_overwrites_the_shard(run: RunFolder) -> None:
    run.commit("verdicts", 0, _verdicts(0, 3, judge="old"))
    run.commit("verdicts", 1, _verdicts(1, 2, judge="old"))
    run.commit("verdicts", 0, _verdicts(0, 4, judge="new"))  # a rerun of shard 0

    assert run.markers("verdicts")[0].rows == 4
    table = run.read_stage("verdicts")
    ids = _ids(table)
    assert len(ids) == len(set(ids)) == 6
    judges = dict(zip(ids, table.column("judge").to_pylist(), strict=True))
    assert {judges[f"s0-t{i}"] for i in range(4)} == {"new"}
    assert sorted(p.name for p in (Path(run.url) / "verdicts").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]


def test_crashed_recommit_leaves_the_shard_not_done(
    run: RunFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    run.commit("verdicts", 0, _verdicts(0, 3))

    def crash(loc: Any, obj: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runfolder, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        run.commit("verdicts", 0, _verdicts(0, 5))  # a forced rerun dies before its marker
    monkeypatch.undo()
    # The shard must read as not done (so a resume redoes it) instead of failing every read.
    assert not run.is_done("verdicts", 0)
    assert run.read_stage("verdicts").num_rows == 0


def test_commit_records_stamps_the_record_schema(run: RunFolder) -> None:
    records = [Verdict(test_id=f"t{i}", target="m", judge="j", risk_tags=["a"]) for i in range(3)]
    marker = run.commit_records("verdicts", 0, records)
    assert marker.rows == 3
    meta = pq.read_schema(run.part("verdicts", 0).path).metadata
    assert meta[b"assay.record"] == b"Verdict"
    assert Verdict.from_table(run.read_stage("verdicts")) == records
    with pytest.raises(ValueError, match="at least one record"):
        run.commit_records("verdicts", 1, [])


def test_empty_stage_and_empty_part(run: RunFolder) -> None:
    assert run.markers("verdicts") == {}
    assert run.read_stage("verdicts").num_rows == 0
    run.commit("verdicts", 0, _verdicts(0, 0))
    assert run.is_done("verdicts", 0)
    assert run.read_stage("verdicts").num_rows == 0


def test_run_folder_on_memory(
    sf_memory_url: Callable[[str], str], sf_cases: Cases, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = _suite(sf_memory_url("suite"), sf_cases(25), rows_per_file=10, batch_rows=5)
    run = RunFolder(sf_memory_url("runs"), "run-1")
    assert run.url == sf_memory_url("runs") + "/run-1"
    run.init(_manifest(suite))
    assert run.init(_manifest(suite)) == run.read_manifest()
    with pytest.raises(ConfigError):
        run.init(_manifest(suite, config_hash="cfg-b"))

    run.commit("verdicts", 0, _verdicts(0, 2))
    run.commit("verdicts", 2, _verdicts(2, 3))
    with monkeypatch.context() as m:
        m.setattr(runfolder, "write_json_atomic", lambda loc, obj: None)  # marker never lands
        run.commit("verdicts", 1, _verdicts(1, 4))
    run.commit("verdicts", 2, _verdicts(2, 1))  # rerun

    assert run.done_shards("verdicts") == {0, 2}
    assert _ids(run.read_stage("verdicts")) == ["s0-t0", "s0-t1", "s2-t0"]
    run.update_manifest(status="completed")
    run.write_summary({"rows": 3, "名": "值"})
    assert run.read_summary() == {"rows": 3, "名": "值"}
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(run.loc.path, detail=False))
    assert names == ["_done", "manifest.json", "summary.json", "verdicts"]


def test_summary_roundtrip(run: RunFolder) -> None:
    summary = {"metrics": {"unsafe_rate": 0.25}, "rows": 12, "note": "中文"}
    run.write_summary(summary)
    assert run.read_summary() == summary
    assert json.loads((Path(run.url) / "summary.json").read_text(encoding="utf-8")) == summary


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage", ["", "Verdicts", "1gen", "gen-x", "gen/x", "../x", "_done", "gen x", "gén"]
)
def test_invalid_stage_names_are_rejected(run: RunFolder, suite: Suite, stage: str) -> None:
    with pytest.raises(ConfigError, match="invalid stage name"):
        run.part(stage, 0)
    with pytest.raises(ConfigError, match="invalid stage name"):
        run.marker(stage, 0)
    with pytest.raises(ConfigError, match="invalid stage name"):
        run.commit(stage, 0, _verdicts(0, 1))
    with pytest.raises(ConfigError, match="invalid stage name"):
        run.markers(stage)
    with pytest.raises(ConfigError, match="invalid stage name"):
        run.init(_manifest(suite).model_copy(update={"stages": ["generations", stage]}))
    assert not Path(run.url).exists()


@pytest.mark.parametrize("run_id", ["", ".hidden", "-x", "a/b", "../up", "a b", "r\\1", "r:1"])
def test_invalid_run_ids_are_rejected(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ConfigError, match="invalid run id"):
        RunFolder(str(tmp_path), run_id)


@pytest.mark.parametrize("run_id", ["run-1", "r", "0abc", "a.b_c-d", "2030-01-01T00.00"])
def test_valid_run_ids_are_accepted(tmp_path: Path, run_id: str) -> None:
    assert RunFolder(str(tmp_path), run_id).url == f"{tmp_path}/{run_id}"


@pytest.mark.parametrize("kind", ["run_id", "stage"])
def test_names_with_a_trailing_newline_are_rejected(
    tmp_path: Path, run: RunFolder, kind: str
) -> None:
    with pytest.raises(ConfigError):
        if kind == "run_id":
            RunFolder(str(tmp_path), "run-1\n")
        else:
            run.part("verdicts\n", 0)


# -- canonical_hash ----------------------------------------------------------------------------


def test_canonical_hash_ignores_key_order() -> None:
    a = {"model": "m", "judge": {"name": "j", "temperature": 0.0}, "targets": ["x", "y"]}
    b = {"targets": ["x", "y"], "judge": {"temperature": 0.0, "name": "j"}, "model": "m"}
    assert canonical_hash(a) == canonical_hash(b)
    assert len(canonical_hash(a)) == 16
    assert len(canonical_hash(a, length=32)) == 32
    assert canonical_hash(a, length=32).startswith(canonical_hash(a))
    assert canonical_hash(a) != canonical_hash({**a, "model": "m2"})
    assert canonical_hash(a) != canonical_hash({**a, "targets": ["y", "x"]})  # lists keep order
    assert canonical_hash({"t": "中文"}) == canonical_hash({"t": "中文"})
    assert canonical_hash({"t": "中文"}) != canonical_hash({"t": "中"})
