"""A judge config that contradicts its format's rendering contract fails when the config is
loaded, before any actor starts, with a message naming the judge and what to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from assay.engine.config import JudgeSpec, RunConfig
from assay.engine.judges import get_judge, judge_names


def judge(**fields: Any) -> dict[str, Any]:
    return {"name": "j", "model": "m", "backend": "transformers", **fields}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # Llama Guard 3 with a template override: assay's text inside another template, or the
        # guard's own moderation template wrapped around assay's moderation prompt
        (
            judge(format="llama-guard-3", backend="vllm", options={"chat_template": "llama3"}),
            "chat_template='llama3' would render another prompt",
        ),
        (
            judge(format="qwen3guard", options={"chat_template": "qwen3-nothink"}),
            "remove it",
        ),
        (judge(format="harmbench", options={"chat_template": "llama2"}), "raw text"),
        (judge(format="safety-j", backend="openai"), "mode: completions"),
        (
            judge(format="llama-guard-3", backend="openai", options={"mode": "completions"}),
            "mode: chat",
        ),
        (judge(format="aegis", format_options={"expert": "nope"}), "expert"),
    ],
)
def test_contradicting_configs_fail_at_load(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JudgeSpec.model_validate(fields)


def test_a_custom_policy_on_an_openai_guard_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: mine\ncategories:\n  - {code: S1, name: Fraud}\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="cannot apply"):
        JudgeSpec.model_validate(
            judge(format="llama-guard-3", backend="openai", format_options={"policy": str(policy)})
        )


def test_accepted_configs() -> None:
    JudgeSpec.model_validate(judge(format="llama-guard-3"))  # own template or the fallback
    JudgeSpec.model_validate(judge(format="llama-guard-3", backend="openai"))  # server's own
    JudgeSpec.model_validate(
        judge(format="harmbench", backend="openai", options={"mode": "completions"})
    )
    # a "model" format may be given the model's template explicitly (a checkout without one)
    JudgeSpec.model_validate(judge(format="nemoguard", options={"chat_template": "llama3"}))


def test_a_run_config_with_a_contradiction_names_the_judge(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        RunConfig.model_validate(
            {
                "suite": {"url": str(tmp_path / "s.jsonl")},
                "output": str(tmp_path),
                "targets": [{"name": "t", "backend": "fake", "model": "t"}],
                "judges": [
                    judge(name="lg3", format="llama-guard-3", options={"chat_template": "llama3"})
                ],
            }
        )
    assert "judge 'lg3' (format 'llama-guard-3')" in str(info.value)


@pytest.mark.parametrize("name", judge_names())
def test_every_format_declares_its_rendering_and_source(name: str) -> None:
    contract = get_judge(name).render_contract()
    assert contract.source and contract.source != "unspecified", name
    assert contract.describe()


def test_assay_judges_list_and_show_print_every_contract() -> None:
    from click.testing import CliRunner

    from assay.cluster.cli import cli

    runner = CliRunner()
    listed = runner.invoke(cli, ["judges", "list"])
    assert listed.exit_code == 0, listed.output
    for name in judge_names():
        assert name in listed.output
    shown = runner.invoke(cli, ["judges", "show", "llama-guard-3"])
    assert shown.exit_code == 0, shown.output
    assert "own moderation template" in shown.output and "Llama-Guard-3-8B" in shown.output
    assert "'safe' -> safe" in shown.output and "mlcommons-lg3 (published)" in shown.output
    as_json = runner.invoke(cli, ["judges", "show", "harmbench", "--json"])
    assert '"rendering_kind": "raw"' in as_json.output and '" Yes"' in as_json.output
    unknown = runner.invoke(cli, ["judges", "show", "lama-guard-3"])
    assert unknown.exit_code != 0  # main() prints the ConfigError as one line
    assert "did you mean 'llama-guard-3'" in str(unknown.exception)


def test_the_run_summary_says_when_a_judge_was_shown_another_policy(tmp_path: Path) -> None:
    from assay.engine.metrics import format_metrics, judge_contracts

    policy = tmp_path / "policy.yaml"
    policy.write_text("name: house-rules\ncategories:\n  - {code: S1, name: Fraud}\n", "utf-8")
    cfg = RunConfig.model_validate(
        {
            "suite": {"url": str(tmp_path / "s.jsonl")},
            "output": str(tmp_path),
            "targets": [{"name": "t", "backend": "fake", "model": "t"}],
            "judges": [
                judge(name="published", format="llama-guard-3"),
                judge(name="mine", format="llama-guard-3", format_options={"policy": str(policy)}),
            ],
        }
    )
    contracts = judge_contracts(cfg.model_dump()["judges"])
    assert contracts["published"]["policy_published"] == "yes"
    assert contracts["published"]["policy_name"] == "mlcommons-lg3"
    assert contracts["mine"] == {
        "format": "llama-guard-3",
        "rendering": contracts["mine"]["rendering"],
        "policy_file": str(policy),
        "policy_published": "no",
    }
    text = format_metrics({"targets": {}, "judges": contracts})
    assert f"judge mine (llama-guard-3) was shown the policy {str(policy)!r}" in text
    assert "judge published" not in text
