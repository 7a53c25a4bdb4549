"""The `assay` command as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from seval_data import write_seval_release

ASSAY = shutil.which("assay")
STARTER = Path(__file__).parents[2] / "examples" / "starter_suite.jsonl"
pytestmark = pytest.mark.skipif(ASSAY is None, reason="the assay console script is not installed")


def assay(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASSAY, *args], capture_output=True, text=True, cwd=cwd, timeout=120)  # type: ignore[list-item]


def test_quickstart_import_and_info(tmp_path: Path) -> None:
    out = tmp_path / "suites" / "starter"
    r = assay("import", "jsonl", str(STARTER), "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "imported 176 of 176 records" in r.stdout
    r = assay("suite", "info", str(out))
    assert r.returncode == 0, r.stderr
    assert "rows         176 in 1 file(s)" in r.stdout
    for token in ("by language:", "en", "zh", "by L1 risk:", "Hate_Speech", "by attack:", "(base)"):
        assert token in r.stdout
    info = json.loads(assay("suite", "info", str(out), "--json").stdout)
    assert info["counts"]["rows"] == 176 and info["fingerprint"] == info["manifest_fingerprint"]
    assert info["counts"]["by_lang"] == {"en": 88, "zh": 88}


def test_seval_import_json_report_and_rejects(tmp_path: Path) -> None:
    write_seval_release(tmp_path / "src", n_base=4)
    bad = tmp_path / "src" / "s-eval_base_risk_zh_extra.jsonl"
    bad.write_text('{"prompt": "x", "risk_type": "Nope", "ext": "{}"}\n')
    r = assay("import", "s-eval", str(tmp_path / "src"), "-o", str(tmp_path / "s"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: import failed: 1 of 89 records are bad")
    assert "s-eval_base_risk_zh_extra.jsonl:1: unknown risk 'Nope'" in r.stderr
    r = assay(
        "import",
        "s-eval",
        str(tmp_path / "src"),
        "-o",
        str(tmp_path / "s"),
        "--on-error",
        "skip",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["read"], report["imported"], report["rejected"]) == (89, 88, 1)
    assert Path(report["rejects_url"]).is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["import", "nope", "x", "-o", "y"], "unknown format 'nope'"),
        (["import", "jsonl", "/does/not/exist.jsonl", "-o", "y"], "no such file or folder"),
        (["suite", "info", "/does/not/exist"], "no suite at /does/not/exist"),
        (["import", "jsonl", "x.jsonl", "-o", "y", "--map", "novalue"], "expected KEY=VALUE"),
        (["taxonomy", "show", "nope"], "nope"),
        (["run", "config.yaml"], "no config file at config.yaml"),
        (["report", "x"], "no run at"),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = assay(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert message in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 3, r.stderr


def test_every_command_has_help_with_an_example() -> None:
    commands = [
        ["import"],
        ["suite", "info"],
        ["taxonomy", "list"],
        ["taxonomy", "show"],
        ["run"],
        ["status"],
        ["report"],
        ["compare"],
        ["history", "add"],
        ["history", "show"],
        ["generate"],
        ["attack"],
        ["select"],
        ["suite", "diff"],
        ["serve"],
        ["score"],
    ]
    for cmd in commands:
        r = assay(*cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Example" in r.stdout, cmd
    top = assay("--help")
    assert all(c in top.stdout for c in ("import", "suite", "taxonomy", "run", "report"))


def test_taxonomy_commands() -> None:
    r = assay("taxonomy", "list")
    assert r.returncode == 0 and "aegis" in r.stdout and "nemoguard" in r.stdout
    r = assay("taxonomy", "show", "aegis")
    assert "PII/Privacy" in r.stdout and "Data_Privacy" in r.stdout
    r = assay("taxonomy", "show", "s-eval")
    assert "Cybersecurity/Hacker_Attack" in r.stdout
