"""Python client of the judge service (``assay serve``): typed verdicts over HTTP.

::

    from assay.engine.client import Client

    with Client("http://127.0.0.1:8000", token="...") as client:
        verdicts = client.score([{"prompt": p, "response": r} for p, r in pairs])
        one = client.score_one("How do I pick a lock?", "I can't help with that.")

:class:`AsyncClient` has the same methods as coroutines. Both split a long list into requests of
at most the service's ``max_items_per_request`` (read once from ``/v1/judges``, or given), send
up to ``concurrency`` of them at once and return the verdicts in the input order. A 429 or 503
answer, a dropped connection or a timeout is retried with exponential backoff and jitter,
waiting at least the Retry-After the service sends (seconds or an HTTP date; the policy is a
:class:`~.retry.RetryPolicy`). Errors that retrying does not fix raise at once:
:class:`AuthError` (401/403), :class:`RequestTooLargeError` (413), :class:`ServiceError` (any
other answer). Scoring has no side effects, so a retried request is safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from .errors import AssayError
from .records import Verdict
from .retry import RetryPolicy, RetryState, is_retryable_status, parse_retry_after
from .service import JudgesResponse, Readiness, ScoreItem, ScoreResponse

ItemLike = ScoreItem | Mapping[str, Any]
"""An item to score: a :class:`ScoreItem` or a mapping with its fields."""

RETRY_STATUS = frozenset({429, 502, 503, 504})
"""Answers worth retrying: rate limited, or the service (or a proxy before it) unavailable."""


class ServiceError(AssayError):
    """The service answered with an error that retrying does not fix (or retries ran out)."""

    def __init__(self, message: str, status: int | None = None):
        """A message for the user and the HTTP status, if there was an answer."""
        super().__init__(message)
        self.status = status


class AuthError(ServiceError):
    """401/403: the token is missing, wrong, or not accepted by the service."""


class RequestTooLargeError(ServiceError):
    """413: a request exceeds the service's limits (items, characters or bytes)."""


class _Policy:
    """What both clients share: request building, batching, retry decisions, parsing."""

    def __init__(
        self,
        url: str,
        token: str | None,
        judge: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        batch_size: int | None,
        concurrency: int,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"service URL must start with http:// or https://, got {url!r}")
        if concurrency < 1 or max_retries < 0 or (batch_size is not None and batch_size < 1):
            raise ValueError("concurrency and batch_size must be >= 1, max_retries >= 0")
        self.base = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.judge = judge
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.max_retries = max_retries
        # waits at least the service's Retry-After, however long (max_backoff_s caps the backoff)
        self.retry = RetryPolicy.from_retries(max_retries, backoff_s, max_s=max_backoff_s)
        self.batch_size = batch_size
        self.concurrency = concurrency

    def wait(self, state: RetryState, response: httpx.Response | None) -> float | None:
        """The wait before the next try after a retryable failure (``response`` None: a
        transport error), at least the service's Retry-After; None when retries ran out."""
        retry_after = None if response is None else response.headers.get("Retry-After")
        return state.next_wait(parse_retry_after(retry_after))

    def retried(self, response: httpx.Response) -> bool:
        """Whether an answer is worth another try (429, 502, 503, 504)."""
        return is_retryable_status(response.status_code, RETRY_STATUS)

    def gave_up(self, method: str, path: str, exc: Exception, state: RetryState) -> ServiceError:
        """The error of a transport failure that outlasted the retries."""
        return ServiceError(
            f"{method} {self.base}{path}: {type(exc).__name__}: {exc} "
            f"(after {state.tries} attempts)"
        )

    def chunks(self, items: Sequence[ItemLike], size: int) -> list[list[dict[str, Any]]]:
        bodies = [
            it.model_dump(exclude_none=True)
            if isinstance(it, ScoreItem)
            else ScoreItem.model_validate(it).model_dump(exclude_none=True)
            for it in items
        ]
        return [bodies[i : i + size] for i in range(0, len(bodies), size)]

    def score_body(self, chunk: list[dict[str, Any]], judge: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"items": chunk}
        if judge or self.judge:
            body["judge"] = judge or self.judge
        return body

    def check(self, response: httpx.Response) -> None:
        """Raises the error an answer stands for (after retries, for retryable ones)."""
        if response.is_success:
            return
        detail = _detail(response)
        status = response.status_code
        where = f"{response.request.method} {response.request.url.path}"
        if status in (401, 403):
            raise AuthError(
                f"{where}: {status} {detail} (pass the service's token: Client(url, token=...) "
                "or --token-env)",
                status,
            )
        if status == 413:
            raise RequestTooLargeError(f"{where}: 413 {detail}", status)
        if status in RETRY_STATUS:
            raise ServiceError(
                f"{where}: {status} {detail} (still failing after {self.max_retries} retries)",
                status,
            )
        raise ServiceError(f"{where}: {status} {detail}", status)

    def verdicts(self, response: httpx.Response, sent: int) -> list[Verdict]:
        try:
            parsed = ScoreResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServiceError(f"the service sent a malformed score response: {exc}") from None
        if len(parsed.verdicts) != sent:
            raise ServiceError(f"sent {sent} items, got {len(parsed.verdicts)} verdicts back")
        return parsed.verdicts

    def judges(self, response: httpx.Response) -> JudgesResponse:
        self.check(response)
        return JudgesResponse.model_validate_json(response.content)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:200]


