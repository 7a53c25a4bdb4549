"""The judge service's contract: its config, its HTTP messages (API v1) and its guards.

``assay serve`` (:mod:`assay.cluster.serve`) deploys judges behind an HTTP API; the client
(:mod:`assay.engine.client`) calls it. Both sides share the pydantic models here, so the request a
client sends and the schema the service publishes (``/v1/openapi.json``) come from one place. The
guards (bearer tokens compared in constant time, a per-token token bucket, a per-client limit on
failed authentication) are plain Python so they are tested without a server.

Routes (all JSON):

- ``POST /v1/score``: :class:`ScoreRequest` -> :class:`ScoreResponse` (one verdict per item, in
  order, with the fields of :class:`~assay.engine.records.Verdict`).
- ``GET /v1/judges``: :class:`JudgesResponse` (judges, their taxonomies, the request limits).
- ``GET /v1/health`` (the process answers), ``GET /v1/ready`` (every judge has a replica up):
  open, no token needed.
- ``GET /v1/openapi.json``: the OpenAPI schema.

Every error answer has the body :class:`ErrorBody`: ``{"detail": "..."}``, plus ``errors`` (where
in the request, what, and the error type; never the input) for a body that does not validate
(422) or holds text that is not valid Unicode (400).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from .config import JudgeSpec, _Strict
from .errors import ConfigError
from .judges import JudgeFormat, get_judge
from .records import Verdict, make_test_id
from .taxonomy import get_taxonomy

API_VERSION = "v1"
"""Version of the HTTP API; every route lives under ``/v1``."""

DEFAULT_TOKEN_ENV = "ASSAY_SERVE_TOKENS"
"""Environment variable holding the service's bearer tokens (comma-separated)."""

# -- config ------------------------------------------------------------------------------------


class ServeLimits(_Strict):
    """What one request may ask, and how often."""

    max_items_per_request: int = Field(
        default=256, ge=1, description="Items in one /v1/score request (more: 413)."
    )
    max_chars_per_item: int = Field(
        default=32_000,
        ge=1,
        description="Characters of an item's prompt plus response (more: 413).",
    )
    rate_limit_per_minute: int | None = Field(
        default=600,
        ge=1,
        description="Requests per minute per token, refilled continuously; None: no rate "
        "limit. Over it: 429 with Retry-After.",
    )
    rate_limit_burst: int = Field(
        default=60, ge=1, description="Requests a token may send at once before the rate applies."
    )
    auth_failure_limit: int = Field(
        default=10,
        ge=1,
        description="Failed authentications (401) one client address may have within "
        "auth_failure_window_s; beyond them, every request from that address gets 429 with "
        "Retry-After, before its token is looked at, until the oldest failure leaves the window.",
    )
    auth_failure_window_s: float = Field(
        default=60.0, gt=0, description="The window of auth_failure_limit, in seconds."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a connection has to send a request's line and headers, from "
        "connecting (or, on a kept-alive connection, from the request's first byte). Late: "
        "the connection is closed (with 408 when part of a request came).",
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a request has to send its whole body once its headers are in. "
        "Late: 408 and the connection is closed; no judge work.",
    )
    keep_alive_timeout_s: int = Field(
        default=5, ge=1, description="Seconds an idle connection is kept open between requests."
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open HTTP connections at once. A connection beyond it gets 503 with "
        "Retry-After and is closed at once, so idle or slow sockets cannot use up the "
        "process's file descriptors.",
    )

    def max_request_bytes(self) -> int:
        """Largest request body accepted: every item at its character limit in 4-byte UTF-8
        (JSON escapes aside), plus room for the fields around the text."""
        return self.max_items_per_request * (4 * self.max_chars_per_item + 1024) + 4096


