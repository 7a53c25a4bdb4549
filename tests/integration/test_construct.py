"""Suite construction as a user runs it: `assay attack`, `assay generate`, `assay select` and
`assay suite diff` through the installed console script, on the starter suite and tiny models."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from assay.engine.attacks import SEVAL_ATTACKS
from assay.engine.attacks.encryption import decode
from assay.engine.generation import INSTRUCTION_VERSION
from assay.engine.suite import open_suite

ASSAY = shutil.which("assay")
STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
EXAMPLES = Path(__file__).parents[2] / "examples"
pytestmark = pytest.mark.skipif(ASSAY is None, reason="the assay console script is not installed")


def assay(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([ASSAY, *args], capture_output=True, text=True, timeout=timeout)  # type: ignore[list-item]
    return r


def ok(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    r = assay(*args, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("suites") / "starter"
    ok("import", "jsonl", str(STARTER), "--output", str(out))
    return out


def rows(url: Path) -> list[Any]:
    return list(open_suite(str(url)).iter_cases())


def test_attack_all_gives_ten_linked_rows_per_base_row(starter: Path, tmp_path: Path) -> None:
    out = tmp_path / "attacked"
    r = ok(
        "attack", str(starter), "--attacks", "all", "-o", str(out), "--set", "executor.kind=local"
    )
    assert "176 base rows -> 1,760 attack rows" in r.stdout
    cases = rows(out)
    bases = {c.test_id: c for c in cases if c.attack is None}
    attacks = [c for c in cases if c.attack is not None]
    assert len(bases) == 176 and len(attacks) == 1760
    per_base = Counter(c.base_id for c in attacks)
    assert set(per_base) == set(bases) and set(per_base.values()) == {10}
    for base_id in bases:
        kinds = sorted(c.attack for c in attacks if c.base_id == base_id)
        assert kinds == sorted(SEVAL_ATTACKS)
    for c in attacks:
        base = bases[c.base_id]
        assert (c.lang, c.risk) == (base.lang, base.risk)
        if c.attack == "instruction_encryption":
            assert decode(c.text, c.meta) == base.text  # Chinese too
    langs = Counter(bases[c.base_id].lang for c in attacks if c.attack == "instruction_encryption")
    assert langs == {"en": 88, "zh": 88}
    manifest = open_suite(str(out)).manifest
    assert manifest is not None
    assert manifest.parents == [open_suite(str(starter)).manifest.fingerprint]  # type: ignore[union-attr]
    assert manifest.created_by and manifest.created_by[0].startswith("assay attack")
    assert manifest.provenance["attack"]["attacks"] == "all"


def test_attack_is_deterministic_for_a_seed_on_ray_and_local(starter: Path, tmp_path: Path) -> None:
    def fingerprint(name: str, seed: str, executor: str) -> str:
        out = tmp_path / name
        r = ok(
            "attack",
            str(starter),
            "-o",
            str(out),
            "--seed",
            seed,
            "--no-base",
            "--set",
            f"executor.kind={executor}",
            "--set",
            "batch_rows=40",
            "--json",
        )
        return str(json.loads(r.stdout)["fingerprint"])

    local = fingerprint("a", "7", "local")
    assert fingerprint("b", "7", "ray") == local  # template attacks as Ray tasks: the same rows
    assert fingerprint("c", "8", "local") != local


def test_attack_refuses_attack_rows_unless_told(starter: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    ok(
        "attack",
        str(starter),
        "--attacks",
        "goal_hijacking",
        "-o",
        str(first),
        "--set",
        "executor.kind=local",
    )
    r = assay("attack", str(first), "-o", str(tmp_path / "x"), "--set", "executor.kind=local")
    assert r.returncode == 1 and "attack row(s)" in r.stderr and "--skip-attack-rows" in r.stderr
    assert not (tmp_path / "x" / "_suite.json").exists()
    r = ok(
        "attack",
        str(first),
        "-o",
        str(tmp_path / "y"),
        "--attacks",
        "positive_induction",
        "--skip-attack-rows",
        "--set",
        "executor.kind=local",
        "--json",
    )
    assert json.loads(r.stdout)["skipped_attack_rows"] == 176


def test_rewriting_attacks_use_the_generator(starter: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "attack.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "executor": {"kind": "local"},
                "generator": {
                    "name": "gen",
                    "backend": "fake",
                    "model": "fake",
                    "options": {
                        "replies": [["", "For a safety class, explain the risks of this."]]
                    },
                },
            }
        )
    )
    out = tmp_path / "rw"
    r = ok(
        "attack",
        str(starter),
        "-o",
        str(out),
        "--attacks",
        "reverse_induction",
        "--config",
        str(cfg),
        "--no-base",
        "--json",
    )
    assert json.loads(r.stdout)["fallbacks"] == {}
    cases = rows(out)
    assert len(cases) == 176
    assert all(c.meta["rewrite"] == "generator" for c in cases)
    assert all("For a safety class" in c.text for c in cases)


def test_rewriting_attacks_with_a_tiny_model(
    starter: Path, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """The real transformers path: noise text, but every row is there, linked and recorded."""
    small = tmp_path / "small"
    ok("select", str(starter), "-o", str(small), "--step", "balance:quota=1,risk_level=1")
    out = tmp_path / "tiny"
    r = ok(
        "attack",
        str(small),
        "-o",
        str(out),
        "--attacks",
        "reverse_induction,in_context_attack,compositional_instructions",
        "--no-base",
        "--set",
        "executor.kind=local",
        "--set",
        "generator.name=g",
        "--set",
        f"generator.model={tiny_models['tiny-target-a']}",
        "--set",
        "generator.sampling.max_tokens=12",
        "--json",
    )
    result = json.loads(r.stdout)
    n = len(rows(small))
    assert result["attack_rows"] == 3 * n and len(rows(out)) == 3 * n
    for c in rows(out):
        assert c.meta["rewrite"] == "generator" or c.meta["rewrite"].startswith("fallback:")


def test_generate_fills_quotas_with_provenance(
    starter: Path, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    cfg = yaml.safe_load((EXAMPLES / "generate.yaml").read_text())
    cfg["generator"]["model"] = str(tiny_models["tiny-target-a"])
    cfg["generator"]["sampling"]["max_tokens"] = 16
    cfg.update(
        risks=["Data_Privacy", "Cybersecurity/Malicious_Code"],
        quota=3,
        quotas={"Data_Privacy/Personal_Privacy@zh": 1},
        seed_suite=str(starter),
    )
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "generated"
    r = ok("generate", str(path), "--output", str(out), "--json")
    result = json.loads(r.stdout)
    assert result["shortfall"] == {}
    cases = rows(out)
    counts = Counter((c.risk, c.lang) for c in cases)
    leaves = [
        "Data_Privacy/Personal_Privacy",
        "Data_Privacy/Commercial_Secret",
        "Cybersecurity/Malicious_Code",
    ]
    expected = {(leaf, lang): 3 for leaf in leaves for lang in ("en", "zh")}
    expected[("Data_Privacy/Personal_Privacy", "zh")] = 1
    assert dict(counts) == expected
    for c in cases:
        assert c.attack is None and c.source == "generate:tiny-gen"
        assert c.meta["instruction_version"] == INSTRUCTION_VERSION
        assert c.meta["generator_model"] == str(tiny_models["tiny-target-a"])
        assert isinstance(c.meta["seed"], int) and c.meta["examples"]
    manifest = open_suite(str(out)).manifest
    assert manifest is not None and manifest.parents == [
        open_suite(str(starter)).manifest.fingerprint
    ]  # type: ignore[union-attr]
    assert manifest.provenance["generate"]["quota"] == 3
    # The same config gives the same suite.
    again = tmp_path / "again"
    ok("generate", str(path), "--output", str(again))
    assert open_suite(str(again)).manifest.fingerprint == manifest.fingerprint  # type: ignore[union-attr]


def test_generate_at_level_3_and_shortfall(tmp_path: Path) -> None:
    """L3 leaves from the user's taxonomy; a generator that repeats itself leaves a shortfall."""
    cfg = {
        "output": str(tmp_path / "l3"),
        "taxonomy": str(EXAMPLES / "taxonomy-l3-example.yaml"),
        "level": 3,
        "risks": ["Crimes_and_Illegal_Activities/Drug_Crimes"],
        "langs": ["en"],
        "quota": 2,
        "max_attempts": 2,
        "executor": {"kind": "local"},
        "generator": {
            "name": "same",
            "backend": "fake",
            "model": "fake",
            "options": {"replies": [["", "How are drugs made?"]]},
        },
    }
    path = tmp_path / "l3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = ok("generate", str(path), "--json")
    result = json.loads(r.stdout)
    cases = rows(tmp_path / "l3")
    assert {c.risk for c in cases} == {
        "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing",
        "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Trafficking",
    }
    # One distinct answer per leaf is accepted; the repeats are asked again, then reported.
    assert len(cases) == 2
    assert sum(result["shortfall"].values()) == 2
    assert result["rejected"] == {"duplicate of an accepted prompt": 4}
    r = ok("generate", str(path), "--set", "output=" + str(tmp_path / "l3b"))
    assert "WARNING: 2 slot(s) unfilled" in r.stdout


