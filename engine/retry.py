"""One retry policy for every call that may fail for a while: storage, backends, HTTP services.

A :class:`RetryPolicy` says how often and how long to try again: at most ``attempts`` tries
(the first included), waits that start at ``base_s`` and double per retry up to ``max_s``, a
random part (``jitter``) so many workers do not retry in lockstep, and a ``deadline_s`` after
which no retry starts. A server's ``Retry-After`` is honoured: by default the wait is at least
what the server asked for (``retry_after="at_least"``); ``"replace"`` waits exactly that
instead; either is capped at ``retry_after_max_s``.

Which failures are worth another try is the classifier's half of the policy:

- :func:`is_retryable`: :class:`~.errors.FatalError` never, :class:`~.errors.RetryableError`
  always, a transient error (below) always, anything else as the caller says (``default``).
- :func:`is_transient`: an error that did not get a definite answer: connection refused or
  reset, timeouts, HTTP 5xx and 429, throttling codes of object stores. A definite answer (not
  found, permission denied) is never transient, whatever happened on the way to it.
- :func:`is_retryable_status`: HTTP 429 and 5xx (or a narrower set the caller names).

Two ways to use a policy. :func:`call` and :func:`acall` run a function until it succeeds, a
non-retryable error is raised, or the policy is spent. Call sites whose loop does more (read a
Retry-After from a response, reopen a stream, word their own errors) keep their loop and ask a
:class:`RetryState` (``policy.start()``) for each wait: ``state.next_wait()`` is the wait before
the next try, or None when the policy is spent.

The call sites and how their options map onto the policy:

- storage (:func:`.io.call_with_retry`): the policy itself, ``RetryPolicy()``'s defaults, set
  with ``ASSAY_STORAGE_RETRY_*`` or :func:`.io.set_retry_policy`; retries :func:`is_transient`.
- model actors (``actors/host.py``, ``max_retries`` / ``retry_backoff_s`` of the run configs):
  ``from_retries(max_retries, backoff_s)``, no cap and no deadline; retries every error but a
  :class:`~.errors.FatalError`.
- the OpenAI-compatible backend (``max_retries``, ``backoff_base_s``, ``backoff_max_s``):
  ``from_retries(...)`` with ``max_s`` and ``retry_after_max_s`` both ``backoff_max_s`` and
  ``retry_after="replace"``; retries 429, 5xx and transport errors.
- the judge-service client (:mod:`.client`: ``max_retries``, ``backoff_s``, ``max_backoff_s``):
  ``from_retries(..., max_s=max_backoff_s)``, a Retry-After honoured in full; retries 429, 502,
  503, 504 and transport errors.

Sleeping and the clock are injectable everywhere (and looked up when called, not when defined),
so tests run retry loops without waiting and without timing assertions.

Why not tenacity or stamina: both are well kept, but tenacity reads ``time.monotonic`` directly
(no injectable clock, so a deadline cannot be tested without waiting), and the call sites need
per-try work (a rate limiter, a Retry-After read from a response, a stream reopened, a last
answer returned rather than raised) that would live in callbacks spread over hooks. The ideas
are the same (stop after attempts or a delay, exponential waits with jitter, a retry predicate).
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

from .errors import ConfigError, FatalError, RetryableError

T = TypeVar("T")

Sleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

STORAGE_ENV_PREFIX = "ASSAY_STORAGE_RETRY_"
"""Environment variables that set the storage policy (``..._ATTEMPTS``, ``..._BASE_S``, ...)."""

_random = random.Random()
_MAX_EXPONENT = 62  # 2**62 * any sane base is past every cap; keeps the arithmetic finite


# -- the policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing call is tried again (see the module docstring).

    The wait before retry ``n`` (1-based) is ``min(max_s, base_s * 2**(n-1))`` times a random
    factor in ``[1 - jitter, 1]``; a server's Retry-After then lifts (or replaces) it, capped at
    ``retry_after_max_s``; and no wait runs past ``deadline_s`` from the first try. The defaults
    (20 tries, 0.5 s doubling to 8 s, within 120 s) outlast a service that is away for a minute;
    each call site maps its own options onto these fields.
    """

    attempts: int = 20
    """Tries in all, the first included (1 turns retries off)."""
    base_s: float = 0.5
    """Wait before the first retry, doubling after each (0: retry at once)."""
    max_s: float = 8.0
    """Longest computed wait between two tries (``math.inf``: no cap)."""
    deadline_s: float = 120.0
    """No retry starts later than this many seconds after the first try (``math.inf``: none)."""
    jitter: float = 0.5
    """Random share of each wait: it is drawn from ``[(1 - jitter) * w, w]``; 1.0 is full
    jitter, 0.0 none. 0.5 (the default) keeps every wait at least half the computed one."""
    retry_after: Literal["at_least", "replace"] = "at_least"
    """How a server's Retry-After combines with the computed wait: wait at least that long, or
    wait exactly that long instead."""
    retry_after_max_s: float = math.inf
    """Longest wait a Retry-After may ask for."""

    def __post_init__(self) -> None:
        """Checks the values."""
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be at least 1, not {self.attempts}")
        for name in ("base_s", "max_s", "deadline_s", "retry_after_max_s"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ConfigError(f"retry {name} must not be negative, not {value}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"retry jitter must be between 0 and 1, not {self.jitter}")
        if self.retry_after not in ("at_least", "replace"):
            raise ConfigError(
                f"retry_after must be 'at_least' or 'replace', not {self.retry_after!r}"
            )

    @classmethod
    def from_retries(cls, max_retries: int, base_s: float, **fields: Any) -> RetryPolicy:
        """A policy from the "retries after the first try" knob the call sites expose.

        Without a ``max_s`` or ``deadline_s`` among ``fields`` there is neither a cap nor a
        deadline: ``max_retries`` alone bounds the retries, as those options always meant.
        """
        fields.setdefault("max_s", math.inf)
        fields.setdefault("deadline_s", math.inf)
        return cls(attempts=max_retries + 1, base_s=base_s, **fields)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        prefix: str = STORAGE_ENV_PREFIX,
    ) -> RetryPolicy:
        """The defaults, overridden by ``<prefix>ATTEMPTS``, ``..._BASE_S``, ``..._MAX_S`` and
        ``..._DEADLINE_S`` where set (the storage policy's variables unless ``prefix`` says)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, kind in (
            ("attempts", int),
            ("base_s", float),
            ("max_s", float),
            ("deadline_s", float),
        ):
            raw = env.get(f"{prefix}{name.upper()}")
            if raw:
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise ConfigError(
                        f"{prefix}{name.upper()}={raw!r} is not a valid {kind.__name__}"
                    ) from None
        return cls(**values)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The computed wait before retry number ``retry`` (1-based): exponential, capped, with
        jitter; no Retry-After and no deadline."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(retry - 1, _MAX_EXPONENT))
        if ceiling == 0 or self.jitter == 0:
            return float(ceiling)
        return float(ceiling * (rng or _random).uniform(1.0 - self.jitter, 1.0))

    def wait(
        self,
        retry: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """The wait before retry number ``retry`` (1-based), a server's Retry-After (seconds)
        applied; no deadline (:meth:`RetryState.next_wait` applies it)."""
        computed = self.backoff(retry, rng)
        if retry_after is None:
            return computed
        asked = min(max(0.0, retry_after), self.retry_after_max_s)
        return asked if self.retry_after == "replace" else max(computed, asked)

    def start(
        self,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> RetryState:
        """The bookkeeping of one call under this policy, starting now (its first try)."""
        return RetryState(self, clock or time.monotonic, rng)


@dataclass
class RetryState:
    """One call's progress under a :class:`RetryPolicy`: tries made, time spent, next wait."""

    policy: RetryPolicy
    clock: Clock
    rng: random.Random | None = None
    tries: int = field(default=1, init=False)
    """Tries made so far, the one under way included."""
    started: float = field(default=0.0, init=False)
    """The clock's reading at the first try."""

    def __post_init__(self) -> None:
        """Starts the clock."""
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the first try started."""
        return self.clock() - self.started

    def next_wait(self, retry_after: float | None = None) -> float | None:
        """After a failed try: the wait before the next one, or None when the policy is spent.

        ``retry_after`` is the server's Retry-After in seconds, if it sent one. The wait is cut
        so the next try starts by the deadline. A non-None answer counts the next try.
        """
        left = self.policy.deadline_s - self.elapsed
        if self.tries >= self.policy.attempts or left <= 0:
            return None
        delay = min(self.policy.wait(self.tries, retry_after, self.rng), left)
        self.tries += 1
        return delay

    @property
    def retries(self) -> int:
        """Retries started so far (tries made minus the first)."""
        return self.tries - 1


# -- running a call under a policy -----------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """What :func:`call` and :func:`acall` tell ``before_sleep``: a retry about to wait."""

    number: int
    """The retry's number (1-based); ``policy.attempts - 1`` is the last possible."""
    error: BaseException
    """The failure that is retried."""
    delay: float
    """The wait before the retry, in seconds."""
    elapsed: float
    """Seconds since the first try."""


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BaseException], bool] | None = None,
    before_sleep: Callable[[Retry], None] | None = None,
    give_up: Callable[[BaseException, RetryState], BaseException] | None = None,
    sleep: Sleep | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> T:
    """Calls ``fn`` until it returns, retrying the errors ``retryable`` accepts under ``policy``.

    Args:
        fn: The call; tried once, and again after each retryable error.
        policy: Attempts, waits and deadline.
        retryable: Which errors are retried (default :func:`is_retryable`); others are raised
            at once, unchanged.
        before_sleep: Called before each wait (for a log line).
        give_up: Maps the last retryable error, once the policy is spent, to the error to
            raise (``from`` that error); default: the error itself.
        sleep: Waits (default ``time.sleep``).
        clock: Monotonic seconds (default ``time.monotonic``).
        rng: Jitter's random numbers (default: a module-wide generator).
    """
    retryable = retryable or is_retryable
    state = policy.start(clock=clock, rng=rng)
    while True:
        try:
            return fn()
        except Exception as exc:
            delay = _next(exc, state, retryable, before_sleep, give_up)
        (sleep or time.sleep)(delay)


