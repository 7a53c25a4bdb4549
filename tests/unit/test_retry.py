"""The one retry policy (engine/retry.py): schedule, deadline, Retry-After, classifier, loops.

Nothing here waits: sleeps are recorded and the clock is a counter that the fake sleep advances,
so there are no timing assertions.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from assay.actors.backends.base import BackendSpec
from assay.actors.backends.openai import OpenAIBackend
from assay.actors.host import ModelHost
from assay.engine import io as aio
from assay.engine import retry
from assay.engine.client import Client
from assay.engine.errors import ConfigError, FatalError, RetryableError, StorageError
from assay.engine.requests import GenerationRequest
from assay.engine.retry import RetryPolicy, is_retryable, is_retryable_status, is_transient


class FakeTime:
    """A clock that only the (recorded) sleeps move."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Flaky:
    """A call that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def acall(self) -> str:
        return self()


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


# -- the schedule ----------------------------------------------------------------------------------


def test_backoff_doubles_and_jitter_stays_in_bounds_with_a_seeded_rng() -> None:
    rng = random.Random(1234)
    half = RetryPolicy(base_s=1.0, max_s=math.inf, jitter=0.5)
    full = RetryPolicy(base_s=1.0, max_s=math.inf, jitter=1.0)
    none = RetryPolicy(base_s=1.0, max_s=math.inf, jitter=0.0)
    for n in range(1, 8):
        ceiling = 2.0 ** (n - 1)
        for _ in range(200):
            assert 0.5 * ceiling <= half.backoff(n, rng) <= ceiling
            assert 0.0 <= full.backoff(n, rng) <= ceiling
        assert none.backoff(n, rng) == ceiling
    # the same seed gives the same waits
    a = [half.backoff(n, random.Random(7)) for n in range(1, 6)]
    b = [half.backoff(n, random.Random(7)) for n in range(1, 6)]
    assert a == b
    # full jitter really uses the lower half of the range
    waits = [full.backoff(1, rng) for _ in range(500)]
    assert min(waits) < 0.25 and max(waits) > 0.75


def test_the_cap_bounds_every_wait_and_huge_retry_numbers_stay_finite() -> None:
    p = RetryPolicy(base_s=0.5, max_s=4.0, jitter=0.0)
    assert [p.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert p.backoff(10_000) == 4.0
    uncapped = RetryPolicy(base_s=1.0, max_s=math.inf, jitter=0.0)
    assert math.isfinite(uncapped.backoff(10_000))


def test_zero_base_means_no_waiting() -> None:
    p = RetryPolicy.from_retries(3, 0.0)
    assert [p.backoff(n) for n in range(1, 4)] == [0.0, 0.0, 0.0]


def test_attempts_bound_the_retries() -> None:
    t = FakeTime()
    state = RetryPolicy(attempts=3, base_s=0.1, deadline_s=100).start(clock=t.clock)
    assert state.next_wait() is not None and state.next_wait() is not None
    assert state.next_wait() is None
    assert state.tries == 3 and state.retries == 2


def test_the_deadline_stops_early_and_cuts_the_last_wait() -> None:
    t = FakeTime()
    p = RetryPolicy(attempts=1000, base_s=1.0, max_s=4.0, deadline_s=10.0, jitter=0.0)
    state = p.start(clock=t.clock)
    while (delay := state.next_wait()) is not None:
        t.sleep(delay)
    assert t.sleeps == [1.0, 2.0, 4.0, 3.0]  # 1 + 2 + 4 = 7, then the rest up to 10
    assert state.tries == 5 and t.now == 10.0


def test_from_retries_maps_the_retries_knob() -> None:
    p = RetryPolicy.from_retries(4, 0.25)
    assert (p.attempts, p.base_s, p.max_s, p.deadline_s) == (5, 0.25, math.inf, math.inf)
    assert RetryPolicy.from_retries(0, 1.0).attempts == 1  # no retries at all
    assert RetryPolicy.from_retries(2, 1.0, max_s=3.0).max_s == 3.0


def test_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigError, match="base_s"):
        RetryPolicy(base_s=-1)
    with pytest.raises(ConfigError, match="jitter"):
        RetryPolicy(jitter=1.5)
    with pytest.raises(ConfigError, match="retry_after"):
        RetryPolicy(retry_after="never")  # type: ignore[arg-type]


def test_from_env_reads_the_prefix() -> None:
    env = {"X_ATTEMPTS": "4", "X_BASE_S": "0.1", "X_MAX_S": "2", "X_DEADLINE_S": "9"}
    assert RetryPolicy.from_env(env, prefix="X_") == RetryPolicy(
        attempts=4, base_s=0.1, max_s=2.0, deadline_s=9.0
    )
    assert RetryPolicy.from_env({}) == RetryPolicy()
    with pytest.raises(ConfigError, match="X_ATTEMPTS"):
        RetryPolicy.from_env({"X_ATTEMPTS": "many"}, prefix="X_")


# -- Retry-After -----------------------------------------------------------------------------------


def test_retry_after_is_a_floor_by_default_and_can_replace_the_wait() -> None:
    at_least = RetryPolicy(base_s=1.0, max_s=8.0, jitter=0.0)
    assert at_least.wait(1, retry_after=7.0) == 7.0
    assert at_least.wait(4, retry_after=2.0) == 8.0  # the backoff is longer: kept
    assert at_least.wait(1, retry_after=600.0) == 600.0  # not capped by max_s
    replace = RetryPolicy(
        base_s=1.0, max_s=8.0, jitter=0.0, retry_after="replace", retry_after_max_s=60.0
    )
    assert replace.wait(4, retry_after=2.0) == 2.0
    assert replace.wait(1, retry_after=0.0) == 0.0
    assert replace.wait(1, retry_after=600.0) == 60.0  # capped
    assert replace.wait(3, retry_after=None) == 4.0


def test_retry_after_is_cut_to_the_deadline() -> None:
    t = FakeTime()
    state = RetryPolicy(base_s=0.1, deadline_s=5.0).start(clock=t.clock)
    assert state.next_wait(retry_after=30.0) == 5.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry.parse_retry_after("7") == 7.0
    assert retry.parse_retry_after("1.5") == 1.5
    assert retry.parse_retry_after("-3") == 0.0
    assert retry.parse_retry_after(format_datetime(now + timedelta(seconds=30)), now) == 30.0
    assert retry.parse_retry_after(format_datetime(now - timedelta(seconds=30)), now) == 0.0
    for junk in (None, "", "soon", "inf", "nan"):
        assert retry.parse_retry_after(junk) is None


# -- the classifier --------------------------------------------------------------------------------


def test_classifier_decisions() -> None:
    assert not is_retryable(FatalError("bad model"), default=True)
    assert is_retryable(RetryableError("engine died"))
    assert is_retryable(refused()) and is_retryable(TimeoutError())
    assert not is_retryable(RuntimeError("bug"))
    assert is_retryable(RuntimeError("bug"), default=True)
    assert not is_retryable(FileNotFoundError("gone"), default=False)
    # a definite answer is not transient even when a transient error led to it
    missing = FileNotFoundError("key")
    missing.__context__ = refused()
    assert not is_transient(missing)
    wrapped = RuntimeError("while reading")
    wrapped.__cause__ = refused()
    assert is_transient(wrapped)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, True), (500, True), (502, True), (503, True), (599, True), (400, False), (404, False)],
)
def test_http_statuses(status: int, expected: bool) -> None:
    assert is_retryable_status(status) is expected


def test_a_narrower_status_set() -> None:
    assert not is_retryable_status(500, {429, 502, 503, 504})
    assert is_retryable_status(503, {429, 502, 503, 504})


# -- call and acall --------------------------------------------------------------------------------


def test_call_retries_until_it_succeeds() -> None:
    t = FakeTime()
    fn = Flaky(refused(), RetryableError("later"))
    seen: list[retry.Retry] = []
    policy = RetryPolicy(base_s=1.0, jitter=0.0)
    out = retry.call(fn, policy, before_sleep=seen.append, sleep=t.sleep, clock=t.clock)
    assert out == "ok" and fn.calls == 3
    assert t.sleeps == [1.0, 2.0]
    assert [(r.number, r.delay, type(r.error)) for r in seen] == [
        (1, 1.0, ConnectionRefusedError),
        (2, 2.0, RetryableError),
    ]
    assert seen[1].elapsed == 1.0


def test_call_raises_a_non_retryable_error_at_once() -> None:
    t = FakeTime()
    fn = Flaky(ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        retry.call(fn, RetryPolicy(), sleep=t.sleep, clock=t.clock)
    assert fn.calls == 1 and t.sleeps == []


def test_call_gives_up_with_the_error_give_up_names() -> None:
    t = FakeTime()
    fn = Flaky(*[refused() for _ in range(10)])

    def give_up(exc: BaseException, state: retry.RetryState) -> BaseException:
        return StorageError(f"failed after {state.tries} attempts")

    with pytest.raises(StorageError, match="after 3 attempts") as info:
        retry.call(fn, RetryPolicy(attempts=3), give_up=give_up, sleep=t.sleep, clock=t.clock)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert fn.calls == 3 and len(t.sleeps) == 2
    # without give_up, the last error itself
    with pytest.raises(ConnectionRefusedError):
        retry.call(Flaky(refused(), refused()), RetryPolicy(attempts=2), sleep=t.sleep)


def test_call_honours_an_errors_retry_after() -> None:
    t = FakeTime()
    err = RetryableError("rate limited")
    err.retry_after_s = 9.0  # type: ignore[attr-defined]
    retry.call(Flaky(err), RetryPolicy(base_s=0.1), sleep=t.sleep, clock=t.clock)
    assert t.sleeps == [9.0]


def test_call_stops_at_the_deadline() -> None:
    t = FakeTime()
    fn = Flaky(*[refused() for _ in range(1000)])
    policy = RetryPolicy(attempts=1000, base_s=1.0, max_s=4.0, deadline_s=20.0)
    with pytest.raises(ConnectionRefusedError):
        retry.call(fn, policy, sleep=t.sleep, clock=t.clock)
    assert sum(t.sleeps) == pytest.approx(20.0) and fn.calls == len(t.sleeps) + 1


def test_acall_is_the_async_twin() -> None:
    t = FakeTime()
    fn = Flaky(refused(), refused())
    policy = RetryPolicy(base_s=0.5, jitter=0.0)
    out = asyncio.run(retry.acall(fn.acall, policy, sleep=t.asleep, clock=t.clock))
    assert out == "ok" and t.sleeps == [0.5, 1.0]

    gone = Flaky(FatalError("no"))
    with pytest.raises(FatalError):
        asyncio.run(retry.acall(gone.acall, policy, sleep=t.asleep))
    assert gone.calls == 1


def test_acall_sleeps_with_asyncio_sleep_looked_up_when_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = FakeTime()
    monkeypatch.setattr(retry.asyncio, "sleep", t.asleep)
    fn = Flaky(refused())
    assert asyncio.run(retry.acall(fn.acall, RetryPolicy(base_s=2.0, jitter=0.0))) == "ok"
    assert t.sleeps == [2.0]


# -- the call sites map their knobs onto the one policy --------------------------------------------


def test_storage_policy_is_the_retry_policy() -> None:
    assert aio.RetryPolicy is RetryPolicy
    assert aio.is_transient is is_transient
    p = aio.RetryPolicy()
    assert (p.attempts, p.base_s, p.max_s, p.deadline_s, p.jitter) == (20, 0.5, 8.0, 120.0, 0.5)


def test_client_knobs() -> None:
    with Client("http://127.0.0.1:1", max_retries=2, backoff_s=0.1, max_backoff_s=1.0) as c:
        p = c._p.retry
    assert p == RetryPolicy(attempts=3, base_s=0.1, max_s=1.0, deadline_s=math.inf)
    assert p.retry_after == "at_least" and p.retry_after_max_s == math.inf


def test_openai_backend_knobs() -> None:
    spec = BackendSpec(
        backend="openai",
        model="m",
        options={
            "base_url": "http://127.0.0.1:1/v1",
            "max_retries": 2,
            "backoff_base_s": 0.2,
            "backoff_max_s": 5.0,
            "trust_env": False,
        },
    )
    backend = OpenAIBackend(spec)
    try:
        p = backend._retry_policy
    finally:
        asyncio.run(backend.close())
    assert (p.attempts, p.base_s, p.max_s, p.deadline_s) == (3, 0.2, 5.0, math.inf)
    assert p.retry_after == "replace" and p.retry_after_max_s == 5.0


def test_model_host_retries_with_the_policy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    t = FakeTime()
    monkeypatch.setattr(retry.asyncio, "sleep", t.asleep)
    spec = BackendSpec(backend="fake", model="broken", options={"raise_substring": "boom"})
    host = ModelHost("t", spec, max_retries=2, backoff_s=0.25)
    assert host.retry_policy == RetryPolicy.from_retries(2, 0.25)
    request = GenerationRequest(request_id="r", prompt="boom")
    with (
        caplog.at_level(logging.WARNING, logger="assay.actors.host"),
        pytest.raises(FatalError, match="failed after 3 attempts: RetryableError"),
    ):
        asyncio.run(host.generate([request]))
    assert len(t.sleeps) == 2
    assert 0.125 <= t.sleeps[0] <= 0.25 and 0.25 <= t.sleeps[1] <= 0.5
    assert ["retry 1/2" in m or "retry 2/2" in m for m in caplog.messages] == [True, True]

    no_wait = ModelHost("t", spec, max_retries=1, backoff_s=0.0)
    t.sleeps.clear()
    with pytest.raises(FatalError, match="after 2 attempts"):
        asyncio.run(no_wait.generate([request]))
    assert t.sleeps == [0.0]  # retry_backoff_s: 0 means no waiting
