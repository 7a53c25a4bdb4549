"""``assay serve``: judges on Ray Serve behind a versioned HTTP API (:mod:`assay.engine.service`).

One Serve application: an HTTP ingress (FastAPI) and one deployment per judge.

- The **ingress** checks every request before any work: bearer token (compared in constant time
  against SHA-256 digests; the tokens themselves never leave the ``assay serve`` process), body
  size, items per request and characters per item (413), and a token bucket per token (429 with
  Retry-After; per ingress replica). It turns items into an Arrow table and calls the judge.
- A **judge replica** holds one :class:`~assay.actors.workers.JudgeActor` (the same class runs
  use) and gathers concurrent requests with ``serve.batch`` into one judge call; vLLM batches
  further inside its engine. Serve restarts a replica whose process dies; a request that was on
  it gets 503 with Retry-After, and the client retries.

Nothing here logs a prompt, a response or a judge output: only counts, names and error types.
"""

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pyarrow as pa
from ray import serve

from assay.engine import __version__
from assay.engine.config import JudgeSpec
from assay.engine.errors import FatalError
from assay.engine.service import (
    ErrorBody,
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
    token_digest,
)

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


# -- the guard: auth, body size and rate limit, before the body is read -------------------------


async def _answer(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = ErrorBody(detail=detail).model_dump_json().encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        raw.append((b"www-authenticate", b'Bearer realm="assay"'))
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: 401 without a valid bearer token, 413 for a body over the limit, 429
    over the token's rate; all decided from the headers, so a refused request costs no body
    read and no judge work. A body must come with Content-Length (411 otherwise; the server
    holds the body to that length)."""

    def __init__(
        self,
        app: ASGIApp,
        digests: list[str],
        auth: bool,
        max_bytes: int,
        per_minute: int | None,
        burst: int,
    ):
        """Wraps ``app``; ``digests`` are the accepted tokens' SHA-256 digests."""
        self.app = app
        self.digests = digests
        self.auth = auth
        self.max_bytes = max_bytes
        self.limiter = RateLimiter(per_minute, burst) if per_minute else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Checks one request, then passes it on."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = "anonymous"
        if self.auth:
            scheme, _, presented = headers.get("authorization", "").partition(" ")
            found = None
            if scheme.lower() == "bearer" and presented.strip():
                found = match_token(presented.strip(), self.digests)
            if found is None:
                # the same answer for a missing and a wrong token
                await _answer(send, 401, "missing or invalid bearer token")
                return
            key = found
        length = headers.get("content-length")
        if length is None and scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 411, "a request body needs a Content-Length header")
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _answer(send, 413, f"request body over {self.max_bytes:,} bytes")
            return
        if self.limiter is not None:
            wait = self.limiter.take(key)
            if wait > 0:
                await _answer(
                    send,
                    429,
                    "rate limit exceeded for this token; retry after the Retry-After seconds",
                    {"Retry-After": retry_after_header(wait)},
                )
                return
        await self.app(scope, receive, send)


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
        (400, "Unknown judge, or an item the judge cannot take."),
        (401, "Missing or invalid bearer token."),
        (411, "A request body without Content-Length."),
        (413, "Too many items, an item too long, or a body too large."),
        (429, "Rate limit exceeded; see Retry-After."),
        (500, "The judge failed on this request."),
        (503, "A judge replica is down or overloaded; retry after Retry-After."),
        (504, "The judge did not answer in time."),
    )
}
"""The error answers of the guarded routes, for the OpenAPI schema."""


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


