"""``assay serve``: judges on Ray Serve behind a versioned HTTP API (:mod:`assay.engine.service`).

Two parts:

- The **HTTP server** runs in the ``assay serve`` process itself: uvicorn (its h11 protocol)
  serving a FastAPI app on its own thread and event loop, bound to the configured host (default
  127.0.0.1). Every request is checked before any work, in this order: failed authentications
  of the client address (429 with Retry-After once ``limits.auth_failure_limit`` failures fall
  in the window, before the token is looked at), the bearer token (compared in constant time
  against SHA-256 digests; the tokens never leave this process and are never logged), Content-
  Length (411 without one, 413 over the limit), a token bucket per token (429), the body read
  within ``limits.body_timeout_s`` (408), then validation (422, and 400 for text that is not
  valid Unicode) and the items and characters per item (413). It turns items into an Arrow
  table and calls the judge's deployment through a Serve handle.
- A **judge replica** (a Serve deployment per judge) holds one
  :class:`~assay.actors.workers.JudgeActor` (the same class runs use) and gathers concurrent
  requests with ``serve.batch`` into one judge call; vLLM batches further inside its engine.
  Serve restarts a replica whose process dies; a request that was on it gets 503 with
  Retry-After, and the client retries.

Why the HTTP server is not Serve's proxy: Ray Serve 2.60's proxy starts uvicorn itself and
exposes only ``request_timeout_s`` and ``keep_alive_timeout_s`` (``HTTPOptions``); it has no
setting for a header-read or body-read deadline or a connection cap, and uvicorn has no header
or body deadline at all (its ``limit_concurrency`` answers 503 per request, so sockets that never
send a request are held forever). 3,000 half-open connections were held that way. Hypercorn
(not a dependency) has a ``read_timeout``, but on each socket read, so a client sending a byte
every few seconds never times out. So this process runs uvicorn with its own limits (uvicorn's
h11 protocol, subclassed in :func:`http_protocol`): a protocol that closes a connection whose
request line and headers are not in within ``limits.header_timeout_s`` (408 where part of a
request came) and answers 503 and closes a connection beyond ``limits.max_connections`` at once;
the :class:`Guard` reads the body under its deadline. Serve's proxy is off (no second listening
port), and the request path loses a hop (client -> proxy actor -> ingress replica -> judge
becomes client -> this process -> judge). The costs: one process parses the JSON of every
request (it was one proxy process before too, with ``proxy_location="HeadOnly"``) and rate
limits count for the whole service rather than per ingress replica (``ingress_replicas`` is
gone). Measured with ``benchmarks/bench_serve.py`` (fake judge, loopback, the shared 2-core
test machine, so rough): ``GET /v1/health`` 501 req/s, p50 1.6 ms (Serve's proxy: 177 req/s,
5.4 ms); one item per request at concurrency 1, 50 req/s (35); 64-item requests at concurrency
8, 3,900 items/s (2,900).

Nothing here logs a prompt, a response, a judge output or a token: only counts, names, client
addresses and error types.
"""

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import pyarrow as pa
from ray import serve

from assay.engine import __version__
from assay.engine.config import JudgeSpec
from assay.engine.errors import FatalError
from assay.engine.service import (
    ErrorBody,
    FailureLimiter,
    FieldError,
    Health,
    JudgesResponse,
    LimitsInfo,
    RateLimiter,
    Readiness,
    ScoreRequest,
    ScoreResponse,
    ServeBatching,
    ServeConfig,
    ServeLimits,
    judge_info,
    match_token,
    retry_after_header,
)

from . import localray
from .executors import _ACTOR_ENV
from .placement import placement_for

log = logging.getLogger(__name__)