async def acall(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BaseException], bool] | None = None,
    before_sleep: Callable[[Retry], None] | None = None,
    give_up: Callable[[BaseException, RetryState], BaseException] | None = None,
    sleep: AsyncSleep | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> T:
    """The coroutine version of :func:`call` (``fn`` returns an awaitable; sleeps are
    ``asyncio.sleep`` unless given)."""
    retryable = retryable or is_retryable
    state = policy.start(clock=clock, rng=rng)
    while True:
        try:
            return await fn()
        except Exception as exc:
            delay = _next(exc, state, retryable, before_sleep, give_up)
        await (sleep or asyncio.sleep)(delay)


def _next(
    exc: Exception,
    state: RetryState,
    retryable: Callable[[BaseException], bool],
    before_sleep: Callable[[Retry], None] | None,
    give_up: Callable[[BaseException, RetryState], BaseException] | None,
) -> float:
    """The wait after ``exc``; raises when ``exc`` is not retried or the policy is spent."""
    if not retryable(exc):
        raise exc
    delay = state.next_wait(_retry_after_of(exc))
    if delay is None:
        final = give_up(exc, state) if give_up is not None else exc
        if final is exc:
            raise exc
        raise final from exc
    if before_sleep is not None:
        before_sleep(Retry(state.retries, exc, delay, state.elapsed))
    return delay


