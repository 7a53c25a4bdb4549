"""Run-folder integrity: markers say what they commit, readers and resumes check it, and
``verify_run`` names every bad file (engine/runfolder.py, engine/verify.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from assay.engine import runfolder
from assay.engine.config import RunConfig
from assay.engine.errors import ConfigError, StorageError
from assay.engine.io import Location
from assay.engine.records import Generation, TestCase, Verdict
from assay.engine.runfolder import (
    RunFolder,
    RunManifest,
    Shard,
    ids_digest,
    plan_shards,
    read_shard,
)
from assay.engine.suite import Suite, SuiteWriter, open_suite
from assay.engine.verify import repair, verify_run

Cases = Callable[..., list[TestCase]]
CONFIG = {"targets": [{"name": "m"}], "judges": [{"name": "j"}, {"name": "k"}]}


@pytest.fixture
def suite(tmp_path: Path, sf_cases: Cases) -> Suite:
    """A committed 45-row suite in three files (20, 20, 5 rows)."""
    writer = SuiteWriter(str(tmp_path / "suite"), rows_per_file=20, batch_rows=10)
    for case in sf_cases(45):
        writer.write(case)
    writer.commit()
    return open_suite(str(tmp_path / "suite"))


def _manifest(suite: Suite, shard_size: int = 10) -> RunManifest:
    assert suite.manifest is not None
    return RunManifest(
        run_id="run-1",
        config=CONFIG,
        config_hash="cfg-a",
        suite_url=suite.url,
        suite_fingerprint=suite.manifest.fingerprint,
        plan=plan_shards(suite, shard_size),
        stages=["generations", "verdicts"],
    )


def _tables(suite: Suite, shard: Shard) -> tuple[pa.Table, pa.Table, pa.Array]:
    """What `assay run` commits for a shard: one answer per test, one verdict per judge."""
    rows = read_shard(suite, shard, columns=["test_id", "response"])
    ids = rows.column("test_id")
    gens, verdicts = [], []
    for tid, response in zip(ids.to_pylist(), rows.column("response").to_pylist(), strict=True):
        target = "given" if response is not None else "m"
        gens.append(Generation(test_id=tid, target=target, response="r"))
        verdicts += [Verdict(test_id=tid, target=target, judge=j, label="safe") for j in "jk"]
    return Generation.to_table(gens), Verdict.to_table(verdicts), ids.combine_chunks()


def _complete(run: RunFolder, suite: Suite) -> None:
    for shard in run.read_manifest().plan.shards:
        gens, verdicts, ids = _tables(suite, shard)
        run.commit("generations", shard.shard_id, gens, ids)
        run.commit("verdicts", shard.shard_id, verdicts, ids)
    stamp = run.summary_stamp()
    run.write_summary({"rows": 45, "integrity": stamp})
    run.update_manifest(status="completed")


@pytest.fixture
def run(tmp_path: Path, suite: Suite) -> RunFolder:
    """A completed run of 5 shards (10, 10, 10, 10, 5 rows), both stages, with a summary."""
    folder = RunFolder(str(tmp_path / "runs"), "run-1")
    folder.init(_manifest(suite))
    _complete(folder, suite)
    return folder


def _path(loc: Location) -> Path:
    return Path(loc.path)


# -- what a marker records ---------------------------------------------------------------------


def test_a_marker_records_plan_rows_ids_size_and_checksum(run: RunFolder, suite: Suite) -> None:
    manifest = run.read_manifest()
    marker = json.loads(_path(run.marker("verdicts", 1)).read_text())
    shard = manifest.plan.shards[1]
    data = _path(run.part("verdicts", 1)).read_bytes()
    import hashlib

    assert marker["plan"] == manifest.fingerprint() == manifest.plan_fingerprint
    assert (marker["file"], marker["row_start"], marker["row_end"]) == (shard.file, 10, 20)
    assert marker["ids"] == ids_digest(read_shard(suite, shard, columns=["test_id"])["test_id"])
    assert marker["size"] == len(data) and marker["sha256"] == hashlib.sha256(data).hexdigest()
    assert marker["rows"] == 20  # 10 tests x 2 judges


def test_a_shard_the_plan_does_not_have_is_refused(run: RunFolder) -> None:
    with pytest.raises(ConfigError, match="shard 7 is not in the plan"):
        run.commit("verdicts", 7, Verdict.to_table([]))


def test_plans_differ_by_shard_size_suite_and_config(suite: Suite) -> None:
    a = _manifest(suite, 10)
    assert a.fingerprint() != _manifest(suite, 20).fingerprint()
    assert a.fingerprint() != a.model_copy(update={"config_hash": "cfg-b"}).fingerprint()
    assert a.fingerprint() != a.model_copy(update={"suite_fingerprint": "x"}).fingerprint()
    assert a.fingerprint() == _manifest(suite, 10).fingerprint()


# -- finding 1: a lost manifest and another shard size ----------------------------------------


def test_markers_of_another_plan_never_count(run: RunFolder, suite: Suite) -> None:
    """The issue's first finding, at the run-folder level: manifest lost, shard size changed."""
    _path(run.loc.join("manifest.json")).unlink()
    _path(run.loc.join("summary.json")).unlink()
    fresh = RunFolder(str(Path(run.url).parent), "run-1")
    fresh.init(_manifest(suite, 20))  # 3 shards now: 20, 20, 5 rows
    assert fresh.markers("verdicts") == {}  # old markers are not commits of the new plan
    assert fresh.done_shards("verdicts") == set()
    reasons = {r.reason.split(" (")[0] for r in fresh.scan("verdicts").rejected}
    assert reasons == {"committed under another plan", "shard 3 is not in the run's plan",
                       "shard 4 is not in the run's plan"}  # fmt: skip
    assert fresh.read_stage("verdicts").num_rows == 0
    removed = {(r.stage, r.shard_id, Path(r.url).name) for r in fresh.prune()}
    # every old marker goes, and the parts of shards 3 and 4 (not in the new plan)
    assert {(s, i) for s, i, _ in removed if "part" not in _} == {
        (s, i) for s in ("generations", "verdicts") for i in range(5)
    }
    assert {n for _, _, n in removed if "part" in n} == {"part-00003.parquet", "part-00004.parquet"}
    assert sorted(p.name for p in Path(run.url, "verdicts").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert not Path(run.url, "_done").exists() or not any(Path(run.url, "_done").iterdir())


def test_a_marker_of_an_older_assay_does_not_count(run: RunFolder) -> None:
    path = _path(run.marker("verdicts", 0))
    old = json.loads(path.read_text())
    path.write_text(json.dumps({k: old[k] for k in ("stage", "shard_id", "rows", "committed_at")}))
    assert 0 not in run.markers("verdicts")
    [bad] = run.scan("verdicts").rejected
    assert "records no plan" in bad.reason and bad.url.endswith("verdicts-00000")


def test_a_part_swapped_with_another_shards_part_is_not_read(run: RunFolder) -> None:
    shutil.copyfile(_path(run.part("verdicts", 1)), _path(run.part("verdicts", 0)))
    assert 0 not in run.done_shards("verdicts")  # the cheap check: another size
    with pytest.raises(StorageError, match=r"part-00000\.parquet"):
        run.read_stage_part("verdicts", 0)
    with pytest.raises(StorageError, match=r"part-00000\.parquet"):
        run.read_stage("verdicts")


def test_a_marker_copied_from_another_shard_is_rejected(run: RunFolder) -> None:
    shutil.copyfile(_path(run.part("verdicts", 1)), _path(run.part("verdicts", 0)))
    shutil.copyfile(_path(run.marker("verdicts", 1)), _path(run.marker("verdicts", 0)))
    assert 0 not in run.done_shards("verdicts")
    [bad] = run.scan("verdicts").rejected
    assert bad.reason == "the marker names verdicts shard 1"
    with pytest.raises(StorageError, match="not committed .*names verdicts shard 1"):
        run.read_stage_part("verdicts", 0)


# -- finding 2: truncated, corrupted, deleted parts and markers -------------------------------


def test_a_truncated_part_is_not_done_and_reading_it_names_the_file(run: RunFolder) -> None:
    path = _path(run.part("verdicts", 2))
    path.write_bytes(path.read_bytes()[:-40])
    assert run.done_shards("verdicts") == {0, 1, 3, 4}
    with pytest.raises(StorageError, match=r"part-00002\.parquet is not a readable Parquet"):
        run.read_stage_part("verdicts", 2)
    assert run.current_summary() is None  # the summary no longer matches the folder


def test_a_corrupted_part_of_the_same_size_fails_its_checksum(run: RunFolder) -> None:
    path = _path(run.part("generations", 3))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert 3 in run.done_shards("generations")  # the cheap check sees the same size...
    with pytest.raises(StorageError, match=r"part-00003\.parquet"):  # ...a read does not
        run.read_stage_part("generations", 3)
    report = verify_run(run)
    assert [Path(p.url).name for p in report.problems] == ["part-00003.parquet"]


def test_a_deleted_part_or_marker_makes_the_summary_stale(run: RunFolder) -> None:
    assert run.current_summary() == run.read_summary()
    _path(run.part("generations", 4)).unlink()
    assert 4 not in run.done_shards("generations") and run.current_summary() is None
    assert 4 in run.markers("generations")  # the marker is there, the part is not
    with pytest.raises(StorageError, match=r"marked done but .*part-00004.parquet is missing"):
        run.read_stage("generations")


def test_a_deleted_marker_makes_the_summary_stale(run: RunFolder) -> None:
    _path(run.marker("verdicts", 1)).unlink()
    assert run.current_summary() is None
    assert run.read_summary()["rows"] == 45  # still on disk, never served as current


def test_prune_redoes_the_verdicts_of_a_shard_whose_generations_are_bad(run: RunFolder) -> None:
    path = _path(run.part("generations", 2))
    path.write_bytes(path.read_bytes()[:100])
    removed = {(r.stage, r.shard_id) for r in run.prune()}
    assert removed == {("generations", 2), ("verdicts", 2)}
    assert run.done_shards("verdicts") == {0, 1, 3, 4}


def test_prune_keeps_a_shard_another_driver_commits_while_it_lists(
    run: RunFolder, suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generations are listed first; a shard committed (both stages) right after that listing
    shows verdicts without generations, and must not be taken for an orphan."""
    for stage in ("generations", "verdicts"):
        _path(run.marker(stage, 3)).unlink()
    real = RunFolder.check_committed
    calls: list[str] = []

    def listing(self: RunFolder, stage: str) -> Any:
        out = real(self, stage)
        calls.append(stage)
        if calls == ["generations"]:  # the other driver commits shard 3 now
            gens, verdicts, ids = _tables(suite, _shard(run, 3))
            run.commit("generations", 3, gens, ids)
            run.commit("verdicts", 3, verdicts, ids)
        return out

    monkeypatch.setattr(RunFolder, "check_committed", listing)
    assert run.prune() == []
    monkeypatch.undo()
    assert run.done_shards("verdicts") == {0, 1, 2, 3, 4}


# -- finding 3: two drivers removing the same marker ------------------------------------------


def test_removing_a_marker_another_process_removed_is_fine(
    run: RunFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`commit` removes the old marker first; the other driver may have removed it already."""
    marker = run.marker("verdicts", 0)
    _path(marker).unlink()
    fs = marker.fs
    real = fs.exists
    # it was there when this driver looked, and gone when it removed it
    monkeypatch.setattr(fs, "exists", lambda path, **kw: path == marker.path or real(path, **kw))
    gens, verdicts, ids = _tables(open_suite(run.read_manifest().suite_url), _shard(run, 0))
    run.commit("verdicts", 0, verdicts, ids)
    monkeypatch.undo()
    assert 0 in run.done_shards("verdicts")


def test_a_marker_removed_while_listing_is_left_out(
    run: RunFolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = run.loc.fs
    real = fs.cat_file

    def gone(path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("verdicts-00002"):
            raise FileNotFoundError(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fs, "cat_file", gone)
    assert set(run.markers("verdicts")) == {0, 1, 3, 4}


def _shard(run: RunFolder, shard_id: int) -> Shard:
    return run.read_manifest().plan.shards[shard_id]


# -- assay verify ------------------------------------------------------------------------------


def test_verify_a_good_run(run: RunFolder) -> None:
    report = verify_run(run)
    assert report.ok, report.format()
    assert report.parts_checked == 10 and report.committed == {"generations": 5, "verdicts": 5}
    assert report.rows_checked == 45 + 90
    assert report.format().endswith("generations 5/5, verdicts 5/5")


def test_verify_names_every_bad_file(run: RunFolder, suite: Suite) -> None:
    p = {i: _path(run.part("verdicts", i)) for i in range(5)}
    # 0: truncated
    p[0].write_bytes(p[0].read_bytes()[:-10])
    # 1: a verdict twice (committed properly: marker, size and checksum all agree)
    gens, verdicts, ids = _tables(suite, _shard(run, 1))
    run.commit("verdicts", 1, pa.concat_tables([verdicts, verdicts.slice(0, 1)]), ids)
    # 2: rows of shard 3 committed as shard 2 (the marker's digest is of shard 2's ids)
    _, other, _ = _tables(suite, _shard(run, 3))
    run.commit("verdicts", 2, other, _tables(suite, _shard(run, 2))[2])
    # 3: judge k's verdicts missing
    _, v3, ids3 = _tables(suite, _shard(run, 3))
    run.commit("verdicts", 3, v3.filter(pa.compute.equal(v3["judge"], "j")), ids3)
    # a stray part of a shard the plan does not have, and a marker in another plan
    shutil.copyfile(p[4], p[4].with_name("part-00009.parquet"))
    marker = _path(run.marker("generations", 4))
    marker.write_text(marker.read_text().replace(run.read_manifest().fingerprint(), "f" * 32))

    report = verify_run(run)
    bad = {Path(x.url).parent.name + "/" + Path(x.url).name: x.reason for x in report.problems}
    assert set(bad) == {
        "verdicts/part-00000.parquet",
        "verdicts/part-00001.parquet",
        "verdicts/part-00002.parquet",
        "verdicts/part-00003.parquet",
        "verdicts/part-00009.parquet",
        "_done/generations-00004",
        "run-1/manifest.json",  # says completed, shard 4's generations are not committed
        "run-1/summary.json",  # stale
    }, report.format()
    assert "bytes, its marker says" in bad["verdicts/part-00000.parquet"]
    assert "appear more than once" in bad["verdicts/part-00001.parquet"]
    assert "not in shard 2" in bad["verdicts/part-00002.parquet"]
    assert "10 verdict(s) missing" in bad["verdicts/part-00003.parquet"]
    assert "plan does not have" in bad["verdicts/part-00009.parquet"]
    assert "another plan" in bad["_done/generations-00004"]
    assert not report.ok and "8 bad file(s)" in report.format()

    removed = repair(run, report)
    assert any(u.endswith("part-00009.parquet") for u in removed)
    assert run.done_shards("verdicts") == set()  # 0-3 bad, 4 lost its generations
    assert run.done_shards("generations") == {0, 1, 2, 3}
    again = verify_run(run)
    assert {x.kind for x in again.problems} <= {"stray", "manifest", "summary"}


def test_verify_checks_ids_against_the_suite_digest(run: RunFolder, suite: Suite) -> None:
    path = _path(run.marker("verdicts", 0))
    marker = json.loads(path.read_text())
    path.write_text(json.dumps({**marker, "ids": "0" * 64}))
    report = verify_run(run)
    assert [Path(p.url).name for p in report.problems] == ["verdicts-00000"]
    assert "digest of the shard's test ids" in report.problems[0].reason


# -- run identity --------------------------------------------------------------------------------


def _cfg(**target: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "suite": {"url": "s"},
            "targets": [{"name": "t", "backend": "fake", "model": "echo", **target}],
            "judges": [{"name": "j", "format": "llama-guard-3", "model": "m"}],
        }
    )


def test_max_batch_is_part_of_the_run_identity() -> None:
    """max_batch changes what a padded batch decodes, so runs that differ in it must not mix."""
    assert _cfg(max_batch=8).result_fields() != _cfg(max_batch=16).result_fields()
    assert _cfg(max_in_flight=8).result_fields() == _cfg(max_in_flight=16).result_fields()
    assert _cfg(resources={"replicas": 2}).result_fields() == _cfg().result_fields()


def test_a_taxonomy_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    base = {"suite": {"url": "s"}, "judges": [{"name": "j", "format": "safety-j", "model": "m"}]}
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=r"nope\.yaml"):
        RunConfig.model_validate({**base, "taxonomy": str(missing)})
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nnodes:\n  - {parent: No_Such_Dimension, key: A, name: a}\n")
    with pytest.raises(ValueError, match=r"broken\.yaml"):
        RunConfig.model_validate({**base, "taxonomy": str(broken)})
    good = Path(__file__).parents[2] / "examples" / "taxonomy-l3-example.yaml"
    assert RunConfig.model_validate({**base, "taxonomy": str(good)}).taxonomy == str(good)


def test_runfolder_uses_no_raw_parquet_reader() -> None:
    """Every part read goes through the marker check (no bare read_parquet in runfolder)."""
    assert not hasattr(runfolder, "read_parquet")


def test_a_suite_whose_risks_are_not_in_the_taxonomy_is_refused(
    tmp_path: Path, suite: Suite
) -> None:
    """`taxonomy:` is read at run start: every risk of the suite must be a node of its tree."""
    from assay.engine.verify import check_suite_risks

    example = str(Path(__file__).parents[2] / "examples" / "taxonomy-l3-example.yaml")
    with pytest.raises(
        ConfigError, match=r"4 risk path\(s\) of suite .*\(example-l3\): .*\(9 rows\)"
    ):
        check_suite_risks(suite, example)  # the fixture's risks are made up
    leaves = ["Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing", "Hacker Attack"]
    writer = SuiteWriter(str(tmp_path / "ok"), rows_per_file=10, batch_rows=10)
    for i, risk in enumerate(leaves * 3):
        writer.write(TestCase(text=f"q{i}", lang="en", risk=risk, source="t"))
    writer.commit()
    check_suite_risks(open_suite(str(tmp_path / "ok")), example)
