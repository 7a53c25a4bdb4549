"""An OpenAI-compatible HTTP backend: a vLLM server, a hosted API, anything that answers
``POST {base_url}/chat/completions`` or ``POST {base_url}/completions``.

Options (``BackendSpec.options``, validated by :class:`OpenAIOptions`) cover the endpoint, the API
key (only ever the *name* of an environment variable), concurrency, a requests-per-minute limit,
timeouts, retries and extra body fields. ``BackendSpec.model`` is the served model name.

**Requests.** In ``mode="chat"`` a request's messages go to ``/chat/completions`` and the server
applies the model's chat template; a raw ``prompt`` is sent as one user message (so the server's
template wraps it: not "as is"). In ``mode="completions"`` a raw ``prompt`` goes to
``/completions`` verbatim; a request with chat messages comes back with ``error`` set, since this
backend has no tokenizer or template to render them.

**assistant_prefix.** In completions mode the prefix is appended to the prompt, which is exact. In
chat mode, ``prefix_mode`` decides:

- ``"continue"`` (default): the prefix is sent as a final assistant message together with vLLM's
  ``continue_final_message: true, add_generation_prompt: false``, so the template leaves that
  message open and generation continues it. These are vLLM extras: the OpenAI API and other
  servers reject or ignore them, and a chat template that cannot render an open final message
  gives a wrong prompt without any error.
- ``"message"``: the final assistant message is sent without extras, for servers that continue a
  trailing assistant message on their own. Servers that do not (the OpenAI API) treat it as a
  finished earlier turn and start a new answer, so the prefix is *not* honoured there.
- ``"reject"``: requests with a prefix come back with ``error`` set.

**Label log-probabilities.** For a request with ``label_tokens`` the backend asks for the top-K
log-probabilities of each generated position (chat: ``logprobs: true, top_logprobs: K``;
completions: ``logprobs: K``; K is the ``top_logprobs`` option) and reads the first generated
position. A label's value is the largest log-probability among the entries (the top-K and the
sampled token) whose token text equals the label, also after removing one leading space, ``Ġ``
or ``▁`` from the token. Limits, stated plainly:

- A label that is not among the top K gets no entry, so a judge's risk score then comes from the
  labels that are present. Hosted APIs cap K (the OpenAI chat API at 20, its legacy completions
  at 5); vLLM caps it at the server's ``--max-logprobs`` (default 20). Entries at or below the
  OpenAI "very unlikely" sentinel (-9999) are ignored.
- Matching is on whole token text: without the model's tokenizer this backend cannot find the
  first token of a label that the tokenizer splits into several tokens, so such a label is
  normally absent.
- Exact values from a vLLM server: recent vLLM versions document the request extras
  ``logprob_token_ids`` (log-probabilities of exactly these vocabulary ids at each generated
  position, over the full vocabulary) and ``return_tokens_as_token_ids`` (tokens come back as
  ``"token_id:<id>"``). Set the ``label_token_ids`` option (label -> first-token id on the served
  model); a request whose labels are all mapped then sends both extras and reads its labels by id,
  which removes the top-K truncation and the tokenization guesswork. Servers without these extras
  reject them (a 400 shows up as the result's ``error``) or ignore them (labels come back empty).

**Failures.** HTTP 429, 5xx, connection errors and timeouts are retried up to ``max_retries``
times with exponential backoff and jitter; a ``Retry-After`` header (seconds or an HTTP date)
replaces the computed delay, capped at ``backoff_max_s`` (a :class:`~assay.engine.retry.RetryPolicy`
with ``retry_after="replace"``). Other 4xx answers are not retried. A
request that still fails comes back with ``error`` set (status code and the server's message,
truncated) and ``finish_reason="error"``; the batch never raises for it. ``latency_ms`` is the
wall time of the whole request, retries and waits included.

Prompt and response text are never logged above DEBUG. One backend serves one event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assay.engine import retry
from assay.engine.errors import ConfigError, FatalError, MissingDependencyError
from assay.engine.judges import FALLBACK_SPECIAL_TOKENS
from assay.engine.requests import GenerationRequest, GenerationResult

from .base import BackendSpec

try:
    import httpx
except ImportError as exc:  # pragma: no cover - httpx is installed wherever this backend runs
    raise MissingDependencyError("httpx") from exc

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]

# Option names that hold secrets; the key is only ever read from the environment.
_SECRET_OPTIONS = frozenset(
    {"api_key", "apikey", "key", "token", "access_token", "secret", "password", "authorization"}
)
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}
)
# Body fields this backend sets per request; extra_body may not override them.
_RESERVED_BODY = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "stream",
        "n",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "logprobs",
        "top_logprobs",
        "continue_final_message",
        "add_generation_prompt",
        "logprob_token_ids",
        "return_tokens_as_token_ids",
    }
)
_MAX_ERROR_CHARS = 500
_UNLIKELY = -9999.0  # OpenAI's "not in the top 20" sentinel
_TOKEN_MARKERS = (" ", "\u0120", "\u2581")  # space, GPT-2 "Ġ", SentencePiece "▁"


class OpenAIOptions(BaseModel):
    """Options of the OpenAI-compatible HTTP backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="API root, up to and including the version (e.g. http://host:8000/v1).",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable that holds the API key, sent as a Bearer "
        "token. None: no Authorization header. The key itself never goes in the config.",
    )
    mode: Literal["chat", "completions"] = Field(
        default="chat",
        description="chat: /chat/completions (the server applies the chat template); "
        "completions: /completions with the raw prompt.",
    )
    prefix_mode: Literal["continue", "message", "reject"] = Field(
        default="continue",
        description="How chat mode sends an assistant_prefix: continue (final assistant message "
        "plus vLLM's continue_final_message), message (final assistant message only) or reject.",
    )
    top_logprobs: int = Field(
        default=20,
        ge=1,
        description="K: how many most likely tokens to ask for when a request has label tokens.",
    )
    label_token_ids: dict[str, int] = Field(
        default_factory=dict,
        description="Label string -> id of its first token on the served model; enables vLLM's "
        "logprob_token_ids for exact label log-probabilities (see the module docstring).",
    )
    max_concurrency: int = Field(default=16, ge=1, description="Most HTTP requests in flight.")
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Most HTTP requests (retries included) started in any 60 s window; None: no "
        "limit.",
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one HTTP request.")
    max_retries: int = Field(
        default=4, ge=0, description="Retries after a 429, a 5xx, a connection error or a timeout."
    )
    backoff_base_s: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles per retry, with jitter."
    )
    backoff_max_s: float = Field(
        default=60.0, ge=0, description="Longest retry delay, Retry-After included."
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields merged into every request body (e.g. vLLM extras such as top_k).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers; no secrets (use api_key_env)."
    )
    trust_env: bool = Field(
        default=True, description="Honour HTTP(S)_PROXY / NO_PROXY and similar variables."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            found = sorted(
                str(k) for k in data if str(k).lower().replace("-", "_") in _SECRET_OPTIONS
            )
            if found:
                raise ValueError(
                    f"option(s) {found} would put a secret in the config; store the key in an "
                    "environment variable and name that variable with api_key_env"
                )
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        found = sorted(k for k in value if k.lower() in _SECRET_HEADERS)
        if found:
            raise ValueError(
                f"header(s) {found} carry secrets; name an environment variable with "
                "api_key_env instead"
            )
        return value

    @field_validator("extra_body")
    @classmethod
    def _no_reserved_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        found = sorted(set(value) & _RESERVED_BODY)
        if found:
            raise ValueError(f"extra_body may not set {found}: the backend sets them per request")
        return value

    @field_validator("label_token_ids")
    @classmethod
    def _ids_non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        if any(i < 0 for i in value.values()):
            raise ValueError("label_token_ids must be vocabulary ids (>= 0)")
        return value

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OpenAIOptions:
        """Validates ``BackendSpec.options``; errors never echo the values given."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigError(f"openai backend options: {problems}") from None


class SlidingWindowLimiter:
    """Lets at most ``limit`` callers through in any ``window_s`` interval (a sliding log).

    ``clock`` and ``sleep`` are injectable so tests can run it on a fake clock.
    """

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Starts with an empty window."""
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Waits until a slot in the window is free, then takes it (first come, first served)."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.window_s:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + self.window_s - now)


class _Rejected(Exception):
    """A request this backend cannot send as configured (becomes the result's error)."""


def _check_distinct(labels: tuple[str, ...], label_ids: dict[str, int]) -> None:
    """Labels must be told apart: by their token ids where mapped, else by the token text they
    are matched on (one leading space or ``Ġ``/``▁`` marker removed)."""
    if label_ids:
        seen: dict[int, str] = {}
        for label, token in label_ids.items():
            if token in seen:
                raise _Rejected(
                    f"labels {seen[token]!r} and {label!r} map to the same token id {token} "
                    "(label_token_ids), so their probabilities cannot be told apart"
                )
            seen[token] = label
        return
    keys: dict[str, str] = {}
    for label in labels:
        key = label.removeprefix(" ")
        if key in keys:
            raise _Rejected(
                f"labels {keys[key]!r} and {label!r} read the same token text {key!r}, so their "
                "probabilities cannot be told apart"
            )
        keys[key] = label


class OpenAIBackend:
    """Answers requests through an OpenAI-compatible HTTP API; see the module docstring."""

    def __init__(
        self,
        spec: BackendSpec,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        """Validates the options, reads the API key from the environment and opens a client.

        ``clock`` (monotonic seconds) and ``sleep`` drive the rate limiter and the retry waits;
        tests pass fakes, everyone else leaves them out.
        """
        self.spec = spec
        self.options = OpenAIOptions.from_options(spec.options)
        opts = self.options
        headers = dict(opts.headers)
        if opts.api_key_env:
            key = os.environ.get(opts.api_key_env)
            if not key:
                raise FatalError(
                    f"openai backend: environment variable {opts.api_key_env} (api_key_env) "
                    "is not set or is empty"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._sleep: Sleep = sleep or asyncio.sleep
        self._limiter = (
            SlidingWindowLimiter(
                opts.requests_per_minute,
                60.0,
                clock=clock or time.monotonic,
                sleep=self._sleep,
            )
            if opts.requests_per_minute
            else None
        )
        self._semaphore = asyncio.Semaphore(opts.max_concurrency)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(opts.timeout_s),
            limits=httpx.Limits(
                max_connections=opts.max_concurrency,
                max_keepalive_connections=opts.max_concurrency,
            ),
            trust_env=opts.trust_env,
        )
        self._rng = random.Random()
        self._clock: Clock = clock or time.monotonic
        # Retry-After replaces the computed wait; both capped at backoff_max_s (no deadline)
        self._retry_policy = retry.RetryPolicy.from_retries(
            opts.max_retries,
            opts.backoff_base_s,
            max_s=opts.backoff_max_s,
            retry_after="replace",
            retry_after_max_s=opts.backoff_max_s,
        )
        self._closed = False
        self._warned_partial_ids = False

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order; the requests run concurrently."""
        if self._closed:
            raise FatalError("openai backend is closed")
        results = await asyncio.gather(*(self._one(req) for req in requests))
        for req, res in zip(requests, results, strict=True):
            if res.request_id != req.request_id:  # pragma: no cover - gather keeps order
                raise RuntimeError(f"result {res.request_id} answered {req.request_id}")
        return list(results)

    async def close(self) -> None:
        """Closes the HTTP connections; later ``generate`` calls raise."""
        self._closed = True
        await self._client.aclose()

    def special_texts(self) -> tuple[str, ...]:
        """The fixed list of common chat-template tokens judges neutralise: this backend has no
        tokenizer to ask (the server renders the prompt), so a server model's own special
        tokens outside that list are not known here."""
        return tuple(FALLBACK_SPECIAL_TOKENS)

    def _url(self, path: str) -> str:
        return self.options.base_url + path

    async def _one(self, req: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        try:
            path, body, label_ids = self._build(req)
        except _Rejected as exc:
            return self._failed(req, str(exc), start)
        outcome = await self._post(path, body, req.request_id)
        if isinstance(outcome, str):
            return self._failed(req, outcome, start)
        try:
            return self._parse(req, outcome, label_ids, start)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            return self._failed(
                req, f"malformed response from {self._url(path)}: {type(exc).__name__}", start
            )

    def _build(self, req: GenerationRequest) -> tuple[str, dict[str, Any], dict[str, int]]:
        """The endpoint path, the JSON body and the label -> token id map used (if any)."""
        opts = self.options
        body: dict[str, Any] = dict(opts.extra_body)
        body["model"] = self.spec.model
        if opts.mode == "chat":
            path = "/chat/completions"
            turns = req.messages
            if req.own_template_marker is not None:
                # a guard whose own chat template builds its moderation prompt: the served model's
                # template renders the raw conversation (the config check allows this only so)
                turns = req.conversation
            elif req.template is not None:
                raise _Rejected(
                    f"the judge's prompt is rendered with assay's plain turn format "
                    f"{req.template!r}, which an OpenAI-compatible server cannot apply"
                )
            messages: list[dict[str, str]] = [m.model_dump() for m in turns]
            if req.prompt is not None:
                messages = [{"role": "user", "content": req.prompt}]
            if req.assistant_prefix:
                if opts.prefix_mode == "reject":
                    raise _Rejected("assistant_prefix is not supported (prefix_mode='reject')")
                messages.append({"role": "assistant", "content": req.assistant_prefix})
                if opts.prefix_mode == "continue":
                    body["continue_final_message"] = True
                    body["add_generation_prompt"] = False
            body["messages"] = messages
        else:
            path = "/completions"
            if req.prompt is None:
                raise _Rejected(
                    "mode='completions' sends raw prompts only; chat messages need mode='chat' "
                    "(the server renders the chat template)"
                )
            body["prompt"] = req.prompt + req.assistant_prefix
        sampling = req.sampling
        body["max_tokens"] = sampling.max_tokens
        body["temperature"] = sampling.temperature
        body["top_p"] = sampling.top_p
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        label_ids: dict[str, int] = {}
        if req.label_tokens:
            if opts.mode == "chat":
                body["logprobs"] = True
                body["top_logprobs"] = opts.top_logprobs
            else:
                body["logprobs"] = opts.top_logprobs
            label_ids = self._label_ids(req.label_tokens)
            _check_distinct(req.label_tokens, label_ids)
            if label_ids:
                body["logprob_token_ids"] = sorted(set(label_ids.values()))
                body["return_tokens_as_token_ids"] = True
        return path, body, label_ids

    def _label_ids(self, labels: tuple[str, ...]) -> dict[str, int]:
        """Label -> token id when every label is mapped; else {} (read by text instead)."""
        known = self.options.label_token_ids
        if not known:
            return {}
        if all(label in known for label in labels):
            return {label: known[label] for label in labels}
        if not self._warned_partial_ids:
            self._warned_partial_ids = True
            logger.warning(
                "openai backend: some label tokens have no label_token_ids entry; those requests "
                "read labels from the top-%d log-probabilities by text",
                self.options.top_logprobs,
            )
        return {}

    async def _post(self, path: str, body: dict[str, Any], request_id: str) -> dict[str, Any] | str:
        """The decoded JSON answer, or why the request failed (after retries where allowed)."""
        url = self._url(path)
        state = self._retry_policy.start(clock=self._clock, rng=self._rng)
        reason = kind = ""
        while True:
            if self._limiter is not None:
                await self._limiter.acquire()
            retry_after: float | None = None
            async with self._semaphore:
                try:
                    resp = await self._client.post(url, json=body)
                except httpx.TimeoutException as exc:
                    kind = f"timeout ({type(exc).__name__})"
                    reason = f"{kind} after {self.options.timeout_s:g} s calling {url}"
                except httpx.TransportError as exc:
                    kind = type(exc).__name__
                    reason = f"{kind} calling {url}: {_truncate(str(exc))}"
                else:
                    status = resp.status_code
                    if 200 <= status < 300:
                        try:
                            data = resp.json()
                        except ValueError:
                            return f"HTTP {status} from {url}: the body is not JSON"
                        if not isinstance(data, dict):
                            return f"HTTP {status} from {url}: the body is not a JSON object"
                        return data
                    kind = f"HTTP {status}"
                    reason = f"HTTP {status} from {url}: {_server_message(resp)}"
                    if not retry.is_retryable_status(status):
                        logger.debug("openai backend: request %s failed: %s", request_id, reason)
                        return reason
                    retry_after = retry.parse_retry_after(resp.headers.get("retry-after"))
            delay = state.next_wait(retry_after)
            if delay is None:
                break
            logger.info(
                "openai backend: request %s attempt %d/%d failed (%s); retrying in %.2f s",
                request_id,
                state.retries,
                self._retry_policy.attempts,
                kind,
                delay,
            )
            await self._sleep(delay)
        logger.warning(
            "openai backend: request %s failed after %d attempt(s) (%s)",
            request_id,
            state.tries,
            kind,
        )
        return f"{reason} (gave up after {state.tries} attempt(s))"

    def _parse(
        self,
        req: GenerationRequest,
        data: dict[str, Any],
        label_ids: dict[str, int],
        start: float,
    ) -> GenerationResult:
        choice = data["choices"][0]
        if self.options.mode == "chat":
            text = (choice.get("message") or {}).get("content") or ""
            candidates = _chat_first_position(choice.get("logprobs"))
        else:
            text = choice.get("text") or ""
            candidates = _completion_first_position(choice.get("logprobs"))
        usage = data.get("usage") or {}
        labels = match_label_logprobs(candidates, req.label_tokens, label_ids)
        return GenerationResult(
            request_id=req.request_id,
            text=text,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=_count(usage.get("prompt_tokens")),
            output_tokens=_count(usage.get("completion_tokens")),
            label_logprobs=labels,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    @staticmethod
    def _failed(req: GenerationRequest, why: str, start: float) -> GenerationResult:
        return GenerationResult(
            request_id=req.request_id,
            finish_reason="error",
            error=why,
            latency_ms=(time.perf_counter() - start) * 1000,
        )


def match_label_logprobs(
    candidates: list[tuple[str, float]],
    labels: tuple[str, ...],
    label_ids: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Label -> log-probability from one position's (token text, logprob) candidates.

    A label mapped in ``label_ids`` matches the token ``"token_id:<id>"``; otherwise a token
    matches when its text, or its text without one leading space / ``Ġ`` / ``▁``, equals the label
    (or the label without one leading space). The largest match wins; labels without a match (and
    matches at or below the -9999 sentinel) are left out.
    """
    label_ids = label_ids or {}
    out: dict[str, float] = {}
    for label in labels:
        by_id = label in label_ids
        wanted = {f"token_id:{label_ids[label]}"} if by_id else {label, _strip_marker(label)}
        best: float | None = None
        for token, logprob in candidates:
            hit = token in wanted or (not by_id and _strip_marker(token) in wanted)
            if hit and math.isfinite(logprob) and logprob > _UNLIKELY:
                best = logprob if best is None else max(best, logprob)
        if best is not None:
            out[label] = best
    return out


def _strip_marker(token: str) -> str:
    return token[1:] if token[:1] in _TOKEN_MARKERS else token


def _chat_first_position(logprobs: Any) -> list[tuple[str, float]]:
    """Candidates at the first generated position of a chat answer (sampled token + top-K)."""
    content = (logprobs or {}).get("content") or []
    if not content:
        return []
    first = content[0]
    entries = [first, *(first.get("top_logprobs") or [])]
    return [
        (str(e["token"]), float(e["logprob"]))
        for e in entries
        if e.get("token") is not None and e.get("logprob") is not None
    ]


def _completion_first_position(logprobs: Any) -> list[tuple[str, float]]:
    """Candidates at the first generated position of a completions answer."""
    logprobs = logprobs or {}
    out: list[tuple[str, float]] = []
    tops = logprobs.get("top_logprobs") or []
    if tops and tops[0]:
        out.extend((str(t), float(lp)) for t, lp in tops[0].items() if lp is not None)
    tokens = logprobs.get("tokens") or []
    token_lps = logprobs.get("token_logprobs") or []
    if tokens and token_lps and token_lps[0] is not None:
        out.append((str(tokens[0]), float(token_lps[0])))
    return out


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _server_message(resp: httpx.Response) -> str:
    """The error message of an OpenAI-style error body, else the body text (truncated)."""
    try:
        data = resp.json()
    except ValueError:
        return _truncate(resp.text) or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if err.get(key):
                    return _truncate(str(err[key]))
        elif isinstance(err, str) and err:
            return _truncate(err)
    return _truncate(json.dumps(data))


def create(spec: BackendSpec) -> OpenAIBackend:
    """Factory used by the backend registry."""
    return OpenAIBackend(spec)


__all__ = [
    "OpenAIBackend",
    "OpenAIOptions",
    "SlidingWindowLimiter",
    "create",
    "match_label_logprobs",
]