def build_app(cfg: ServeConfig, tokens: list[str]) -> Any:
    """The Serve application of a config: the ingress bound to one deployment per judge."""
    from fastapi import FastAPI, Security
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
        digests=[token_digest(t) for t in tokens],
        auth=cfg.auth == "token",
        max_bytes=limits.max_request_bytes(),
        per_minute=limits.rate_limit_per_minute,
        burst=limits.rate_limit_burst,
    )
    # Documents the scheme in the schema; the Guard enforces it before the body is read.
    bearer = [Security(HTTPBearer(auto_error=False, description="A token of the service."))]

    def error(status: int, detail: str, retry_after: int | None = None) -> JSONResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @serve.deployment(name="ingress")
    @serve.ingress(app)
    class Ingress:
        def __init__(self, **handles: Any):
            self.handles = handles

        @app.get("/v1/health", response_model=Health)
        async def health(self) -> Health:
            return Health(status="ok", version=__version__)

        @app.get("/v1/ready", response_model=Readiness, responses={503: {"model": Readiness}})
        async def ready(self) -> JSONResponse:
            async def probe(handle: Any) -> bool:
                try:
                    await asyncio.wait_for(_awaitable(handle.ready.remote()), 5.0)
                    return True
                except Exception:
                    return False

            names = list(self.handles)
            oks = await asyncio.gather(*(probe(self.handles[n]) for n in names))
            body = Readiness(ready=all(oks), judges=dict(zip(names, oks, strict=True)))
            return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

        @app.get(
            "/v1/judges", response_model=JudgesResponse, responses=_ERRORS, dependencies=bearer
        )
        async def judges(self) -> JudgesResponse:
            return judges_body

        @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS, dependencies=bearer)
        async def score(self, request: ScoreRequest) -> JSONResponse:
            name = request.judge or default_judge
            handle = self.handles.get(name)
            if handle is None:
                return error(400, f"unknown judge {name!r}; served: {sorted(self.handles)}")
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
            except TimeoutError:
                return error(504, f"judge {name!r} did not answer in {timeout_s:.0f} s")
            except Exception as exc:
                # the type only: a backend's message may quote the text it choked on
                log.warning("judge %s: call failed (%s)", name, type(exc).__name__)
                log.debug("judge %s: call failed", name, exc_info=True)
                return error(500, f"judge {name!r} failed: {type(exc).__name__}")
            log.debug("judge %s: %d verdicts", name, verdicts.num_rows)
            # plain str/float/bool/list values: straight to JSON, no per-field re-validation
            return JSONResponse({"judge": name, "verdicts": verdicts.to_pylist()})

    handles = {
        j.name: _judge_deployment(j, cfg).bind(
            j, cfg.max_retries, cfg.retry_backoff_s, cfg.batching.model_dump()
        )
        for j in cfg.judges
    }
    return Ingress.options(  # type: ignore[attr-defined]
        num_replicas=cfg.ingress_replicas,
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": 0.25},
    ).bind(**handles)


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


def start(cfg: ServeConfig, tokens: list[str]) -> str:
    """Starts (or joins) Ray, deploys the application and returns the service's base URL once
    every judge replica has loaded its model."""
    import ray

    if not ray.is_initialized():
        if cfg.address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster
        ray.init(
            address=cfg.address,
            runtime_env={"env_vars": dict(_ACTOR_ENV)},
            num_cpus=cfg.num_cpus or (8 if cfg.address is None else None),
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": cfg.host, "port": cfg.port},
        logging_config={"log_level": "WARNING"},
    )
    try:
        serve.run(
            build_app(cfg, tokens),
            name=APP_NAME,
            route_prefix="/",
            logging_config={"log_level": "WARNING"},  # access lines only at INFO; never bodies
        )
    except RuntimeError as exc:
        raise FatalError(_deploy_failure(exc)) from exc
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
    """Blocks until interrupted (Ctrl-C, or SIGTERM after :func:`stop_on_sigterm`)."""
    stop = threading.Event()
    while not stop.wait(3600):
        pass


def stop(joined: bool) -> None:
    """Takes the service down: on a cluster that was joined, deletes this application only
    (Serve and other applications keep running); a Ray started here is shut down whole."""
    import ray

    try:
        if joined:
            serve.delete(APP_NAME)
    finally:
        ray.shutdown()


__all__ = [
    "APP_NAME",
    "Guard",
    "JudgeReplica",
    "build_app",
    "start",
    "stop",
    "stop_on_sigterm",
    "wait_forever",
]
