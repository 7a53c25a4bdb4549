"""What every model actor shares: one backend, bounded in-flight work, retries with backoff.

The actors (:mod:`.generator`, :mod:`.judge`) are plain classes; the executor wraps them with
``ray.remote`` (or calls them in-process), so the same code runs in tests without Ray.
"""

from __future__ import annotations

import asyncio
import logging

from assay.engine import retry
from assay.engine.errors import FatalError
from assay.engine.requests import GenerationRequest, GenerationResult

from .backends.base import BackendSpec, ModelBackend, create_backend

log = logging.getLogger(__name__)


class Gate:
    """A counting gate: at most ``capacity`` requests in flight, acquired in chunks."""

    def __init__(self, capacity: int):
        """A gate of ``capacity`` units."""
        self.capacity = capacity
        self.used = 0
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:  # created lazily inside the running event loop
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self, n: int) -> None:
        """Waits until ``n`` units (at most the capacity) are free and takes them."""
        n = min(n, self.capacity)
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.used + n <= self.capacity)
            self.used += n

    async def release(self, n: int) -> None:
        """Gives ``n`` units back."""
        n = min(n, self.capacity)
        cond = self._condition()
        async with cond:
            self.used -= n
            cond.notify_all()


class ModelHost:
    """One loaded backend behind a gate, with retries of whole-call failures."""

    def __init__(
        self,
        name: str,
        spec: BackendSpec,
        max_in_flight: int = 64,
        max_retries: int = 3,
        backoff_s: float = 1.0,
    ):
        """Loads the backend; a load failure raises FatalError naming the model."""
        self.name = name
        self.spec = spec
        try:
            self.backend: ModelBackend = create_backend(spec)
        except FatalError:
            raise
        except Exception as exc:
            raise FatalError(
                f"{name}: cannot load model {spec.model!r} with backend {spec.backend!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.gate = Gate(max_in_flight)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # retries bound by count alone (no cap, no deadline), as max_retries always meant
        self.retry_policy = retry.RetryPolicy.from_retries(max_retries, backoff_s)
        self.requests_done = 0

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Runs requests through the backend; per-request errors stay data.

        A whole-call failure (an exception from the backend) is retried with exponential backoff
        and jitter; after the last retry it raises FatalError naming the model.
        """
        if not requests:
            return []
        await self.gate.acquire(len(requests))
        try:
            return await self._with_retries(requests)
        finally:
            await self.gate.release(len(requests))

    async def _with_retries(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        async def once() -> list[GenerationResult]:
            results = await self.backend.generate(requests)
            _check_results(requests, results, self.name)
            return results

        def log_retry(r: retry.Retry) -> None:
            log.warning(
                "%s: backend call failed (%s), retry %d/%d in %.1fs",
                self.name,
                type(r.error).__name__,
                r.number,
                self.max_retries,
                r.delay,
            )

        def give_up(exc: BaseException, state: retry.RetryState) -> BaseException:
            return FatalError(
                f"{self.name} ({self.spec.model}): backend call failed after "
                f"{state.tries} attempts: {type(exc).__name__}: {exc}"
            )

        results = await retry.acall(
            once,
            self.retry_policy,
            # everything but a FatalError: a backend's own errors are not classified
            retryable=lambda exc: retry.is_retryable(exc, default=True),
            before_sleep=log_retry,
            give_up=give_up,
        )
        self.requests_done += len(requests)
        return results

    async def close(self) -> None:
        """Releases the backend."""
        await self.backend.close()


def _check_results(
    requests: list[GenerationRequest], results: list[GenerationResult], name: str
) -> None:
    """A backend must answer every request once, in order."""
    if len(results) != len(requests):
        raise FatalError(f"{name}: backend returned {len(results)} results for {len(requests)}")
    for req, res in zip(requests, results, strict=True):
        if req.request_id != res.request_id:
            raise FatalError(
                f"{name}: backend answered {res.request_id!r} where {req.request_id!r} was asked"
            )
