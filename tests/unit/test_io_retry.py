"""Storage retries (engine/io.py) against a fake object store that fails on purpose.

``flaky://`` is an in-memory file system with object-store semantics (no atomic rename, an object
appears only when its upload completes at close) whose operations can be told to fail the next
N times with a given error. Sleeps are recorded, not slept.
"""

from __future__ import annotations

import errno
import io
import logging
import pickle
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import fsspec
import pyarrow as pa
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from assay.engine import io as aio
from assay.engine.errors import StorageError
from assay.engine.io import (
    Location,
    RetryingFileSystem,
    RetryPolicy,
    atomic_open,
    is_transient,
    read_parquet,
    write_bytes_atomic,
    write_parquet_atomic,
)
from assay.engine.runfolder import RunFolder


class FlakyFileSystem(MemoryFileSystem):
    """Memory store with object-store writes and scripted failures per operation."""

    protocol = ("flaky",)
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    failures: dict[str, list[BaseException]] = {}
    calls: dict[str, int] = {}
    # a failure raised *after* the operation took effect (the reply was lost)
    after: dict[str, list[BaseException]] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = path.removeprefix("flaky://")
        return "/" + path.lstrip("/").rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        return "flaky://" + name.lstrip("/")

    @classmethod
    def fail(cls, op: str, *errors: BaseException) -> None:
        cls.failures.setdefault(op, []).extend(errors)

    @classmethod
    def fail_after(cls, op: str, *errors: BaseException) -> None:
        cls.after.setdefault(op, []).extend(errors)

    def _hit(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        pending = self.failures.get(op)
        if pending:
            raise pending.pop(0)

    def _hit_after(self, op: str) -> None:
        pending = self.after.get(op)
        if pending:
            raise pending.pop(0)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self._hit("info")
        return super().info(path, **kwargs)  # type: ignore[no-any-return]

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        self._hit("ls")
        return super().ls(path, detail=detail, **kwargs)

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        self._hit("cat_file")
        return super().cat_file(path, start=start, end=end, **kwargs)

    def rm_file(self, path: str) -> None:
        self._hit("rm_file")
        super().rm_file(path)
        self._hit_after("rm_file")

    def rm(self, path: Any, recursive: bool = False, maxdepth: Any = None) -> None:
        self._hit("rm")
        super().rm(path, recursive=recursive, maxdepth=maxdepth)
        self._hit_after("rm")

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if mode == "rb":
            self._hit("open_read")
            if path not in self.store:
                raise FileNotFoundError(path)
            return FlakyReader(self, path, self.store[path].getvalue())
        if mode == "wb":
            self._hit("open_write")
            return ObjectUpload(self, path)
        raise NotImplementedError(mode)


class FlakyReader(MemoryFile):
    """Reads that can fail (op ``read``) partway through a file."""

    def read(self, size: int | None = -1) -> bytes:
        self.fs._hit("read")
        return super().read(size)


class ObjectUpload(io.BytesIO):
    """A PUT at close: the object appears only if close completes (op ``put`` may fail)."""

    def __init__(self, fs: FlakyFileSystem, path: str) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self.discarded = False

    def write(self, data: Any) -> int:
        self.fs._hit("write")
        return super().write(data)

    def discard(self) -> None:
        self.discarded = True

    def close(self) -> None:
        if self.closed:
            return
        data = self.getvalue()
        super().close()
        if self.discarded:
            return
        self.fs._hit("put")
        f = MemoryFile(self.fs, self.path, data)
        f.modified = datetime.now(tz=timezone.utc)
        self.fs.store[self.path] = f
        self.fs._hit_after("put")


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


@pytest.fixture(autouse=True)
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyFileSystem]]:
    """A clean store, no scripted failures, and sleeps recorded instead of slept."""
    FlakyFileSystem.store.clear()
    FlakyFileSystem.pseudo_dirs[:] = [""]
    FlakyFileSystem.failures.clear()
    FlakyFileSystem.after.clear()
    FlakyFileSystem.calls.clear()
    sleeps: list[float] = []
    now = [0.0]

    def fake_sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    monkeypatch.setattr(aio, "_sleep", fake_sleep)
    monkeypatch.setattr(aio, "_clock", lambda: now[0])
    for var in ("ATTEMPTS", "BASE_S", "MAX_S", "DEADLINE_S"):
        monkeypatch.delenv(f"ASSAY_STORAGE_RETRY_{var}", raising=False)
    FlakyFileSystem.sleeps = sleeps  # type: ignore[attr-defined]
    yield FlakyFileSystem
    aio.set_retry_policy(None)


