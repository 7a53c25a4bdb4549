"""The judge-service client against scripted servers: batching, order, retries, errors; and the
service's guards (tokens, rate limiter, config) without a server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import assay.engine.client as client_mod
from assay.engine.client import AsyncClient, AuthError, Client, RequestTooLargeError, ServiceError
from assay.engine.errors import ConfigError
from assay.engine.service import (
    RateLimiter,
    ServeConfig,
    judge_info,
    judge_taxonomy,
    load_tokens,
    match_token,
    token_digest,
)

URL = "http://judge.test"
LIMITS = {
    "max_items_per_request": 3,
    "max_chars_per_item": 100,
    "max_request_bytes": 10_000,
    "rate_limit_per_minute": 60,
    "rate_limit_burst": 5,
}


def _verdicts(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "judge": body.get("judge") or "j",
        "verdicts": [
            {
                "test_id": it.get("id", "x"),
                "target": it.get("target", ""),
                "judge": body.get("judge") or "j",
                "label": "unsafe" if "bomb" in it["prompt"] else "safe",
                "risk_tags": [],
                "parse_ok": True,
            }
            for it in body["items"]
        ],
    }


class Script:
    """A scripted service: the answers to give first, then real verdicts."""

    def __init__(self, first: list[httpx.Response | Exception] | None = None):
        self.first = list(first or [])
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/judges":
            return httpx.Response(200, json={"judges": [], "limits": LIMITS, **_META})
        if self.first:
            answer = self.first.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return httpx.Response(200, json=_verdicts(json.loads(request.content)))

    def scored(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == "/v1/score"]


_META = {"api_version": "v1", "version": "0"}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry delays taken (without waiting them)."""
    taken: list[float] = []

    async def fake_async_sleep(s: float) -> None:
        taken.append(s)

    monkeypatch.setattr(client_mod.time, "sleep", taken.append)
    monkeypatch.setattr(client_mod.asyncio, "sleep", fake_async_sleep)
    return taken


def _client(script: Script, **kw: Any) -> Client:
    return Client(URL, "tok", transport=httpx.MockTransport(script), **kw)


def _items(n: int) -> list[dict[str, Any]]:
    return [
        {"prompt": f"p{i} {'bomb' if i % 2 else ''}", "response": "r", "id": str(i)}
        for i in range(n)
    ]


def test_batches_follow_the_service_limit_and_keep_order(sleeps: list[float]) -> None:
    script = Script()
    with _client(script, concurrency=3) as client:
        verdicts = client.score(_items(10))
    assert [v.test_id for v in verdicts] == [str(i) for i in range(10)]
    assert [v.label for v in verdicts] == ["safe", "unsafe"] * 5
    assert [len(b["items"]) for b in script.scored()] == [3, 3, 3, 1]
    assert all(r.headers["authorization"] == "Bearer tok" for r in script.requests)
    assert sleeps == []


def test_async_client_batches_and_keeps_order(sleeps: list[float]) -> None:
    script = Script([httpx.Response(503, headers={"Retry-After": "2"})])

    async def go() -> list[str]:
        transport = httpx.MockTransport(script)
        async with AsyncClient(URL, "tok", transport=transport, batch_size=4, judge="g") as c:
            return [v.test_id for v in await c.score(_items(9))]

    assert asyncio.run(go()) == [str(i) for i in range(9)]
    assert [len(b["items"]) for b in script.scored()] == [4, 4, 4, 1]  # one retried
    assert {b["judge"] for b in script.scored()} == {"g"}
    assert sleeps == [2.0]


def test_429_and_503_are_retried_honouring_retry_after(sleeps: list[float]) -> None:
    script = Script(
        [
            httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "rate"}),
            httpx.Response(503, json={"detail": "down"}),
            httpx.ConnectError("refused"),
        ]
    )
    with _client(script, backoff_s=0.1, batch_size=10) as client:
        assert client.score_one("bomb?", "sure").label == "unsafe"
    assert sleeps[0] == 7.0  # Retry-After wins over the short backoff
    assert 0.1 <= sleeps[1] <= 0.2 and 0.2 <= sleeps[2] <= 0.4  # exponential, jittered


def test_retries_run_out_with_a_clear_error(sleeps: list[float]) -> None:
    script = Script([httpx.Response(503, json={"detail": "replica down"})] * 4)
    with (
        pytest.raises(ServiceError, match="503 replica down.*after 2 retries") as err,
        _client(script, max_retries=2, batch_size=5, max_backoff_s=1.0) as client,
    ):
        client.score(_items(2))
    assert err.value.status == 503
    assert len(sleeps) == 2 and all(s <= 1.0 for s in sleeps)


def test_auth_and_size_errors_are_not_retried(sleeps: list[float]) -> None:
    script = Script([httpx.Response(401, json={"detail": "missing or invalid bearer token"})])
    with (
        pytest.raises(AuthError, match="401 missing or invalid"),
        _client(script, batch_size=5) as c,
    ):
        c.score(_items(1))
    script = Script([httpx.Response(413, json={"detail": "300 items; the limit is 256"})])
    with (
        pytest.raises(RequestTooLargeError, match="limit is 256"),
        _client(script, batch_size=5) as c,
    ):
        c.score(_items(1))
    script = Script([httpx.Response(400, json={"detail": "unknown judge 'x'"})])
    with pytest.raises(ServiceError, match="unknown judge"), _client(script, batch_size=5) as c:
        c.score(_items(1))
    assert sleeps == []


