"""The parts of a private local Ray that need no Ray running: its token, what it withholds from
Ray's processes, the loopback rebinding of workers' gRPC servers; and a remote judge's token."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from assay.cluster import localray
from assay.cluster.remote import RemoteJudgeOptions, _token
from assay.engine.errors import ConfigError


def test_a_new_token_is_private_and_random() -> None:
    first, second = localray.new_token_dir(), localray.new_token_dir()
    try:
        token = (first / localray.TOKEN_FILE).read_text()
        assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex
        assert token != (second / localray.TOKEN_FILE).read_text()
        assert stat.S_IMODE(first.stat().st_mode) == 0o700
        assert stat.S_IMODE((first / localray.TOKEN_FILE).stat().st_mode) == 0o600
    finally:
        for folder in (first, second):
            (folder / localray.TOKEN_FILE).unlink()
            folder.rmdir()


def test_service_tokens_are_withheld_then_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAY_SERVE_TOKEN", "client")
    monkeypatch.setenv("ASSAY_GUARD_TOKEN", "other")
    monkeypatch.setenv("MY_SECRET", "mine")
    monkeypatch.setenv("HF_HOME", "/models")
    with localray._withheld(["MY_SECRET"]):
        assert not {"ASSAY_SERVE_TOKEN", "ASSAY_GUARD_TOKEN", "MY_SECRET"} & set(os.environ)
        assert os.environ["HF_HOME"] == "/models"  # the rest stays for Ray's processes
    assert os.environ["ASSAY_SERVE_TOKEN"] == "client" and os.environ["MY_SECRET"] == "mine"


def test_workers_bind_grpc_servers_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._common import tls_utils

    bound: list[str] = []

    def add_port(server: Any, address: str) -> int:
        bound.append(address)
        return 1234

    monkeypatch.setattr(tls_utils, "add_port_to_grpc_server", add_port)
    localray.loopback_servers()
    localray.loopback_servers()  # idempotent: wrapped once
    for address in ("[::]:0", "0.0.0.0:50051", "10.0.0.5:7000"):
        tls_utils.add_port_to_grpc_server(object(), address)
    assert bound == ["127.0.0.1:0", "127.0.0.1:50051", "10.0.0.5:7000"]


def test_remote_judge_token_from_file_or_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_SERVE_TOKEN", "from-env")
    assert _token("j", RemoteJudgeOptions()) == "from-env"
    assert _token("j", RemoteJudgeOptions(token_env=None)) is None
    path = tmp_path / "token"
    path.write_text("# the guard service\n  from-file  \n")
    assert _token("j", RemoteJudgeOptions(token_file=str(path))) == "from-file"
    with pytest.raises(ConfigError, match="cannot read token_file"):
        _token("j", RemoteJudgeOptions(token_file=str(tmp_path / "missing")))
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no token"):
        _token("j", RemoteJudgeOptions(token_file=str(path)))
