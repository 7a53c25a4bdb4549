"""`assay serve`'s command without Ray: config, tokens, the auth: none warning, clean stop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from assay.cluster import cli_serve
from assay.cluster import serve as serve_mod
from assay.engine.service import ServeConfig, token_digest

JUDGE = {"name": "g", "format": "llama-guard-3", "backend": "fake", "model": "m"}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces Ray Serve: records what would start and stop; the wait ends at once."""
    seen: dict[str, Any] = {}

    def start(cfg: ServeConfig, tokens: list[str]) -> str:
        seen["cfg"], seen["tokens"] = cfg, tokens
        seen["env_at_start"] = os.environ.get(cfg.token_env)  # what Ray would inherit
        return f"http://{cfg.host}:{cfg.port}"

    def wait_forever() -> None:
        raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(serve_mod, "start", start)
    monkeypatch.setattr(serve_mod, "wait_forever", wait_forever)
    monkeypatch.setattr(serve_mod, "stop_on_sigterm", lambda: None)
    monkeypatch.setattr(serve_mod, "stop", lambda joined: seen.setdefault("stopped", joined))
    return seen


def _group() -> click.Group:
    group = click.Group("assay")
    cli_serve.register(group)
    return group


def test_serve_starts_prints_the_url_and_stops_cleanly(
    tmp_path: Path, started: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"judges": [JUDGE]}))
    monkeypatch.setenv("ASSAY_SERVE_TOKENS", "t1,t2")
    result = CliRunner().invoke(_group(), ["serve", str(config), "--port", "9123"])
    assert result.exit_code == 0, result.output
    assert "ready at http://127.0.0.1:9123/v1" in result.output
    # only the tokens' digests reach the service
    assert started["tokens"] == [token_digest("t1"), token_digest("t2")]
    # the variable left the environment before Ray could start (Ray processes copy it)
    assert started["env_at_start"] is None and "ASSAY_SERVE_TOKENS" not in os.environ
    assert started["stopped"] is False
    assert "warning" not in result.output


def test_auth_none_warns_and_address_joins(
    tmp_path: Path, started: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"judges": [JUDGE], "auth": "none"}))
    monkeypatch.delenv("ASSAY_SERVE_TOKENS", raising=False)
    result = CliRunner().invoke(
        _group(), ["serve", str(config), "--address", "auto", "--set", "host=0.0.0.0"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: auth: none" in result.output
    assert started["cfg"].host == "0.0.0.0" and started["cfg"].address == "auto"
    assert started["stopped"] is True  # a joined cluster: only the application is deleted