class ServeBatching(_Strict):
    """How concurrent requests to one judge replica are gathered into one judge call."""

    max_batch_size: int = Field(
        default=8,
        ge=1,
        description="Requests (each up to max_items_per_request items) merged into one judge "
        "call. With vLLM the engine also batches across calls (continuous batching).",
    )
    batch_wait_timeout_s: float = Field(
        default=0.005, ge=0, description="How long a replica waits to fill a batch."
    )
    max_ongoing_requests: int = Field(
        default=64,
        ge=1,
        description="Requests in flight per judge replica (at least max_batch_size for "
        "batches to fill); further requests queue in the ingress.",
    )


class ServeConfig(_Strict):
    """``assay serve``: judges deployed on Ray Serve behind the HTTP API."""

    judges: list[JudgeSpec] = Field(
        description="Judges served; the first is the default of requests that name none.",
        min_length=1,
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP server binds to; loopback unless set (0.0.0.0: all).",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    auth: Literal["token", "none"] = Field(
        default="token",
        description="token: every request but health/ready/openapi needs a bearer token; "
        "none: no authentication (a warning is printed).",
    )
    token_env: str = Field(
        default=DEFAULT_TOKEN_ENV,
        description="Environment variable with the accepted tokens, comma-separated.",
    )
    token_file: str | None = Field(
        default=None,
        description="File with accepted tokens, one per line ('#' comments); adds to token_env.",
    )
    limits: ServeLimits = Field(default_factory=ServeLimits, description="Request limits.")
    batching: ServeBatching = Field(
        default_factory=ServeBatching, description="Dynamic batching per judge replica."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="How long the HTTP server waits on a judge call (504)."
    )
    address: str | None = Field(
        default=None, description="Ray address to join ('auto', 'ray://...'); None starts one."
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="Logical CPUs of a Ray started here (default: 8)."
    )
    max_retries: int = Field(default=3, ge=0, description="Retries of a failed backend call.")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="First retry delay, doubling.")

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        names = [j.name for j in self.judges]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate judge names: {dup}")
        remote = [j.name for j in self.judges if j.backend == "remote"]
        if remote:
            raise ValueError(f"judges {remote}: a served judge cannot use backend 'remote'")
        return self


def load_tokens(cfg: ServeConfig) -> list[str]:
    """The bearer tokens the service accepts: ``token_env`` (comma-separated) plus the lines of
    ``token_file``.

    Raises:
        ConfigError: Authentication is on and no token is configured.
    """
    tokens = [t.strip() for t in os.environ.get(cfg.token_env, "").split(",")]
    if cfg.token_file:
        try:
            lines = Path(cfg.token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read token_file {cfg.token_file}: {exc}") from None
        tokens += [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]
    tokens = list(dict.fromkeys(t for t in tokens if t))
    if cfg.auth == "token" and not tokens:
        raise ConfigError(
            f"auth is on and no token is configured: set {cfg.token_env}=TOKEN[,TOKEN...] or "
            "token_file, or set auth: none to serve without authentication"
        )
    return tokens


def token_digest(token: str) -> str:
    """The SHA-256 of a token: what the service keeps and compares (never the token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def match_token(presented: str, digests: list[str]) -> str | None:
    """The digest of ``presented`` if it is one of ``digests``, else None.

    Every digest is compared, in constant time each, so the time taken does not tell which
    token (or which prefix) came close.
    """
    digest = token_digest(presented)
    found = None
    for known in digests:
        if hmac.compare_digest(digest, known):
            found = known
    return found


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: int, burst: int, max_keys: int = 10_000):
        """Buckets start full."""
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """Takes one request from ``key``'s bucket: 0.0 if allowed, else the seconds until
        one is available (the Retry-After)."""
        now = time.monotonic() if now is None else now
        level, last = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level >= 1.0:
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                self._buckets.clear()  # keys are token digests; a flood of them resets all
            self._buckets[key] = (level - 1.0, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1.0 - level) / self.rate


class FailureLimiter:
    """Failed attempts per key (a client address) in a sliding window: once a key has
    ``limit`` failures younger than ``window_s``, it is blocked until the oldest one ages out.

    Memory is bounded: at most ``max_keys`` keys are tracked, the least recently failed
    dropped first (an attacker with more addresses than that gets no more tries per address
    than ``limit`` per window per address it still holds).
    """

    def __init__(self, limit: int, window_s: float, max_keys: int = 10_000):
        """No key starts blocked."""
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, key: str, now: float | None = None) -> float:
        """0.0 if ``key`` may try, else the seconds until it may (the Retry-After)."""
        now = time.monotonic() if now is None else now
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(times[0] + self.window_s - now, 0.001)

    def failed(self, key: str, now: float | None = None) -> None:
        """Records one failure of ``key``."""
        now = time.monotonic() if now is None else now
        times = self._recent(key, now)
        if times is None:
            while len(self._failures) >= self.max_keys:
                self._failures.popitem(last=False)
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(key)


def retry_after_header(seconds: float) -> str:
    """A Retry-After value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(seconds)))