def _retry_after_of(exc: BaseException) -> float | None:
    """The Retry-After an error carries (a ``retry_after_s`` attribute), if any."""
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# -- Retry-After -----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if unusable.

    A date in the past is 0; ``now`` (timezone-aware) is for tests.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


# -- which failures are worth another try ----------------------------------------------------------


def is_retryable_status(status: int, statuses: Collection[int] | None = None) -> bool:
    """Whether an HTTP answer is worth retrying: 429 (rate limited) or 5xx (a server or a proxy
    in trouble); or, where ``statuses`` is given, one of those."""
    if statuses is not None:
        return status in statuses
    return status == 429 or status >= 500


def is_retryable(exc: BaseException, *, default: bool = False) -> bool:
    """Whether an error is worth another try.

    :class:`~.errors.FatalError` never is, :class:`~.errors.RetryableError` always is, a
    transient error (:func:`is_transient`) is; anything else is ``default`` (False: only what is
    known to be transient; True: everything not known to be fatal).
    """
    if isinstance(exc, FatalError):
        return False
    if isinstance(exc, RetryableError) or is_transient(exc):
        return True
    return default


# Exception classes (matched by name anywhere in the MRO, so neither botocore nor aiohttp has to be
# importable here) that mean the request did not get a definite answer: try again.
_TRANSIENT_NAMES = frozenset(
    {
        # botocore
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "HTTPClientError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ResponseParserError",
        # aiohttp / fsspec
        "ClientConnectionError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ClientPayloadError",
        "ClientOSError",
        "FSTimeoutError",
        # http.client (a truncated body)
        "IncompleteRead",
        "RemoteDisconnected",
        # asyncio.TimeoutError and concurrent.futures.TimeoutError on Python 3.10
        "TimeoutError",
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EAGAIN,
        errno.EBUSY,  # s3fs: 503 Service Unavailable, SlowDown, 409 OperationAborted
        getattr(errno, "EREMOTEIO", errno.EIO),  # s3fs: 500 InternalError
    }
)
# S3 (and GCS, Azure) error codes that mean "later": throttling and server trouble.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "BandwidthLimitExceeded",
        "OperationAborted",
    }
)
# Errors that are definite answers even when something transient happened on the way to them.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
"""Definite answers: never retried, whatever caused them."""


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes (``__cause__`` or ``__context__``), at most 10 deep."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < 10:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def http_status_of(exc: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status and error code of a botocore-style ClientError (or None, None)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, None
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    code = error.get("Code")
    status = meta.get("HTTPStatusCode")
    if status is None and isinstance(code, str) and code.isdigit():
        status = int(code)
    return (int(status) if isinstance(status, int) else None), (str(code) if code else None)


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away by trying again: no definite answer was received.

    Walks the error and its causes: a definite answer (:data:`PERMANENT_ERRORS`) decides "no";
    a connection error, a timeout, a known transient class name, an HTTP 5xx or 429 (or an
    object store's throttling code) or a network errno decides "yes"; an HTTP answer with any
    other status decides "no".
    """
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    for cur in error_chain(exc):
        if isinstance(cur, PERMANENT_ERRORS):
            return False
        if isinstance(cur, (ConnectionError, TimeoutError)):  # refused, reset, broken pipe
            return True
        if any(k.__name__ in _TRANSIENT_NAMES for k in type(cur).__mro__):
            return True
        status, code = http_status_of(cur)
        if status is not None or code is not None:
            return (status is not None and is_retryable_status(status)) or (
                code in _TRANSIENT_CODES
            )
        if isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNOS:
            return True
    return False


__all__ = [
    "STORAGE_ENV_PREFIX",
    "Retry",
    "RetryPolicy",
    "RetryState",
    "acall",
    "call",
    "error_chain",
    "http_status_of",
    "is_retryable",
    "is_retryable_status",
    "is_transient",
    "parse_retry_after",
]
