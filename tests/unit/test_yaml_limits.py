"""YAML from users is refused, fast and in little memory, when it is an alias bomb or too large.

The bomb tests run ``assay run`` in a child process under an address-space limit: before the
loader counted aliases, the nine-level bomb passed validation and grew to 3.7 GB when the run id
was computed (pydantic-core's serializer walking 9**9 leaves), ending in a pyo3 panic. The limit
keeps that failure mode from taking the test machine with it.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

CHILD_MEMORY = 2 << 30  # address space of the child process (bytes)
CHILD_TIMEOUT_S = 120  # only a safety net: the refusal takes milliseconds


def anchors(levels: int = 9, indent: int = 0) -> str:
    """YAML mapping lines: x0 holds nine strings, each next level nine aliases of the last."""
    lines = ["x0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(" " * indent + line for line in lines)


def write_bomb(tmp_path: Path, where: str) -> Path:
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "hi", "lang": "en"}) + "\n")
    if where == "targets.0.options":
        body = (
            "suite: {url: ./s.jsonl, format: jsonl}\n"
            "targets:\n"
            "  - name: t\n"
            "    backend: fake\n"
            "    model: m\n"
            "    options:\n"
            f"{anchors(indent=6)}\n"
        )
    else:
        body = (
            f"suite:\n  url: ./s.jsonl\n  format: jsonl\n  import_options:\n{anchors(indent=4)}\n"
        )
    body += (
        "executor: {kind: local}\n"
        "judges:\n"
        "  - {name: j, format: qwen3guard, backend: fake, model: m}\n"
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(body)
    assert path.stat().st_size < 1000  # the whole bomb is under a kilobyte
    return path


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``assay ARGS`` in a child process with bounded memory."""
    code = "import sys; from assay.cluster.cli import main; main(sys.argv[1:])"
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"assay {' '.join(args)} did not finish: {exc.stderr!r}"[-2000:])