# -- messages ----------------------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _unicode_text(value: str) -> str:
    """``value`` if it encodes to UTF-8. pydantic refuses a lone surrogate in some ``str``
    fields but not in others (``str | None`` without constraints), so text fields check here."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "string_unicode",
            "not valid Unicode text: a lone surrogate at character {position}",
            {"position": exc.start},
        ) from None
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]
"""A string of Unicode scalar values: no lone surrogates (error type ``string_unicode``)."""


class ScoreItem(_Message):
    """One item to judge: a prompt and, usually, the response to it.

    Text must be Unicode scalar values: a lone surrogate (what a JSON ``"\\ud800"`` escape
    decodes to) fails validation with the error type ``string_unicode`` (the service answers
    400, before any judge work).
    """

    prompt: Text = Field(min_length=1, description="The user prompt.")
    response: Text | None = Field(
        default=None,
        description="The response to judge; null judges the prompt alone where the judge's "
        "format supports it.",
    )
    lang: Text = Field(default="en", max_length=35, description="BCP-47 language of the item.")
    id: Text | None = Field(
        default=None,
        max_length=256,
        description="Caller's id, returned as the verdict's test_id (default: a content hash "
        "of prompt, lang and response).",
    )
    target: Text = Field(
        default="",
        max_length=256,
        description="Name of the model that wrote the response, returned as the verdict's target.",
    )

    def chars(self) -> int:
        """Characters of text to judge (prompt plus response)."""
        return len(self.prompt) + len(self.response or "")

    def test_id(self) -> str:
        """The verdict's ``test_id``: the caller's id, else a content hash."""
        if self.id is not None:
            return self.id
        return make_test_id(self.prompt, self.lang, None, None, self.response)


class ScoreRequest(_Message):
    """``POST /v1/score``: items for one judge."""

    items: list[ScoreItem] = Field(min_length=1, description="Items to judge, in order.")
    judge: Text | None = Field(
        default=None, description="Name of the judge (default: the service's first judge)."
    )


class ScoreResponse(_Message):
    """The verdicts of a ``/v1/score`` request: one per item, in the items' order."""

    judge: str = Field(description="The judge that answered.")
    verdicts: list[Verdict] = Field(description="One verdict per item, in order.")


class CategoryInfo(_Message):
    """A category of a judge's taxonomy."""

    code: str = Field(description="Code as the judge emits it (S1, O3, ...).")
    name: str = Field(description="Display name.")
    seval_l1: list[str] = Field(description="S-Eval L1 dimensions it maps to (risk_tags).")


class JudgeInfo(_Message):
    """One served judge."""

    name: str = Field(description="Name to pass as ScoreRequest.judge.")
    format: str = Field(description="Judge format (llama-guard-3, qwen3guard, ...).")
    backend: str = Field(description="Backend running the model.")
    default: bool = Field(description="Whether requests that name no judge go to this one.")
    replicas: int = Field(description="Configured replicas.")
    supports_prompt_only: bool = Field(description="Whether items without a response are judged.")
    labels: list[str] = Field(description="The judge's label strings (safe/unsafe...).")
    taxonomy: str | None = Field(description="Taxonomy of the categories it names, if any.")
    categories: list[CategoryInfo] = Field(description="That taxonomy's risk categories.")