APP_NAME = "assay"
OPEN_PATHS = frozenset({"/v1/health", "/v1/ready", "/v1/openapi.json"})
"""Routes answered without a token (probes and the schema)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the guard: auth, body size, rate limit and the body deadline, before any work ---------------


def _error_json(detail: str) -> bytes:
    body: str = ErrorBody(detail=detail).model_dump_json(exclude_none=True)
    return body.encode()


async def _answer(
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    close: bool = False,
) -> None:
    body = _error_json(detail)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        raw.append((b"www-authenticate", b'Bearer realm="assay"'))
    if close:  # a body left unread: the connection cannot carry another request
        raw.append((b"connection", b"close"))
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def client_address(scope: Scope) -> str:
    """The peer address of a request (the TCP peer: no forwarding headers are trusted, so
    behind a reverse proxy every client shares the proxy's address)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Guard:
    """ASGI middleware: everything decided from the headers first, so a refused request costs
    no body read and no judge work. 429 for a client address with too many failed
    authentications (before its token is looked at), 401 without a valid bearer token, 411
    for a body without Content-Length (or chunked), 413 for one over the limit, 429 over the
    token's rate; then the body is read within ``body_timeout_s`` (408 if late) and handed on."""

    def __init__(
        self,
        app: ASGIApp,
        digests: list[str],
        auth: bool,
        max_bytes: int,
        per_minute: int | None,
        burst: int,
        auth_failure_limit: int = 10,
        auth_failure_window_s: float = 60.0,
        body_timeout_s: float = 60.0,
    ):
        """Wraps ``app``; ``digests`` are the accepted tokens' SHA-256 digests."""
        self.app = app
        self.digests = digests
        self.auth = auth
        self.max_bytes = max_bytes
        self.limiter = RateLimiter(per_minute, burst) if per_minute else None
        self.failures = FailureLimiter(auth_failure_limit, auth_failure_window_s)
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Checks one request, reads its body, then passes it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        unread = chunked or (length is not None and length != "0")
        guarded = scope["path"] not in OPEN_PATHS
        key = "anonymous"
        if guarded and self.auth:
            client = client_address(scope)
            wait = self.failures.blocked(client)
            if wait > 0:
                await _answer(
                    send,
                    429,
                    "too many failed authentications from this address; retry after the "
                    "Retry-After seconds",
                    {"Retry-After": retry_after_header(wait)},
                    close=unread,
                )
                return
            scheme, _, presented = headers.get("authorization", "").partition(" ")
            found = None
            if scheme.lower() == "bearer" and presented.strip():
                found = match_token(presented.strip(), self.digests)
            if found is None:
                self.failures.failed(client)
                if self.failures.blocked(client) > 0:
                    log.warning(
                        "client %s: %d failed authentications within %.0f s; refusing it",
                        client,
                        self.failures.limit,
                        self.failures.window_s,
                    )
                # the same answer for a missing and a wrong token
                await _answer(send, 401, "missing or invalid bearer token", close=unread)
                return
            key = found
        if chunked or (length is None and scope["method"] not in ("GET", "HEAD")):
            await _answer(send, 411, "a request body needs a Content-Length header", close=unread)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _answer(send, 413, f"request body over {self.max_bytes:,} bytes", close=unread)
            return
        if guarded and self.limiter is not None:
            wait = self.limiter.take(key)
            if wait > 0:
                await _answer(
                    send,
                    429,
                    "rate limit exceeded for this token; retry after the Retry-After seconds",
                    {"Retry-After": retry_after_header(wait)},
                    close=unread,
                )
                return
        if unread:
            try:
                body = await asyncio.wait_for(_read_body(receive), self.body_timeout_s)
            except asyncio.TimeoutError:  # TimeoutError from 3.11 on
                await _answer(
                    send,
                    408,
                    f"request body not received within {self.body_timeout_s:g} s",
                    close=True,
                )
                return
            if body is None:  # the client went away
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body of a request, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then waits on the connection."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# -- the HTTP server: header deadline and connection cap ----------------------------------------


def _raw_answer(status: int, detail: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error answer that closes the connection, as bytes."""
    body = _error_json(detail)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline on each request's line and headers and a cap on
    open connections (see the module docstring for why)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    over_cap = _raw_answer(
        503, "too many open connections; retry after the Retry-After seconds", {"Retry-After": "1"}
    )
    late = _raw_answer(408, f"request headers not received within {header_timeout_s:g} s")

    class GuardedH11Protocol(H11Protocol):
        """Closes a connection whose request headers are late, or that is over the cap."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(over_cap)
                transport.close()
                return
            self._arm()  # a new connection must send its first request in time

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # headers complete: the Guard times the body

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # part of a request came: say why
                self.transport.write(late)
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet).

    Raises:
        FatalError: The address cannot be bound (in use, or not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each connection (it checks the proto;
    # without it every answer waits ~40 ms on Nagle and the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FatalError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (config: host, port)"
        ) from None
    return sock


FILES_HEADROOM = 512
"""File descriptors kept for Ray, logs and models besides the HTTP connections."""


def ensure_open_files(needed: int) -> int:
    """Raises this process's soft limit on open files towards ``needed`` (up to the hard
    limit, which needs no privilege), so the connection cap is reached before the descriptors
    run out; warns when the hard limit is lower. Returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        if soft < needed:
            log.warning(
                "open-file limit %d is below limits.max_connections + %d = %d: lower "
                "max_connections or raise the limit (ulimit -n)",
                soft,
                FILES_HEADROOM,
                needed,
            )
    return int(soft)


class HttpServer:
    """uvicorn serving an ASGI app on its own thread and event loop, with the header deadline,
    connection cap and keep-alive of ``limits``."""

    def __init__(self, app: ASGIApp, sock: socket.socket, limits: ServeLimits):
        """Serves ``app`` on ``sock`` (bound, see :func:`bind`) once started."""
        import uvicorn

        self.sock = sock
        config = uvicorn.Config(
            app,
            http=http_protocol(limits.header_timeout_s, limits.max_connections),
            ws="none",
            lifespan="off",
            proxy_headers=False,  # the peer address is the client (failed-auth limits)
            server_header=False,
            timeout_keep_alive=limits.keep_alive_timeout_s,
            timeout_graceful_shutdown=10,
            access_log=False,  # no access lines
            log_config=None,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="assay-http", daemon=True)
        self.error: BaseException | None = None
        self.max_connections = limits.max_connections

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # reported by start() / wait()
            self.error = exc

    def start(self, timeout_s: float = 60.0) -> None:
        """Starts serving; returns once the socket accepts connections.

        Raises:
            FatalError: The server did not start.
        """
        ensure_open_files(self.max_connections + FILES_HEADROOM)
        self.thread.start()
        stop = threading.Event()
        waited = 0.0
        while not self.server.started and self.thread.is_alive() and waited < timeout_s:
            stop.wait(0.05)
            waited += 0.05
        if not self.server.started:
            self.stop()
            raise FatalError(f"the HTTP server did not start: {self.error or 'timed out'}")

    def wait(self) -> None:
        """Blocks while the server runs.

        Raises:
            FatalError: It stopped on its own.
        """
        while self.thread.is_alive():
            self.thread.join(1.0)
        if not self.server.should_exit:
            raise FatalError(f"the HTTP server stopped: {self.error or 'no reason given'}")

    def stop(self) -> None:
        """Stops accepting, lets requests in flight finish (10 s at most), then returns."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(30)
        self.sock.close()


# -- judge replicas ----------------------------------------------------------------------------


class JudgeReplica:
    """One replica of a served judge: a JudgeActor fed by ``serve.batch``."""

    def __init__(
        self, spec: JudgeSpec, max_retries: int, backoff_s: float, batching: dict[str, Any]
    ):
        """Loads the judge's model (a load failure fails the deployment)."""
        from assay.actors.workers import JudgeActor

        self.actor = JudgeActor(spec, max_retries, backoff_s)
        opts = ServeBatching.model_validate(batching)
        # serve.batch's wrapper carries setters the type stubs do not show
        batch: Any = self.judge_batch
        batch.set_max_batch_size(opts.max_batch_size)
        batch.set_batch_wait_timeout_s(opts.batch_wait_timeout_s)

    async def ready(self) -> str:
        """Answers once the model is loaded: the node id."""
        return str(await self.actor.ready())

    async def score(self, tasks: pa.Table) -> pa.Table:
        """Verdicts of the tasks (``JUDGE_TASK_SCHEMA`` rows), in order."""
        result: pa.Table = await self.judge_batch(tasks)
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def judge_batch(self, parts: list[pa.Table]) -> list[pa.Table]:
        """Several requests' tasks judged in one call, split back per request."""
        verdicts = await self.actor.judge(pa.concat_tables(parts) if len(parts) > 1 else parts[0])
        out, start = [], 0
        for part in parts:
            out.append(verdicts.slice(start, part.num_rows))
            start += part.num_rows
        return out

    async def __del__(self) -> None:
        """Releases the model (vLLM shuts its engine down cleanly)."""
        try:
            await self.actor.close()
        except Exception as exc:  # pragma: no cover - best effort at replica shutdown
            log.debug("closing judge replica: %s", exc)


# -- the application ---------------------------------------------------------------------------


def _tasks(request: ScoreRequest) -> pa.Table:
    from assay.actors.workers import JUDGE_TASK_SCHEMA

    items = request.items
    n = len(items)
    return pa.Table.from_pydict(
        {
            "test_id": [it.test_id() for it in items],
            "target": [it.target for it in items],
            "prompt": [it.prompt for it in items],
            "response": [it.response for it in items],
            "lang": [it.lang for it in items],
            "generation_error": [None] * n,
        },
        schema=JUDGE_TASK_SCHEMA,
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Unknown judge, an item the judge cannot take, or text that is not valid Unicode."),
        (401, "Missing or invalid bearer token."),
        (408, "The request body did not arrive in time."),
        (411, "A request body without Content-Length."),
        (413, "Too many items, an item too long, or a body too large."),
        (422, "A body that does not validate; `errors` says where."),
        (429, "Rate limit, or failed-authentication limit, exceeded; see Retry-After."),
        (500, "The judge failed on this request."),
        (503, "A judge replica is down or overloaded; retry after Retry-After."),
        (504, "The judge did not answer in time."),
    )
}
"""The error answers of the guarded routes, for the OpenAPI schema."""

_MAX_ERRORS = 50
"""Validation problems listed in one answer."""


def _where(loc: list[str | int]) -> str:
    """``[body, items, 0, prompt]`` as ``items[0].prompt``."""
    out = ""
    for part in loc[1:] if loc[:1] == ["body"] else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def invalid_body(errors: list[dict[str, Any]]) -> tuple[int, ErrorBody]:
    """The answer to a body that does not validate: 400 when text is not valid Unicode (a lone
    surrogate), else 422; the problems with where they are, never the input."""
    found = [
        FieldError(
            loc=list(e.get("loc", ())),
            msg="not valid Unicode text (a lone surrogate, as from a JSON \\ud800 escape)"
            if e.get("type") == "string_unicode"
            else str(e.get("msg", "invalid")),
            type=str(e.get("type", "invalid")),
        )
        for e in errors
    ]
    bad_text = [e for e in found if e.type == "string_unicode"]
    shown = (bad_text + [e for e in found if e.type != "string_unicode"])[:_MAX_ERRORS]
    detail = "; ".join(f"{_where(e.loc)}: {e.msg}" for e in shown[:5])
    if len(found) > 5:
        detail += f" (and {len(found) - 5} more)"
    return (400 if bad_text else 422), ErrorBody(detail=detail, errors=shown)


def _refusal(
    request: ScoreRequest, limits: ServeLimits, supports_prompt_only: bool
) -> tuple[int, str] | None:
    """Why a score request is refused before any judge work (status, message), or None."""
    if len(request.items) > limits.max_items_per_request:
        return 413, (
            f"{len(request.items)} items in one request; the limit is "
            f"{limits.max_items_per_request} (split the list)"
        )
    for i, item in enumerate(request.items):
        if item.chars() > limits.max_chars_per_item:
            return 413, (
                f"item {i} has {item.chars():,} characters of prompt and response; "
                f"the limit is {limits.max_chars_per_item:,}"
            )
        if item.response is None and not supports_prompt_only:
            return 400, f"item {i} has no response; this judge needs one"
    return None


def _judges_body(cfg: ServeConfig) -> JudgesResponse:
    limits = cfg.limits
    return JudgesResponse(
        api_version="v1",
        version=__version__,
        judges=[judge_info(j, default=i == 0) for i, j in enumerate(cfg.judges)],
        limits=LimitsInfo(
            max_items_per_request=limits.max_items_per_request,
            max_chars_per_item=limits.max_chars_per_item,
            max_request_bytes=limits.max_request_bytes(),
            rate_limit_per_minute=limits.rate_limit_per_minute,
            rate_limit_burst=limits.rate_limit_burst,
        ),
    )


def build_app(cfg: ServeConfig, digests: list[str], handles: dict[str, Any]) -> Any:
    """The HTTP API of a config (a FastAPI app) over the judges' Serve handles (``digests``: the
    accepted tokens' SHA-256, :func:`~assay.engine.service.token_digest`): ``handles``
    maps each judge's name to an object whose ``score.remote(tasks)`` and ``ready.remote()``
    return awaitables (a :class:`~ray.serve.handle.DeploymentHandle` of a
    :class:`JudgeReplica`)."""
    from fastapi import FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPBearer
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    limits = cfg.limits
    judges_body = _judges_body(cfg)
    prompt_only = {j.name: j.supports_prompt_only for j in judges_body.judges}
    default_judge = cfg.judges[0].name
    timeout_s = cfg.request_timeout_s

    app = FastAPI(
        title="assay judge service",
        version=__version__,
        description="Safety verdicts from assay's judges. Every route but /v1/health, "
        "/v1/ready and /v1/openapi.json needs `Authorization: Bearer <token>` (unless the "
        "service runs with auth: none).",
        docs_url=None,  # the docs pages load scripts from a CDN; the schema is enough
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    app.add_middleware(
        Guard,
        digests=list(digests),
        auth=cfg.auth == "token",
        max_bytes=limits.max_request_bytes(),
        per_minute=limits.rate_limit_per_minute,
        burst=limits.rate_limit_burst,
        auth_failure_limit=limits.auth_failure_limit,
        auth_failure_window_s=limits.auth_failure_window_s,
        body_timeout_s=limits.body_timeout_s,
    )
    # Documents the scheme in the schema; the Guard enforces it before the body is read.
    bearer = [Security(HTTPBearer(auto_error=False, description="A token of the service."))]

    def error(status: int, detail: str, retry_after: int | None = None) -> JSONResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, body = invalid_body(list(exc.errors()))
        return JSONResponse(body.model_dump(exclude_none=True), status_code=status)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/v1/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    @app.get("/v1/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready() -> JSONResponse:
        async def probe(handle: Any) -> bool:
            try:
                await asyncio.wait_for(_awaitable(handle.ready.remote()), 5.0)
                return True
            except Exception:
                return False

        names = list(handles)
        oks = await asyncio.gather(*(probe(handles[n]) for n in names))
        body = Readiness(ready=all(oks), judges=dict(zip(names, oks, strict=True)))
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @app.get("/v1/judges", response_model=JudgesResponse, responses=_ERRORS, dependencies=bearer)
    async def judges() -> JudgesResponse:
        return judges_body

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS, dependencies=bearer)
    async def score(request: ScoreRequest) -> JSONResponse:
        name = request.judge or default_judge
        handle = handles.get(name)
        if handle is None:
            return error(400, f"unknown judge {name!r}; served: {sorted(handles)}")
        refused = _refusal(request, limits, prompt_only[name])
        if refused is not None:
            return error(*refused)
        try:
            verdicts = await asyncio.wait_for(
                _awaitable(handle.score.remote(_tasks(request))), timeout_s
            )
        except (RayActorError, DeploymentUnavailableError) as exc:
            log.warning("judge %s: replica unavailable (%s)", name, type(exc).__name__)
            return error(503, f"judge {name!r}: replica unavailable, retry", retry_after=1)
        except BackPressureError:
            return error(503, f"judge {name!r} is overloaded, retry", retry_after=1)
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on
            return error(504, f"judge {name!r} did not answer in {timeout_s:.0f} s")
        except Exception as exc:
            # the type only: a backend's message may quote the text it choked on
            log.warning("judge %s: call failed (%s)", name, type(exc).__name__)
            log.debug("judge %s: call failed", name, exc_info=True)
            return error(500, f"judge {name!r} failed: {type(exc).__name__}")
        log.debug("judge %s: %d verdicts", name, verdicts.num_rows)
        # plain str/float/bool/list values: straight to JSON, no per-field re-validation
        return JSONResponse({"judge": name, "verdicts": verdicts.to_pylist()})

    return app


class JudgeSet:
    """The Serve application's ingress: it only holds the judges' deployments together (one
    application to deploy, watch and delete). Requests go from the HTTP server in the
    ``assay serve`` process straight to the judges' handles."""

    def __init__(self, **judges: Any):
        """``judges``: a handle per judge deployment."""
        self.names = sorted(judges)

    def __call__(self) -> list[str]:
        """The judges' names."""
        return self.names


def build_judges(cfg: ServeConfig) -> Any:
    """The Serve application of a config: one deployment per judge, held by a :class:`JudgeSet`
    (no HTTP route: the HTTP server is this process's)."""
    judges = {
        j.name: _judge_deployment(j, cfg).bind(
            j, cfg.max_retries, cfg.retry_backoff_s, cfg.batching.model_dump()
        )
        for j in cfg.judges
    }
    deployment: Any = serve.deployment(JudgeSet)
    return deployment.options(
        name="judges", num_replicas=1, ray_actor_options={"num_cpus": 0}
    ).bind(**judges)


def judge_handles(cfg: ServeConfig) -> dict[str, Any]:
    """Handles on the judges' deployments of the running application."""
    return {
        j.name: serve.get_deployment_handle(f"judge-{j.name}", app_name=APP_NAME)
        for j in cfg.judges
    }


async def _awaitable(response: Any) -> Any:
    return await response


def _judge_deployment(spec: JudgeSpec, cfg: ServeConfig) -> Any:
    placement = placement_for(spec, max_concurrency=cfg.batching.max_ongoing_requests)
    actor = {k: v for k, v in placement.actor_options.items() if k != "max_concurrency"}
    actor = {k: v for k, v in actor.items() if v is not None}
    actor["runtime_env"] = {"env_vars": dict(_ACTOR_ENV)}
    options: dict[str, Any] = {
        "name": f"judge-{spec.name}",
        "num_replicas": spec.resources.replicas,
        "max_ongoing_requests": cfg.batching.max_ongoing_requests,
        "ray_actor_options": actor,
    }
    if placement.bundles is not None:
        options["placement_group_bundles"] = placement.bundles
        options["placement_group_strategy"] = placement.strategy
    deployment: Any = serve.deployment(JudgeReplica)
    return deployment.options(**options)


# -- running it --------------------------------------------------------------------------------


def start(cfg: ServeConfig, digests: list[str]) -> str:
    """Starts (or joins) Ray, deploys the application and returns the service's base URL once
    every judge replica has loaded its model.

    ``digests`` are the accepted tokens' SHA-256 digests: the tokens themselves stay with the
    caller, and ``cfg.token_env`` is removed from the environment before Ray starts, because
    every Ray process copies the environment of the process that starts it.
    """
    import ray

    os.environ.pop(cfg.token_env, None)
    if not ray.is_initialized():
        # no address: a private Ray on loopback with its own token (see .localray)
        localray.init(
            cfg.address,
            runtime_env={"env_vars": dict(_ACTOR_ENV)},
            num_cpus=cfg.num_cpus or (8 if cfg.address is None else None),
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    return serve_http(cfg, digests)


_server: HttpServer | None = None
"""The running HTTP server of this process (:func:`serve_http`), stopped by :func:`stop`."""


def serve_http(cfg: ServeConfig, digests: list[str]) -> str:
    """Deploys the judges on Serve (Ray is up) and serves the HTTP API from this process;
    returns the base URL once every judge replica has loaded its model and the port accepts.

    Raises:
        FatalError: The port cannot be bound, or a judge failed to deploy (named).
    """
    global _server
    sock = bind(cfg.host, cfg.port)  # before loading models: a port in use fails at once
    try:
        # no Serve proxy: the HTTP server is this process's (see the module docstring)
        serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
        try:
            serve.run(
                build_judges(cfg),
                name=APP_NAME,
                route_prefix=None,
                logging_config={"log_level": "WARNING"},  # access lines only at INFO
            )
        except RuntimeError as exc:
            raise FatalError(_deploy_failure(exc)) from exc
        server = HttpServer(build_app(cfg, digests, judge_handles(cfg)), sock, cfg.limits)
        server.start()
    except BaseException:
        sock.close()
        raise
    _server = server
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    return f"http://{host}:{cfg.port}"


def stop_on_sigterm() -> None:
    """Makes SIGTERM stop the service as Ctrl-C does (a KeyboardInterrupt in the main thread),
    so ``kill`` and process managers get a clean shutdown too."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _deploy_failure(exc: BaseException) -> str:
    """The reason a deployment failed, from Serve's status (the judge and its error line)."""
    reasons = []
    try:
        app = serve.status().applications.get(APP_NAME)
        for name, dep in (app.deployments if app else {}).items():
            lines = [ln.strip() for ln in str(dep.message or "").splitlines() if ln.strip()]
            errors = [ln for ln in lines if "Error:" in ln]
            if errors or (lines and str(dep.status) != "HEALTHY"):
                reasons.append(f"{name.removeprefix('judge-')}: {(errors or lines)[-1][:500]}")
    except Exception as status_exc:  # the status is a nicety; the original error stands
        log.debug("serve status: %s", status_exc)
    return "; ".join(reasons) or str(exc)


def wait_forever() -> None:
    """Blocks until interrupted (Ctrl-C, or SIGTERM after :func:`stop_on_sigterm`).

    Raises:
        FatalError: The HTTP server stopped on its own.
    """
    if _server is not None:
        _server.wait()
        return
    stop = threading.Event()
    while not stop.wait(3600):
        pass


def stop(joined: bool) -> None:
    """Takes the service down: on a cluster that was joined, deletes this application only
    (Serve and other applications keep running); a Ray started here is shut down whole (and
    its token removed)."""
    global _server
    try:
        if _server is not None:
            _server.stop()  # no new requests; those in flight finish first
            _server = None
        if joined:
            serve.delete(APP_NAME)
    finally:
        localray.shutdown()


__all__ = [
    "APP_NAME",
    "Guard",
    "HttpServer",
    "JudgeReplica",
    "JudgeSet",
    "bind",
    "build_app",
    "build_judges",
    "client_address",
    "http_protocol",
    "invalid_body",
    "judge_handles",
    "serve_http",
    "start",
    "stop",
    "stop_on_sigterm",
    "wait_forever",
]