@pytest.mark.parametrize("where", ["targets.0.options", "suite.import_options"])
def test_assay_run_refuses_a_nine_level_alias_bomb(tmp_path: Path, where: str) -> None:
    path = write_bomb(tmp_path, where)
    proc = run_cli("run", str(path), "--output", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr.strip()
    assert err.startswith("error: config file ") and str(path) in err
    assert "more than 100,000 nodes" in err and "alias" in err
    assert "Traceback" not in err and "panicked" not in err
    assert not (tmp_path / "runs").exists()


def test_a_bomb_in_a_set_override_is_refused_not_taken_as_text(tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(
        "suite: {url: s.jsonl, format: jsonl}\n"
        "executor: {kind: local}\n"
        "targets: [{name: t, backend: fake, model: m}]\n"
        "judges: [{name: j, format: qwen3guard, backend: fake, model: m}]\n"
    )
    (tmp_path / "s.jsonl").write_text(json.dumps({"prompt": "hi", "lang": "en"}) + "\n")
    flow = "{" + anchors().replace("\n", ", ") + "}"
    proc = run_cli("run", str(config), "--set", f"targets.0.options={flow}", cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "--set targets.0.options was refused" in proc.stderr
    assert "limit of nodes behind aliases" in proc.stderr


def test_the_refusal_is_cheap() -> None:
    """The bomb is refused while composing: little memory, nothing constructed."""
    from assay.engine.yamlsafe import YamlLimitError, load_yaml

    doc = anchors()
    tracemalloc.start()
    with pytest.raises(YamlLimitError, match="limit of nodes behind aliases") as info:
        load_yaml(doc, "bomb.yaml")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak:,} bytes refusing a {len(doc)}-byte bomb"
    assert "bomb.yaml" in str(info.value)


def test_a_config_with_a_few_anchors_still_loads(tmp_path: Path) -> None:
    from assay.engine.config import load_config

    anchored = tmp_path / "anchored.yaml"
    anchored.write_text(
        textwrap.dedent(
            """\
            suite: {url: s.jsonl, format: jsonl}
            targets:
              - name: a
                backend: fake
                model: m
                sampling: &sampling {max_tokens: 24, temperature: 0.0}
                resources: &one {replicas: 1, num_cpus: 1}
              - {name: b, backend: fake, model: m, sampling: *sampling, resources: *one}
              - name: c
                backend: fake
                model: m
                sampling: {<<: *sampling, temperature: 0.7}
            judges:
              - {name: j, format: qwen3guard, backend: fake, model: m, resources: *one}
            """
        )
    )
    sampling = {"max_tokens": 24, "temperature": 0.0}
    one = {"replicas": 1, "num_cpus": 1}
    plain = {
        "suite": {"url": "s.jsonl", "format": "jsonl"},
        "targets": [
            {"name": "a", "backend": "fake", "model": "m", "sampling": sampling, "resources": one},
            {"name": "b", "backend": "fake", "model": "m", "sampling": sampling, "resources": one},
            {
                "name": "c",
                "backend": "fake",
                "model": "m",
                "sampling": {**sampling, "temperature": 0.7},
            },
        ],
        "judges": [
            {"name": "j", "format": "qwen3guard", "backend": "fake", "model": "m", "resources": one}
        ],
    }
    (tmp_path / "plain.yaml").write_text(json.dumps(plain))  # JSON is YAML
    got = load_config(str(anchored))
    want = load_config(str(tmp_path / "plain.yaml"))
    assert got == want
    assert [t.sampling.temperature for t in got.targets] == [0.0, 0.0, 0.7]


def test_limits_on_size_depth_aliases_and_recursion(tmp_path: Path) -> None:
    from assay.engine.config import read_config_file
    from assay.engine.errors import ConfigError
    from assay.engine.yamlsafe import YamlLimitError, YamlLimits, load_yaml

    big = tmp_path / "big.yaml"
    big.write_bytes(b"# padding\n" * 500_000)  # 5 MB of comments: valid YAML, over 4 MiB
    with pytest.raises(ConfigError, match=r"big\.yaml is over the limit of 4,194,304 bytes"):
        read_config_file(str(big))
    with pytest.raises(YamlLimitError, match="nested deeper than 100 levels"):
        load_yaml("[" * 1000 + "]" * 1000, "deep.yaml")
    with pytest.raises(YamlLimitError, match=r"alias \*a refers to a node that holds it"):
        load_yaml("a: &a [1, *a]", "loop.yaml")
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]"
    with pytest.raises(YamlLimitError, match="more than 1,000 aliases"):
        load_yaml(many, "many.yaml")
    assert load_yaml(many, "many.yaml", YamlLimits(max_aliases=2000))["b"][1000] == 1
    with pytest.raises(YamlLimitError, match="over the limit of 10 bytes"):
        load_yaml("key: some value", "small.yaml", YamlLimits(max_bytes=10))


def test_selection_plans_taxonomies_and_steps_go_through_the_loader(tmp_path: Path) -> None:
    from assay.engine.select import read_plan
    from assay.engine.taxonomy import TaxonomyFileError, load_risk_tree

    plan = tmp_path / "plan.yaml"
    plan.write_text("steps:\n  - strategy: dedup\n" + anchors(indent=4))
    with pytest.raises(Exception, match=r"selection plan .*plan\.yaml was refused"):
        read_plan(str(plan))
    tax = tmp_path / "tax.yaml"
    tax.write_text("name: t\nnodes: []\n" + anchors())
    with pytest.raises(TaxonomyFileError, match=r"taxonomy file .*tax\.yaml.* was refused"):
        load_risk_tree(str(tax))
    from assay.cluster.cli import _parse_step

    block = "\n".join(  # block style: no commas for --step's splitting to cut
        ["a0: &a0\n" + "\n".join(["  - lol"] * 9)]
        + [f"a{i}: &a{i}\n" + "\n".join([f"  - *a{i - 1}"] * 9) for i in range(1, 9)]
    )
    with pytest.raises(Exception, match=r"--step dedup:x was refused"):
        _parse_step("dedup:x=" + block)
    assert _parse_step("balance:quota=100,level=2") == {
        "strategy": "balance",
        "quota": 100,
        "level": 2,
    }


def test_config_errors_have_no_pydantic_prefix(tmp_path: Path) -> None:
    from assay.engine.config import load_config
    from assay.engine.errors import ConfigError

    path = tmp_path / "run.yaml"
    path.write_text(
        "suite: {url: s.jsonl}\n"
        "judges: [{name: 'bad name!', format: qwen3guard, backend: fake, model: m}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "judges.0.name: invalid name 'bad name!'" in str(info.value)
    assert "Value error" not in str(info.value)