class LimitsInfo(_Message):
    """The service's request limits, for clients to size their requests."""

    max_items_per_request: int = Field(description="Items per /v1/score request.")
    max_chars_per_item: int = Field(description="Characters of prompt plus response per item.")
    max_request_bytes: int = Field(description="Largest request body.")
    rate_limit_per_minute: int | None = Field(description="Requests per minute per token.")
    rate_limit_burst: int = Field(description="Requests a token may send at once.")


class JudgesResponse(_Message):
    """``GET /v1/judges``."""

    api_version: str = Field(description="API version (v1).")
    version: str = Field(description="assay version of the service.")
    judges: list[JudgeInfo] = Field(description="Served judges; the first is the default.")
    limits: LimitsInfo = Field(description="Request limits.")


class Health(_Message):
    """``GET /v1/health``: the service process answers."""

    status: Literal["ok"] = Field(description="Always ok when the service answers.")
    version: str = Field(description="assay version of the service.")


class Readiness(_Message):
    """``GET /v1/ready``: whether every judge has a replica ready (503 otherwise)."""

    ready: bool = Field(description="True when every judge answered its readiness probe.")
    judges: dict[str, bool] = Field(description="Readiness per judge.")


class FieldError(_Message):
    """One problem with a request body (the input itself is never echoed)."""

    loc: list[str | int] = Field(
        description="Where: 'body', then field names and item indexes ([body, items, 0, prompt])."
    )
    msg: str = Field(description="What is wrong there.")
    type: str = Field(description="pydantic's error type (missing, string_unicode, ...).")


class ErrorBody(_Message):
    """The body of every error answer (4xx, 5xx)."""

    detail: str = Field(description="What went wrong, for a person to read.")
    errors: list[FieldError] | None = Field(
        default=None,
        description="For a body that does not validate (422) or holds text that is not valid "
        "Unicode (400): each problem, with where it is. Absent otherwise.",
    )


# -- judge descriptions ------------------------------------------------------------------------

_FORMAT_TAXONOMY = {"qwen3guard": "qwen3guard", "nemoguard": "nemoguard"}
"""Formats that name their taxonomy in code rather than in a ``taxonomy`` attribute."""


def judge_taxonomy(fmt: JudgeFormat) -> str | None:
    """The taxonomy whose categories a judge format names, or None (label-only formats)."""
    name = getattr(fmt, "taxonomy", None)
    if isinstance(name, str):
        return name
    return _FORMAT_TAXONOMY.get(fmt.name)


def judge_info(spec: JudgeSpec, default: bool) -> JudgeInfo:
    """What ``/v1/judges`` says about one judge."""
    fmt = get_judge(spec.format, **spec.format_options)
    taxonomy = judge_taxonomy(fmt)
    categories = []
    if taxonomy is not None:
        categories = [
            CategoryInfo(code=c.code, name=c.name, seval_l1=list(c.seval_l1))
            for c in get_taxonomy(taxonomy).risks()
        ]
    return JudgeInfo(
        name=spec.name,
        format=spec.format,
        backend=spec.backend,
        default=default,
        replicas=spec.resources.replicas,
        supports_prompt_only=fmt.supports_prompt_only,
        labels=list(fmt.label_tokens),
        taxonomy=taxonomy,
        categories=categories,
    )


__all__ = [
    "API_VERSION",
    "DEFAULT_TOKEN_ENV",
    "CategoryInfo",
    "ErrorBody",
    "FailureLimiter",
    "FieldError",
    "Health",
    "JudgeInfo",
    "JudgesResponse",
    "LimitsInfo",
    "RateLimiter",
    "Readiness",
    "ScoreItem",
    "ScoreRequest",
    "ScoreResponse",
    "ServeBatching",
    "ServeConfig",
    "ServeLimits",
    "Text",
    "judge_info",
    "judge_taxonomy",
    "load_tokens",
    "match_token",
    "retry_after_header",
    "token_digest",
]
