"""A real, scriptable OpenAI-compatible HTTP server for tests.

It listens on 127.0.0.1 only (a random free port), runs ``ThreadingHTTPServer`` in a background
thread, and implements enough of ``POST /v1/chat/completions`` and ``POST /v1/completions`` for
the backend tests: canned replies (by default it echoes the last user turn or the prompt),
first-position log-probabilities (top-K, or vLLM's ``logprob_token_ids`` with
``return_tokens_as_token_ids``), usage and finish reasons, and a FIFO queue of forced failures
(an HTTP status with an optional ``Retry-After``, a stall, a dropped connection). It records every
request it received (path, lower-cased headers, JSON body) and the largest number of requests it
was handling at once.

Bounded: bodies over 1 MiB are refused, at most 10,000 requests are recorded, delays are capped at
10 s and end at shutdown, idle keep-alive connections time out after 5 s.

Usage::

    with running_server() as server:
        server.fail(429, retry_after="2")
        ...  # point a client at server.base_url
        assert server.calls == 2
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1 << 20
MAX_RECORDED = 10_000
MAX_DELAY_S = 10.0


@dataclass(frozen=True)
class Reply:
    """A successful answer."""

    text: str | None = None
    """Generated text; None echoes the last user turn (chat) or the prompt (completions)."""
    finish_reason: str = "stop"
    """The finish_reason sent back."""
    logprobs: tuple[tuple[str, float], ...] = ()
    """(token text, logprob) candidates at the first generated position, most likely first."""
    id_logprobs: dict[int, float] = field(default_factory=dict)
    """Token id -> logprob, answered when a request names ``logprob_token_ids``."""
    prompt_tokens: int | None = None
    """usage.prompt_tokens (default: words in the prompt)."""
    completion_tokens: int | None = None
    """usage.completion_tokens (default: words in the text)."""
    usage: bool = True
    """Whether to send a usage object at all."""


@dataclass(frozen=True)
class Forced:
    """A forced failure: an error status, a stall before answering, or a dropped connection."""

    status: int | None = 500
    """HTTP status to answer with (None: answer normally after ``stall_s``)."""
    message: str = "forced failure"
    """The error message in the body."""
    retry_after: str | None = None
    """Retry-After header value, if any."""
    stall_s: float = 0.0
    """Seconds to wait before answering."""
    drop: bool = False
    """Close the connection without answering."""


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedServer:
    """The server's script and records; build it with :func:`running_server`."""

    def __init__(self, *, delay_s: float = 0.0, default: Reply | None = None) -> None:
        """Binds 127.0.0.1 on a free port (not yet serving)."""
        self.delay_s = delay_s
        self.default = default or Reply()
        self.requests: list[Recorded] = []
        self.max_concurrent = 0
        self._active = 0
        self._lock = threading.Lock()
        self._forced: deque[Forced] = deque()
        self._rules: list[tuple[str, Reply | Forced]] = []
        self._stop = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.scripted = self
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host!s}:{port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- scripting -------------------------------------------------------------------------

    def reply(self, when: str | None = None, **fields: Any) -> None:
        """Sets the default reply, or (``when``) the reply to requests whose prompt contains it."""
        answer = Reply(**fields)
        with self._lock:
            if when is None:
                self.default = answer
            else:
                self._rules.append((when, answer))

    def fail_when(self, when: str, status: int, message: str = "forced failure") -> None:
        """Always answers ``status`` to requests whose prompt contains ``when``."""
        with self._lock:
            self._rules.append((when, Forced(status=status, message=message)))

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        message: str = "forced failure",
        retry_after: str | None = None,
    ) -> None:
        """Queues ``times`` error answers, served to the next requests in arrival order."""
        self._queue(Forced(status=status, message=message, retry_after=retry_after), times)

    def stall(self, seconds: float, *, times: int = 1) -> None:
        """Queues ``times`` answers that arrive only after ``seconds`` (to provoke timeouts)."""
        self._queue(Forced(status=None, stall_s=seconds), times)

    def drop(self, *, times: int = 1) -> None:
        """Queues ``times`` dropped connections (closed without an answer)."""
        self._queue(Forced(drop=True), times)

    def _queue(self, forced: Forced, times: int) -> None:
        with self._lock:
            self._forced.extend([forced] * times)

    @property
    def calls(self) -> int:
        """How many requests arrived."""
        with self._lock:
            return len(self.requests)

    # --- serving ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()

    def _shutdown(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(min(seconds, MAX_DELAY_S))

    def _record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        with self._lock:
            if len(self.requests) < MAX_RECORDED:
                self.requests.append(Recorded(path, headers, body))

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _action(self, body: dict[str, Any]) -> Reply | Forced:
        prompt_text = _prompt_text(body)
        with self._lock:
            if self._forced:
                return self._forced.popleft()
            for when, action in self._rules:
                if when in prompt_text:
                    return action
            return self.default


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    scripted: ScriptedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, drops) are expected here; stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # idle keep-alive connections end
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        """Answers one API call from the script."""
        scripted = self.server.scripted
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, {"error": {"message": "body too large"}})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "invalid JSON"}})
            return
        if not isinstance(body, dict):
            self._send_json(400, {"error": {"message": "body must be an object"}})
            return
        path = self.path.split("?", 1)[0]
        scripted._record(path, {k.lower(): v for k, v in self.headers.items()}, body)
        scripted._enter()
        try:
            self._answer(scripted, path, body)
        except OSError:
            self.close_connection = True  # the client went away (timed out)
        finally:
            scripted._leave()

    def _answer(self, scripted: ScriptedServer, path: str, body: dict[str, Any]) -> None:
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._send_json(404, {"error": {"message": f"no route {path}"}})
            return
        action = scripted._action(body)
        scripted._wait(scripted.delay_s)
        if isinstance(action, Forced):
            scripted._wait(action.stall_s)
            if action.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if action.status is not None:
                headers = {"Retry-After": action.retry_after} if action.retry_after else {}
                error = {"message": action.message, "type": "forced", "code": action.status}
                self._send_json(action.status, {"error": error}, headers)
                return
            action = scripted.default
        chat = path == "/v1/chat/completions"
        self._send_json(200, _completion(body, action, chat=chat))

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