def test_a_short_answer_is_an_error(sleeps: list[float]) -> None:
    script = Script([httpx.Response(200, json={"judge": "j", "verdicts": []})])
    with (
        pytest.raises(ServiceError, match="sent 2 items, got 0"),
        _client(script, batch_size=5) as c,
    ):
        c.score(_items(2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        Client("judge.test")
    with pytest.raises(ValueError, match="concurrency"):
        Client(URL, concurrency=0)
    with _client(Script(), batch_size=2) as client:
        with pytest.raises(ValueError, match="prompt"):
            client.score([{"response": "no prompt"}])
        assert client.score([]) == []


# -- against a real socket: timeouts and refused connections ---------------------------------


@pytest.fixture
def slow_server() -> Iterator[tuple[str, list[int]]]:
    """A server whose first answer takes 2 s; later answers are immediate."""
    calls: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(1)
            if len(calls) == 1:
                time.sleep(2)
            data = json.dumps(_verdicts(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the client that timed out has gone: writing its answer fails, as expected

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()


def test_a_timed_out_request_is_retried(slow_server: tuple[str, list[int]]) -> None:
    url, calls = slow_server
    with Client(url, "tok", timeout_s=0.5, backoff_s=0.01, batch_size=10) as client:
        assert client.score_one("bomb", "x").label == "unsafe"
    assert len(calls) == 2


def test_a_refused_connection_fails_after_the_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with (
        pytest.raises(ServiceError, match="ConnectError.*after 3 attempts"),
        Client(f"http://127.0.0.1:{port}", max_retries=2, backoff_s=0.01, batch_size=1) as c,
    ):
        c.score_one("p", "r")
    with Client(f"http://127.0.0.1:{port}") as c:
        assert c.health() is False


# -- the service's guards ----------------------------------------------------------------------


def test_tokens_match_by_digest() -> None:
    digests = [token_digest("alpha"), token_digest("beta")]
    assert match_token("beta", digests) == digests[1]
    assert match_token("gamma", digests) is None
    assert match_token("", digests) is None


def test_rate_limiter_bursts_then_refills() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a", now=0.0)
    assert wait == pytest.approx(1.0)
    assert limiter.take("b", now=0.0) == 0.0  # per key
    assert limiter.take("a", now=1.0) == 0.0  # one refilled after a second
    assert limiter.take("a", now=1.5) == pytest.approx(0.5)


_FAKE_JUDGE = {"name": "g", "format": "llama-guard-3", "backend": "fake", "model": "m"}


def test_load_tokens_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "tokens"
    file.write_text("# ops team\nfile-token\n\n")
    monkeypatch.setenv("ASSAY_SERVE_TOKENS", " a, b ,,a")
    cfg = ServeConfig.model_validate({"judges": [_FAKE_JUDGE], "token_file": str(file)})
    assert load_tokens(cfg) == ["a", "b", "file-token"]
    monkeypatch.delenv("ASSAY_SERVE_TOKENS")
    with pytest.raises(ConfigError, match="no token is configured"):
        load_tokens(ServeConfig.model_validate({"judges": [_FAKE_JUDGE]}))
    assert load_tokens(ServeConfig.model_validate({"judges": [_FAKE_JUDGE], "auth": "none"})) == []


def test_serve_config_defaults_and_checks() -> None:
    cfg = ServeConfig.model_validate({"judges": [_FAKE_JUDGE]})
    assert (cfg.host, cfg.port, cfg.auth) == ("127.0.0.1", 8000, "token")
    assert cfg.limits.max_items_per_request == 256
    with pytest.raises(ValueError, match="duplicate judge"):
        ServeConfig.model_validate({"judges": [_FAKE_JUDGE, _FAKE_JUDGE]})
    with pytest.raises(ValueError, match="remote"):
        ServeConfig.model_validate({"judges": [{**_FAKE_JUDGE, "backend": "remote"}]})
    with pytest.raises(ValueError, match="auth"):
        ServeConfig.model_validate({"judges": [_FAKE_JUDGE], "auth": "off"})


@pytest.mark.parametrize(
    ("fmt", "taxonomy"),
    [
        ("llama-guard-3", "mlcommons"),
        ("aegis", "aegis-policy"),
        ("qwen3guard", "qwen3guard"),
        ("nemoguard", "nemoguard"),
        ("assay-critique", "s-eval"),
        ("safety-j", None),
    ],
)
def test_judges_name_their_taxonomy(fmt: str, taxonomy: str | None) -> None:
    from assay.engine.config import JudgeSpec
    from assay.engine.judges import get_judge

    assert judge_taxonomy(get_judge(fmt)) == taxonomy
    info = judge_info(JudgeSpec.model_validate({**_FAKE_JUDGE, "format": fmt}), default=True)
    assert info.taxonomy == taxonomy and bool(info.categories) == (taxonomy is not None)