_TRANSPORT_ERRORS = (httpx.TransportError,)
"""Connection refused or reset, timeouts, protocol errors: retried."""


class Client:
    """Synchronous client of a judge service."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        judge: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        batch_size: int | None = None,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
    ):
        """A client of the service at ``url`` (``http://host:port``).

        Args:
            url: The service's base URL.
            token: Bearer token (None for a service with ``auth: none``).
            judge: Judge of requests that name none (default: the service's default judge).
            timeout_s: Per-request timeout (connect at most 10 s).
            max_retries: Retries of a request after a 429/502/503/504 or a transport error.
            backoff_s: First retry delay; doubles per retry, with jitter.
            max_backoff_s: Cap of the backoff (a longer Retry-After is still honoured).
            batch_size: Items per request (default: the service's max_items_per_request).
            concurrency: Requests in flight at once when a list is split.
            transport: An httpx transport (tests: ``httpx.MockTransport``).
        """
        self._p = _Policy(
            url,
            token,
            judge,
            timeout_s,
            max_retries,
            backoff_s,
            max_backoff_s,
            batch_size,
            concurrency,
        )
        self._http = httpx.Client(
            base_url=self._p.base,
            headers=self._p.headers,
            timeout=self._p.timeout,
            transport=transport,
        )
        self._lock = threading.Lock()

    def _send(self, method: str, path: str, json: Any = None) -> httpx.Response:
        state = self._p.retry.start()
        while True:
            try:
                response = self._http.request(method, path, json=json)
            except _TRANSPORT_ERRORS as exc:
                delay = self._p.wait(state, None)
                if delay is None:
                    raise self._p.gave_up(method, path, exc, state) from exc
            else:
                if not self._p.retried(response):
                    return response
                delay = self._p.wait(state, response)
                if delay is None:
                    return response
            time.sleep(delay)

    def _batch_size(self) -> int:
        with self._lock:
            if self._p.batch_size is None:
                self._p.batch_size = self.judges().limits.max_items_per_request
            return self._p.batch_size

    def score(self, items: Sequence[ItemLike], judge: str | None = None) -> list[Verdict]:
        """One verdict per item, in order (split into requests as needed)."""
        if not items:
            return []
        chunks = self._p.chunks(items, self._batch_size())

        def one(chunk: list[dict[str, Any]]) -> list[Verdict]:
            response = self._send("POST", "/v1/score", self._p.score_body(chunk, judge))
            self._p.check(response)
            return self._p.verdicts(response, len(chunk))

        if len(chunks) == 1 or self._p.concurrency == 1:
            parts: Iterator[list[Verdict]] = map(one, chunks)
            return [v for part in parts for v in part]
        with ThreadPoolExecutor(min(self._p.concurrency, len(chunks))) as pool:
            return [v for part in pool.map(one, chunks) for v in part]

    def score_one(
        self, prompt: str, response: str | None = None, lang: str = "en", judge: str | None = None
    ) -> Verdict:
        """The verdict on one item."""
        return self.score([ScoreItem(prompt=prompt, response=response, lang=lang)], judge)[0]

    def judges(self) -> JudgesResponse:
        """The served judges, their taxonomies and the request limits."""
        return self._p.judges(self._send("GET", "/v1/judges"))

    def health(self) -> bool:
        """Whether the service answers (one attempt, no retries)."""
        try:
            return self._http.get("/v1/health").is_success
        except httpx.TransportError:
            return False

    def ready(self) -> Readiness:
        """Whether every judge has a replica ready (one attempt)."""
        response = self._http.get("/v1/ready")
        if response.status_code not in (200, 503):
            self._p.check(response)
        return Readiness.model_validate_json(response.content)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        """The client itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Closes the client."""
        self.close()


class AsyncClient:
    """Asynchronous client of a judge service (the same arguments as :class:`Client`)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        judge: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        batch_size: int | None = None,
        concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        """See :class:`Client`."""
        self._p = _Policy(
            url,
            token,
            judge,
            timeout_s,
            max_retries,
            backoff_s,
            max_backoff_s,
            batch_size,
            concurrency,
        )
        self._http = httpx.AsyncClient(
            base_url=self._p.base,
            headers=self._p.headers,
            timeout=self._p.timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max(concurrency, 10)),
        )
        self._lock = asyncio.Lock()

    async def _send(self, method: str, path: str, json: Any = None) -> httpx.Response:
        state = self._p.retry.start()
        while True:
            try:
                response = await self._http.request(method, path, json=json)
            except _TRANSPORT_ERRORS as exc:
                delay = self._p.wait(state, None)
                if delay is None:
                    raise self._p.gave_up(method, path, exc, state) from exc
            else:
                if not self._p.retried(response):
                    return response
                delay = self._p.wait(state, response)
                if delay is None:
                    return response
            await asyncio.sleep(delay)

    async def _batch_size(self) -> int:
        async with self._lock:
            if self._p.batch_size is None:
                self._p.batch_size = (await self.judges()).limits.max_items_per_request
            return self._p.batch_size

    async def score(self, items: Sequence[ItemLike], judge: str | None = None) -> list[Verdict]:
        """One verdict per item, in order (split into requests as needed)."""
        if not items:
            return []
        chunks = self._p.chunks(items, await self._batch_size())
        gate = asyncio.Semaphore(self._p.concurrency)

        async def one(chunk: list[dict[str, Any]]) -> list[Verdict]:
            async with gate:
                response = await self._send("POST", "/v1/score", self._p.score_body(chunk, judge))
            self._p.check(response)
            return self._p.verdicts(response, len(chunk))

        parts = await asyncio.gather(*(one(c) for c in chunks))
        return [v for part in parts for v in part]

    async def score_one(
        self, prompt: str, response: str | None = None, lang: str = "en", judge: str | None = None
    ) -> Verdict:
        """The verdict on one item."""
        items = [ScoreItem(prompt=prompt, response=response, lang=lang)]
        return (await self.score(items, judge))[0]

    async def judges(self) -> JudgesResponse:
        """The served judges, their taxonomies and the request limits."""
        return self._p.judges(await self._send("GET", "/v1/judges"))

    async def health(self) -> bool:
        """Whether the service answers (one attempt, no retries)."""
        try:
            return (await self._http.get("/v1/health")).is_success
        except httpx.TransportError:
            return False

    async def ready(self) -> Readiness:
        """Whether every judge has a replica ready (one attempt)."""
        response = await self._http.get("/v1/ready")
        if response.status_code not in (200, 503):
            self._p.check(response)
        return Readiness.model_validate_json(response.content)

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        """The client itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Closes the client."""
        await self.aclose()


__all__ = [
    "AsyncClient",
    "AuthError",
    "Client",
    "ItemLike",
    "RequestTooLargeError",
    "ServiceError",
]