def _echo(body: dict[str, Any]) -> str:
    if "messages" in body:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        return "echo: " + (str(users[-1].get("content", "")) if users else "")
    return "echo: " + str(body.get("prompt", ""))


def _candidates(body: dict[str, Any], reply: Reply, k: int) -> list[tuple[str, float]]:
    ids = body.get("logprob_token_ids")
    if ids:
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        return [
            (f"token_id:{i}" if as_ids else str(i), reply.id_logprobs[i])
            for i in ids
            if i in reply.id_logprobs
        ]
    return list(reply.logprobs[:k])


def _completion(body: dict[str, Any], reply: Reply, *, chat: bool) -> dict[str, Any]:
    text = reply.text if reply.text is not None else _echo(body)
    choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason, "logprobs": None}
    sampled = reply.logprobs[0] if reply.logprobs else (text.split(" ")[0], -0.5)
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
        if body.get("logprobs"):
            top = _candidates(body, reply, int(body.get("top_logprobs") or 0))
            entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
            first = {"token": sampled[0], "logprob": sampled[1], "bytes": list(sampled[0].encode())}
            choice["logprobs"] = {"content": [{**first, "top_logprobs": entries}]}
    else:
        choice["text"] = text
        if isinstance(body.get("logprobs"), int) and not isinstance(body["logprobs"], bool):
            top = _candidates(body, reply, body["logprobs"])
            choice["logprobs"] = {
                "tokens": [sampled[0]],
                "token_logprobs": [sampled[1]],
                "top_logprobs": [dict(top)],
                "text_offset": [0],
            }
    out: dict[str, Any] = {
        "id": "cmpl-test",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": body.get("model", ""),
        "choices": [choice],
    }
    if reply.usage:
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = len(_prompt_text(body).split())
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(text.split())
        out["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return out


@contextmanager
def running_server(
    *, delay_s: float = 0.0, default: Reply | None = None
) -> Iterator[ScriptedServer]:
    """A started :class:`ScriptedServer`, shut down on exit.

    ``delay_s`` delays every answer (to hold requests in flight); ``default`` is the reply when
    no rule or forced failure applies.
    """
    server = ScriptedServer(delay_s=delay_s, default=default)
    server._start()
    try:
        yield server
    finally:
        server._shutdown()


def unused_base_url() -> str:
    """A loopback base URL on a port where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