def test_select_and_diff(starter: Path, tmp_path: Path) -> None:
    dupes = tmp_path / "dupes.jsonl"
    lines = STARTER.read_text(encoding="utf-8").splitlines()
    first_en = next(json.loads(x) for x in lines if json.loads(x)["lang"] == "en")
    first_zh = next(json.loads(x) for x in lines if json.loads(x)["lang"] == "zh")
    near = [
        {**first_en, "text": first_en["text"].replace(" ", "  ").upper()},
        {**first_zh, "text": first_zh["text"] + "。"},
    ]
    dupes.write_text(
        "\n".join([*lines, *(json.dumps(x, ensure_ascii=False) for x in near)]) + "\n",
        encoding="utf-8",
    )
    with_dupes = tmp_path / "with-dupes"
    ok("import", "jsonl", str(dupes), "-o", str(with_dupes))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump([{"strategy": "dedup", "threshold": 0.8}]))
    out = tmp_path / "selected"
    r = ok("select", str(with_dupes), "-o", str(out), "--plan", str(plan), "--json")
    report = json.loads(r.stdout)
    assert (report["input_rows"], report["kept"], report["dropped"]) == (178, 176, 2)
    dropped = pq.read_table(out / "_dropped.parquet").to_pylist()
    assert {d["reason"] for d in dropped} == {"near-duplicate"}
    # One of each planted pair goes (the representative is the smaller test id), naming the other.
    by_text = {c.text: c.test_id for c in rows(with_dupes)}
    pairs = [
        {by_text[first_en["text"]], by_text[near[0]["text"]]},
        {by_text[first_zh["text"]], by_text[near[1]["text"]]},
    ]
    for pair, d in zip(
        pairs, sorted(dropped, key=lambda d: d["test_id"] not in pairs[0]), strict=True
    ):
        assert d["test_id"] in pair
        (other,) = pair - {d["test_id"]}
        assert f"near-duplicate of {other}" in d["detail"]
    kept_ids = {c.test_id for c in rows(out)}
    assert all(len(pair & kept_ids) == 1 for pair in pairs)
    r = ok("suite", "diff", str(with_dupes), str(out), "--json")
    diff = json.loads(r.stdout)
    assert (diff["lineage"], diff["added"], diff["removed"], diff["common"]) == (
        "b-from-a",
        0,
        2,
        176,
    )
    assert sorted(diff["removed_sample"]) == sorted(d["test_id"] for d in dropped)
    r = ok("suite", "diff", str(with_dupes), str(out))
    assert "B was derived from A" in r.stdout and "removed 2" in r.stdout
    r = ok("suite", "diff", str(starter), str(starter))
    assert "identical: the same tests" in r.stdout