def sleeps() -> list[float]:
    return FlakyFileSystem.sleeps  # type: ignore[attr-defined, no-any-return]


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def loc(path: str = "bucket/a/file.bin") -> Location:
    return Location.parse(f"flaky://{path}")


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        BrokenPipeError(errno.EPIPE, "pipe"),
        TimeoutError("timed out"),
        OSError(errno.EBUSY, "SlowDown"),  # s3fs: 503 / SlowDown
        OSError(errno.EREMOTEIO, "We encountered an internal error"),  # s3fs: 500
        OSError(errno.ETIMEDOUT, "timed out"),
    ],
)
def test_transient_errors(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("nope"),
        PermissionError("Access Denied"),
        FileExistsError("there"),
        OSError(errno.EINVAL, "InvalidBucketName"),
        ValueError("bad path"),
        KeyError("x"),
        RuntimeError("bug"),
    ],
)
def test_permanent_errors(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_botocore_errors_are_classified() -> None:
    exceptions = pytest.importorskip("botocore.exceptions")
    ep = exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert is_transient(ep)
    assert is_transient(exceptions.ReadTimeoutError(endpoint_url="http://x"))
    assert is_transient(exceptions.ConnectionClosedError(endpoint_url="http://x"))

    def client_error(code: str, status: int) -> Exception:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return exceptions.ClientError(response, "PutObject")  # type: ignore[no-any-return]

    assert is_transient(client_error("SlowDown", 503))
    assert is_transient(client_error("InternalError", 500))
    assert is_transient(client_error("ThrottlingException", 400))
    assert is_transient(client_error("TooManyRequests", 429))
    assert not is_transient(client_error("AccessDenied", 403))
    assert not is_transient(client_error("NoSuchBucket", 404))
    assert not is_transient(client_error("InvalidBucketName", 400))
    # s3fs turns an unknown code into OSError(EIO) caused by the ClientError
    wrapped = OSError(errno.EIO, "weird")
    wrapped.__cause__ = client_error("Weird", 502)
    assert is_transient(wrapped)
    wrapped.__cause__ = client_error("Weird", 400)
    assert not is_transient(wrapped)
    # the s3fs translation of a 404 stays permanent whatever happened before it
    missing = FileNotFoundError("key")
    missing.__context__ = ep
    assert not is_transient(missing)


# -- the policy ------------------------------------------------------------------------------------


def test_policy_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RetryPolicy.from_env({}) == RetryPolicy()
    monkeypatch.setenv("ASSAY_STORAGE_RETRY_DEADLINE_S", "5")
    monkeypatch.setenv("ASSAY_STORAGE_RETRY_ATTEMPTS", "3")
    assert aio.retry_policy() == RetryPolicy(attempts=3, deadline_s=5.0)
    monkeypatch.setenv("ASSAY_STORAGE_RETRY_BASE_S", "soon")
    with pytest.raises(ValueError, match="ASSAY_STORAGE_RETRY_BASE_S"):
        aio.retry_policy()
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


def test_default_policy_rides_out_half_a_minute() -> None:
    p = RetryPolicy()
    # even with the shortest jitter, the retries span well over 30 s before the attempts run out
    assert sum(min(p.max_s, p.base_s * 2**i) * 0.5 for i in range(p.attempts - 1)) > 45
    assert p.deadline_s >= 60


def test_backoff_doubles_up_to_the_cap_and_stops_at_the_deadline(
    flaky: type[FlakyFileSystem],
) -> None:
    aio.set_retry_policy(RetryPolicy(attempts=100, base_s=1.0, max_s=4.0, deadline_s=20.0))
    loc("bucket/x").fs.pipe_file("/bucket/x", b"x")
    flaky.fail("cat_file", *[refused() for _ in range(1000)])
    with pytest.raises(StorageError, match=r"cat_file flaky://bucket/x failed after \d+ attempt"):
        loc("bucket/x").read_bytes()
    waits = sleeps()
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 2.0 <= waits[2] <= 4.0
    assert all(w <= 4.0 for w in waits)
    assert sum(waits) == pytest.approx(20.0)  # the last wait is cut to the deadline
    assert flaky.calls["cat_file"] == len(waits) + 1


def test_attempts_bound_the_retries(flaky: type[FlakyFileSystem]) -> None:
    aio.set_retry_policy(RetryPolicy(attempts=3, base_s=0.1, deadline_s=100))
    flaky.fail("info", *[refused() for _ in range(10)])
    with pytest.raises(StorageError, match="after 3 attempt"):
        loc().exists()
    assert flaky.calls["info"] == 3


# -- reads, listings, existence, deletes -----------------------------------------------------------


def test_reads_are_retried_and_logged_with_the_url(
    flaky: type[FlakyFileSystem], caplog: pytest.LogCaptureFixture
) -> None:
    write_bytes_atomic(loc(), b"secret payload")
    flaky.fail("cat_file", refused(), ConnectionResetError(errno.ECONNRESET, "reset"))
    with caplog.at_level(logging.WARNING, logger="assay.engine.io"):
        assert loc().read_bytes() == b"secret payload"
    assert flaky.calls["cat_file"] == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("flaky://bucket/a/file.bin" in r.getMessage() for r in warnings)
    assert "retry 1/" in warnings[0].getMessage()
    assert not any("secret" in r.getMessage() for r in caplog.records)


def test_exists_retries_instead_of_saying_no(flaky: type[FlakyFileSystem]) -> None:
    write_bytes_atomic(loc(), b"x")
    flaky.fail("info", refused(), TimeoutError("slow"))
    assert loc().exists()
    assert flaky.calls["info"] == 3
    assert not loc("bucket/missing").exists()  # a 404 is an answer: no retry
    assert flaky.calls["info"] == 4 and len(sleeps()) == 2


def test_listing_is_retried(flaky: type[FlakyFileSystem]) -> None:
    write_bytes_atomic(loc("bucket/d/one"), b"1")
    flaky.fail("ls", OSError(errno.EBUSY, "SlowDown"))
    assert [p.rsplit("/", 1)[-1] for p in loc("bucket/d").fs.ls("/bucket/d", detail=False)] == [
        "one"
    ]
    assert flaky.calls["ls"] == 2


def test_permanent_errors_fail_at_once_naming_the_url(flaky: type[FlakyFileSystem]) -> None:
    write_bytes_atomic(loc(), b"x")
    flaky.fail("cat_file", PermissionError("Access Denied"))
    with pytest.raises(PermissionError, match="flaky://bucket/a/file.bin.*Access Denied"):
        loc().read_bytes()
    assert flaky.calls["cat_file"] == 1 and sleeps() == []
    with pytest.raises(FileNotFoundError, match="flaky://bucket/nothing"):
        loc("bucket/nothing").read_bytes()
    assert sleeps() == []


def test_other_refusals_become_storage_errors_naming_the_url(
    flaky: type[FlakyFileSystem],
) -> None:
    # s3fs raises a bare OSError(EINVAL, None) for InvalidBucketName and similar refusals
    flaky.fail("cat_file", OSError(errno.EINVAL, None))
    with pytest.raises(StorageError, match=r"cat_file flaky://bucket/x: .*") as info:
        loc("bucket/x").read_bytes()
    assert isinstance(info.value.__cause__, OSError)
    flaky.fail("ls", ValueError("Bucket create failed 'Bad!'"))
    with pytest.raises(StorageError, match=r"ls flaky://bucket/d: Bucket create failed"):
        loc("bucket/d").fs.ls("/bucket/d")
    assert sleeps() == []


def test_a_delete_whose_reply_was_lost_is_done(flaky: type[FlakyFileSystem]) -> None:
    write_bytes_atomic(loc(), b"x")
    flaky.fail_after("rm", ConnectionResetError(errno.ECONNRESET, "reset"))
    loc().remove()
    assert not loc().exists()
    assert flaky.calls["rm"] == 2  # the retry found the file gone and took that as done


def test_a_stream_read_resumes_where_it_failed(flaky: type[FlakyFileSystem]) -> None:
    table = pa.table({"x": list(range(5000)), "s": [f"row {i}" for i in range(5000)]})
    write_parquet_atomic(loc("bucket/t.parquet"), table)
    calls_before = flaky.calls.get("open_read", 0)
    flaky.fail("read", refused(), refused())
    assert read_parquet(loc("bucket/t.parquet")).equals(table)
    assert flaky.calls["open_read"] >= calls_before + 3  # reopened after each failure
    with loc("bucket/t.parquet").open("rb") as f:
        f.seek(4)
        flaky.fail("read", refused())
        head = f.read(10)
    assert head == loc("bucket/t.parquet").read_bytes()[4:14]


# -- writes ----------------------------------------------------------------------------------------


def test_a_failed_upload_is_redone_whole_from_the_buffer(flaky: type[FlakyFileSystem]) -> None:
    data = bytes(range(256)) * 1000
    flaky.fail("put", refused(), OSError(errno.EBUSY, "SlowDown"))
    with atomic_open(loc()) as f:
        for i in range(0, len(data), 1000):
            f.write(data[i : i + 1000])
        assert not loc().exists()  # nothing is visible before close
    assert loc().read_bytes() == data
    assert flaky.calls["put"] == 3 and flaky.calls["open_write"] == 3
    assert list(flaky.store) == ["/bucket/a/file.bin"]  # one object, no temporaries


def test_an_upload_whose_reply_was_lost_is_written_once(flaky: type[FlakyFileSystem]) -> None:
    flaky.fail_after("put", ConnectionResetError(errno.ECONNRESET, "reset"))
    write_bytes_atomic(loc(), b"payload")
    assert loc().read_bytes() == b"payload" and flaky.calls["put"] == 2
    assert list(flaky.store) == ["/bucket/a/file.bin"]


def test_an_aborted_write_uploads_nothing(flaky: type[FlakyFileSystem]) -> None:
    with pytest.raises(RuntimeError), atomic_open(loc()) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert not loc().exists() and "put" not in flaky.calls and "open_write" not in flaky.calls


def test_an_upload_that_never_succeeds_leaves_nothing(flaky: type[FlakyFileSystem]) -> None:
    aio.set_retry_policy(RetryPolicy(attempts=4, base_s=0.1))
    flaky.fail("put", *[refused() for _ in range(4)])
    with pytest.raises(StorageError, match="write flaky://bucket/a/file.bin failed after 4"):
        write_bytes_atomic(loc(), b"x")
    assert not loc().exists()


def test_a_permanent_upload_error_is_not_retried(flaky: type[FlakyFileSystem]) -> None:
    flaky.fail("put", PermissionError("Access Denied"))
    with pytest.raises(PermissionError, match="flaky://bucket/a/file.bin"):
        write_bytes_atomic(loc(), b"x")
    assert flaky.calls["put"] == 1 and sleeps() == [] and not loc().exists()


def test_commit_writes_the_marker_only_after_the_part(flaky: type[FlakyFileSystem]) -> None:
    folder = RunFolder("flaky://bucket/runs", "r1")
    table = pa.table({"x": [1, 2, 3]})
    # the part's upload fails twice, then succeeds; the marker follows it
    flaky.fail("put", refused(), refused())
    folder.commit("verdicts", 0, table)
    assert folder.is_done("verdicts", 0)
    assert folder.read_stage("verdicts").num_rows == 3
    # a part that cannot be written leaves the shard not done
    aio.set_retry_policy(RetryPolicy(attempts=2, base_s=0.1))
    flaky.fail("put", refused(), refused())
    with pytest.raises(StorageError, match="part-00001.parquet"):
        folder.commit("verdicts", 1, table)
    assert not folder.is_done("verdicts", 1) and not folder.part("verdicts", 1).exists()
    assert folder.done_shards("verdicts") == {0}


# -- what stays as it was --------------------------------------------------------------------------


def test_local_and_memory_are_not_wrapped(tmp_path: Any) -> None:
    assert not isinstance(Location.parse(str(tmp_path)).fs, RetryingFileSystem)
    assert not isinstance(Location.parse("memory://x/y").fs, RetryingFileSystem)
    wrapped = loc().fs
    assert isinstance(wrapped, RetryingFileSystem)
    assert isinstance(loc().join("z").fs, RetryingFileSystem)
    assert not loc().atomic_rename
    # the wrapper pickles (Ray ships locations) and passes other attributes through
    again = pickle.loads(pickle.dumps(wrapped))
    assert isinstance(again, RetryingFileSystem) and again.protocol == ("flaky",)
