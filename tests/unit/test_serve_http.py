"""The judge service's HTTP server for real (uvicorn on loopback, raw sockets and httpx), over
fake judge handles instead of Ray: header and body deadlines, the connection cap, text that is
not valid Unicode, failed-authentication limits per client address, and the error bodies.

Client addresses: every test client is on loopback, so the failed-authentication tests bind their
clients to different loopback addresses (127.0.0.2, 127.0.0.3: Linux routes all of 127/8 to lo)
to stand for different clients.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pyarrow as pa
import pytest

from assay.cluster.serve import HttpServer, bind, build_app, invalid_body
from assay.engine.service import ErrorBody, FailureLimiter, ServeConfig, token_digest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.x clients need Linux")

TOKEN = "unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JUDGE = {"name": "fake", "format": "llama-guard-3", "backend": "fake", "model": "fake"}
DOCS = Path(__file__).parents[2] / "docs" / "serve.md"


class FakeJudge:
    """A judge handle: counts the items it is asked to judge, answers 'safe'."""

    def __init__(self) -> None:
        self.items = 0

    async def _score(self, tasks: pa.Table) -> pa.Table:
        self.items += tasks.num_rows
        n = tasks.num_rows
        return pa.table({"test_id": tasks["test_id"], "label": ["safe"] * n})

    async def _ready(self) -> str:
        return "node"

    @property
    def score(self) -> Any:
        return SimpleNamespace(remote=self._score)

    @property
    def ready(self) -> Any:
        return SimpleNamespace(remote=self._ready)


class Running:
    def __init__(self, url: str, port: int, judge: FakeJudge, server: HttpServer):
        self.url, self.port, self.judge, self.server = url, port, judge, server


@pytest.fixture
def serve_with() -> Iterator[Callable[..., Running]]:
    """Starts the HTTP server with the given limits over a fake judge; stops it after."""
    started: list[HttpServer] = []

    def start(**limits: Any) -> Running:
        cfg = ServeConfig.model_validate({"judges": [JUDGE], "limits": limits})
        judge = FakeJudge()
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        app = build_app(cfg, [token_digest(TOKEN)], {"fake": judge})
        server = HttpServer(app, sock, cfg.limits)
        server.start()
        started.append(server)
        return Running(f"http://127.0.0.1:{port}", port, judge, server)

    yield start
    for server in started:
        server.stop()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)  # a safety net against a server that never answers (the bug)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def _body(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


# -- slow headers, slow body ---------------------------------------------------------------------


def test_incomplete_headers_get_408_and_the_connection_closed(
    serve_with: Callable[..., Running],
) -> None:
    svc = serve_with(header_timeout_s=0.5)
    with _connect(svc.port) as s:
        s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        raw = _read_all(s)  # returns only once the server closes the connection
    assert _status(raw) == 408, raw
    assert "headers not received within 0.5 s" in _body(raw)["detail"]
    with _connect(svc.port) as s:  # a connection that sends nothing is closed too
        assert _read_all(s) == b""
    assert svc.judge.items == 0


def test_headers_trickled_a_byte_at_a_time_still_time_out(
    serve_with: Callable[..., Running],
) -> None:
    """A deadline on the whole header block, not on each read."""
    svc = serve_with(header_timeout_s=0.5)
    request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200
    sent = 0
    with _connect(svc.port) as s:
        try:
            for byte in request:
                s.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.02)  # 200+ bytes: well over the deadline in all
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = _read_all(s)
    assert sent < len(request), "the server kept reading a trickle past its header deadline"
    assert _status(raw) == 408, raw


def test_a_kept_alive_connection_may_idle_between_requests(
    serve_with: Callable[..., Running],
) -> None:
    """The header deadline starts at a request's first byte, so idling (up to the keep-alive
    timeout) between requests is not a slow request."""
    svc = serve_with(header_timeout_s=0.3, keep_alive_timeout_s=5)
    with httpx.Client(base_url=svc.url) as http:
        assert http.get("/v1/health").status_code == 200
        time.sleep(0.6)
        assert http.get("/v1/health").status_code == 200
        assert http.get("/v1/judges", headers=AUTH).status_code == 200


def test_a_slow_body_gets_408_and_no_judge_work(serve_with: Callable[..., Running]) -> None:
    svc = serve_with(body_timeout_s=0.5)
    body = json.dumps({"items": [{"prompt": "p", "response": "r"}]}).encode()
    head = (
        f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _connect(svc.port) as s:
        s.sendall(head + body[:10])  # headers in time, the body never finishes
        raw = _read_all(s)
    assert _status(raw) == 408, raw
    assert _body(raw) == {"detail": "request body not received within 0.5 s"}
    assert b"connection: close" in raw.lower()
    assert svc.judge.items == 0
    # the same request sent whole is judged
    with _connect(svc.port) as s:
        s.sendall(head.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n") + body)
        raw = _read_all(s)
    assert _status(raw) == 200 and svc.judge.items == 1


def test_chunked_bodies_are_refused_with_411(serve_with: Callable[..., Running]) -> None:
    svc = serve_with()
    with _connect(svc.port) as s:
        s.sendall(
            f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
        )
        raw = _read_all(s)
    assert _status(raw) == 411 and svc.judge.items == 0


# -- the connection cap --------------------------------------------------------------------------


def test_connections_over_the_cap_get_503_at_once_then_service_resumes(
    serve_with: Callable[..., Running],
) -> None:
    svc = serve_with(max_connections=5, header_timeout_s=30)
    state = svc.server.server.server_state
    held = [_connect(svc.port) for _ in range(5)]
    for _ in range(200):  # until the server has accepted them all
        if len(state.connections) >= 5:
            break
        time.sleep(0.02)
    extra = [_connect(svc.port) for _ in range(3)]
    answers = [_read_all(s) for s in extra]  # answered and closed without sending anything
    assert [_status(a) for a in answers] == [503, 503, 503]
    assert answers[0].lower().count(b"retry-after: 1") == 1
    assert "too many open connections" in _body(answers[0])["detail"]
    for s in held + extra:
        s.close()
    for _ in range(200):  # until the server has seen them go
        if not state.connections:
            break
        time.sleep(0.02)
    assert httpx.get(f"{svc.url}/v1/judges", headers=AUTH).status_code == 200


# -- text that is not valid Unicode --------------------------------------------------------------


def test_a_lone_surrogate_gets_400_naming_field_and_item_before_any_judge_work(
    serve_with: Callable[..., Running],
) -> None:
    svc = serve_with()
    raw = b'{"items": [{"prompt": "ok", "response": "fine"}, {"prompt": "a\\ud800b"}]}'
    r = httpx.post(
        f"{svc.url}/v1/score", content=raw, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["detail"].startswith("items[1].prompt: not valid Unicode text")
    assert body["errors"][0] == {
        "loc": ["body", "items", 1, "prompt"],
        "msg": "not valid Unicode text (a lone surrogate, as from a JSON \\ud800 escape)",
        "type": "string_unicode",
    }
    assert "a\ud800b" not in r.text and "input" not in body["errors"][0]  # no echo
    assert svc.judge.items == 0
    # a low surrogate in a response, and bytes that are not UTF-8 at all
    raw = b'{"items": [{"prompt": "p", "response": "\\udfff"}]}'
    r = httpx.post(
        f"{svc.url}/v1/score", content=raw, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["body", "items", 0, "response"]
    r = httpx.post(
        f"{svc.url}/v1/score",
        content=b'{"items": [{"prompt": "\xff\xfe"}]}',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert r.status_code == 400 and set(r.json()) == {"detail"}
    assert svc.judge.items == 0
    # a proper surrogate pair is one valid character
    raw = b'{"items": [{"prompt": "\\ud83d\\ude00", "response": "r"}]}'
    r = httpx.post(
        f"{svc.url}/v1/score", content=raw, headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 200 and svc.judge.items == 1


# -- failed authentication -----------------------------------------------------------------------


def _from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address))


def test_failed_authentication_is_limited_per_client_address(
    serve_with: Callable[..., Running],
) -> None:
    svc = serve_with(auth_failure_limit=3, auth_failure_window_s=600)
    url = f"{svc.url}/v1/judges"
    bad = {"Authorization": "Bearer wrong"}
    with _from("127.0.0.2") as a, _from("127.0.0.3") as b:
        assert [a.get(url, headers=bad).status_code for _ in range(3)] == [401, 401, 401]
        refused = a.get(url, headers=bad)
        assert refused.status_code == 429
        assert 500 <= int(refused.headers["Retry-After"]) <= 600
        assert "too many failed authentications" in refused.json()["detail"]
        # before the token check: the right token from that address is refused too
        assert a.get(url, headers=AUTH).status_code == 429
        assert a.post(f"{svc.url}/v1/score", json={"items": []}).status_code == 429
        # another client is not affected, either way
        assert b.get(url, headers=AUTH).status_code == 200
        assert b.get(url, headers=bad).status_code == 401
        # open routes stay open
        assert a.get(f"{svc.url}/v1/health").status_code == 200
    assert svc.judge.items == 0


def test_failure_limiter_window_and_memory_bound() -> None:
    lim = FailureLimiter(limit=2, window_s=10, max_keys=3)
    lim.failed("a", now=0)
    assert lim.blocked("a", now=1) == 0
    lim.failed("a", now=1)
    assert lim.blocked("a", now=2) == pytest.approx(8)  # until the failure at 0 ages out
    assert lim.blocked("b", now=2) == 0
    assert lim.blocked("a", now=10.5) == 0  # one failure left in the window
    for key in ("b", "c", "d"):
        lim.failed(key, now=11)
    assert len(lim._failures) == 3  # the oldest key was dropped


# -- the error bodies ----------------------------------------------------------------------------


def _documented_422() -> dict[str, Any]:
    """The 422 example of docs/serve.md (the ```json block after 'A 422 answer')."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"A 422 answer.*?```json\n(.*?)```", text, re.S)
    assert found, "docs/serve.md has no 422 example"
    example: dict[str, Any] = json.loads(found.group(1))
    return example


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_422_body_has_the_documented_shape(serve_with: Callable[..., Running]) -> None:
    svc = serve_with()
    r = httpx.post(f"{svc.url}/v1/score", json={"items": []}, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    ErrorBody.model_validate(body)
    example = _documented_422()
    assert _shape(body) == _shape(example)
    assert body["errors"][0]["loc"] == ["body", "items"]
    assert body["detail"].startswith("items: ")
    r = httpx.post(
        f"{svc.url}/v1/score",
        content=b'{"items": [{"response": "x"}, ',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["type"] == "json_invalid"
    # every error answer carries a string detail (the client shows it)
    for r in (
        httpx.get(f"{svc.url}/v1/judges"),
        httpx.post(f"{svc.url}/v1/score", json={"judge": "x", "items": [{"prompt": "p"}]}),
        httpx.post(
            f"{svc.url}/v1/score", json={"judge": "x", "items": [{"prompt": "p"}]}, headers=AUTH
        ),
    ):
        assert r.status_code in (400, 401) and isinstance(r.json()["detail"], str)


def test_invalid_body_lists_text_errors_first_and_bounds_the_list() -> None:
    errors: list[dict[str, Any]] = [
        {"type": "missing", "loc": ("body", "items", i, "prompt"), "msg": "Field required"}
        for i in range(80)
    ]
    bad = {"type": "string_unicode", "loc": ("body", "judge"), "msg": "x", "input": "\ud800"}
    errors.append(bad)
    status, body = invalid_body(errors)
    assert status == 400
    assert body.detail.startswith("judge: not valid Unicode text")
    assert body.detail.endswith("(and 76 more)")
    assert body.errors is not None and len(body.errors) == 50
    status, body = invalid_body(errors[:1])
    assert status == 422 and body.detail == "items[0].prompt: Field required"


def test_server_stops_while_a_client_holds_a_connection(serve_with: Callable[..., Running]) -> None:
    svc = serve_with(header_timeout_s=30)
    with _connect(svc.port) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\n")
        svc.server.stop()
        assert not svc.server.thread.is_alive()
        assert _read_all(s) == b""


def test_connections_have_nagle_off(serve_with: Callable[..., Running]) -> None:
    """Answers go out in two writes (head, body): with Nagle on, each would wait ~40 ms for
    the client's delayed ACK."""
    svc = serve_with()
    with httpx.Client(base_url=svc.url) as http:
        assert http.get("/v1/health").status_code == 200
        protocols = list(svc.server.server.server_state.connections)
        assert protocols
        for protocol in protocols:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_open_file_limit_is_raised_to_fit_the_connection_cap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import resource

    from assay.cluster.serve import ensure_open_files

    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: limits.update(now=value))
    assert ensure_open_files(1512) == 1512 and limits["now"] == (1512, 4096)
    assert ensure_open_files(1000) == 1512  # never lowered
    assert ensure_open_files(9000) == 4096 and limits["now"] == (4096, 4096)
    assert "open-file limit 4096 is below" in caplog.text
