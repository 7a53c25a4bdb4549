"""Shard leases: several drivers share one run folder, each shard run by one of them at a time.

A driver that starts a shard first takes the shard's lease, one small object
``<run>/_leases/<shard>`` naming the driver (host, pid, a random token, when it started), the
lease's time to live and when the holder last renewed it. While the shard is in flight a heartbeat
renews the lease; when the shard is committed the lease is deleted. A lease whose holder stopped
renewing it for longer than its TTL (the driver was SIGKILLed, its machine died) has expired and
any driver may take it over; so may a driver on the same machine (same kernel boot and pid
namespace) that sees the holder's process is gone (:meth:`DriverInfo.gone`), so a killed run
resumed where it ran does not wait for the TTL. So two ``assay run`` on the same output split
the shards between them, and a driver that finds shards leased by a live other driver waits for
them at the end: they are either committed by the other driver or their lease expires and this
driver runs them.

Cost per shard: one small conditional write to take the lease (a free shard is created without
reading first) and one delete to release it; the run driver adds one HEAD of the shard's marker
after taking the lease. A renewal is one conditional write per shard in flight per heartbeat (a
driver has at most ``max_shards_in_flight`` shards in flight, so a run of thousands of shards
renews only a few). Measured on radosgw, 44 shards of 4 rows: 2.05 lease requests per shard
(44 PUT, 44 DELETE, 2 listings), beside ~22 other storage requests per shard.

**What is atomic, where.**

- Local folders: every create, renewal, takeover and delete runs under an exclusive ``flock`` of
  ``_leases/.lock`` (the kernel drops it when its process dies, even by SIGKILL) and replaces
  the lease file atomically, so exactly one driver wins any race between processes of one
  machine (and across machines on a network file system whose ``flock`` works across clients).
- ``memory://`` (one process): every operation holds a process-wide lock, so it is exact.
- S3: conditional PutObject, ``If-None-Match: *`` to create and ``If-Match: <etag>`` to renew or
  take over, so the store decides and exactly one writer wins. Measured on this repository's
  radosgw (Ceph 16.2.15): both are honoured (412 PreconditionFailed otherwise); of 20 concurrent
  creates of one key exactly one succeeds; ``If-Match`` matches only when the ETag is sent
  without its quotes. :class:`_S3Store` sends the quoted ETag first (as HTTP specifies) and,
  when a server refuses its own current ETag so, the bare one, and remembers that per endpoint.
  ``DeleteObject`` ignores ``If-Match`` there, so a release checks the lease first (see
  :meth:`ShardLeases.release`). Whether a server honours conditional writes is probed once per
  driver; one that ignores them gets the read-back protocol.
- Other object stores, or S3 servers without conditional writes (the read-back protocol,
  :class:`_ReadBackStore`): check the lease, write it, wait ``settle_s``, read it back; the driver
  holds the lease if it reads back its own content. Two drivers whose writes land within the
  settle delay of each other both read back the later one, so one backs off. A write delayed by
  more than the settle delay (a stalled client) can leave both believing they hold it. Each
  acquisition there waits the settle delay (1 s by default) before its shard starts.

**Why a lost race never costs a result.** Leases only keep drivers from doing the same work. The
run folder is exactly-once by construction: a shard's part has one fixed name and is written
whole (rename or one PUT), and a shard's rows are the same whoever computes them, so a shard
committed twice leaves one part with each (test, target, judge) once (the last write wins). A
driver also re-checks a shard's completion marker after taking its lease, so a shard committed by
another driver is not run again. Expiry compares the holder's wall clock (``renewed_at``) with
the reader's, so drivers' clocks must agree to well within the TTL (NTP does); a holder stalled for
longer than its TTL may see its shard taken over and run twice, which again costs time, not rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, StorageError
from .io import Location, call_with_retry

log = logging.getLogger(__name__)

LEASES = "_leases"
"""Folder of a run's shard leases, beside ``_done``."""

LeaseMode = Literal["auto", "exclusive", "read-back"]

_NAME_RE = re.compile(r"\d{5,}")


class DriverInfo(BaseModel):
    """Who holds a lease: one execution of ``assay run`` (one driver process)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(description="Host name of the driver's machine.")
    pid: int = Field(description="Process id of the driver.")
    token: str = Field(description="Random id of this execution (pids are reused).")
    started_at: float = Field(description="When the driver started (Unix time, its clock).")
    space: str | None = Field(
        default=None,
        description="Where its pid means something: the kernel's boot id and the pid namespace "
        "(Linux); None elsewhere. A driver in the same space can tell whether it is alive.",
    )

    @classmethod
    def new(cls) -> DriverInfo:
        """The identity of a driver starting now in this process."""
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            token=secrets.token_hex(8),
            started_at=time.time(),
            space=_process_space(),
        )

    def gone(self) -> bool:
        """Whether this driver's process is known to be dead (False when it cannot be told).

        Only for a driver in this process's space (same kernel boot, same pid namespace): its
        pid is gone, a zombie, or now another process that started after the driver did.
        """
        if self.space is None or self.space != _process_space() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        started, zombie = _process_start(self.pid)
        return zombie or (started is not None and started > self.started_at + 1.0)

    @property
    def label(self) -> str:
        """``host:pid``, for messages."""
        return f"{self.host}:{self.pid}"


def _process_space() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _process_start(pid: int) -> tuple[float | None, bool]:
    """(Unix time a process started, whether it is a zombie), from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None, False
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
    ticks = os.sysconf("SC_CLK_TCK")
    return btime + int(fields[19]) / ticks, fields[0] == "Z"


class LeaseInfo(BaseModel):
    """The content of one shard's lease object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_id: int = Field(ge=0, description="The leased shard.")
    holder: DriverInfo = Field(description="The driver running the shard.")
    ttl_s: float = Field(gt=0, description="The lease expires this long after its renewal.")
    acquired_at: float = Field(description="When the holder took the lease (Unix time).")
    renewed_at: float = Field(description="When the holder last renewed it (Unix time).")
    seq: int = Field(default=0, ge=0, description="Renewals so far (makes every write unique).")

    def age(self, now: float) -> float:
        """Seconds since the last renewal, by the reader's clock (never negative)."""
        return max(now - self.renewed_at, 0.0)

    def expired(self, now: float) -> bool:
        """Whether the holder stopped renewing it for longer than its TTL."""
        return now - self.renewed_at > self.ttl_s

    def encode(self) -> bytes:
        """The bytes stored."""
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`ShardLeases.acquire`."""

    shard_id: int
    won: bool
    """Whether this driver now holds the lease."""
    holder: LeaseInfo | None
    """The lease in force: this driver's if ``won``, else the live other driver's (None if the
    lease changed hands so often that no holder could be read)."""
    took_over: LeaseInfo | None = None
    """The expired lease this driver replaced, if any."""


# -- stores: create / compare-and-swap / delete of small objects -----------------------------------


@dataclass(frozen=True)
class _Version:
    data: bytes
    tag: str
    """What a compare-and-swap compares: an ETag, or a digest of the content."""


class _Store(Protocol):
    url: str

    def read(self, name: str) -> _Version | None: ...

    def create(self, name: str, data: bytes) -> _Version | None: ...

    def replace(self, name: str, data: bytes, expected: _Version) -> _Version | None: ...

    def delete(self, name: str) -> None: ...

    def names(self) -> list[str]: ...


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _LocalStore:
    """A local folder: every change under an exclusive ``flock`` of ``_leases/.lock``.

    ``flock`` locks are released by the kernel when their process dies (even by SIGKILL), so a
    dead driver never leaves the folder locked. Lease files are replaced atomically (a whole
    temporary file renamed over the lease), so a reader never sees half of one.
    """

    def __init__(self, loc: Location) -> None:
        self.url = loc.url
        self.root = loc.path
        os.makedirs(self.root, exist_ok=True)
        self._lock_path = os.path.join(self.root, ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        with open(self._lock_path, "ab") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _read(self, name: str) -> _Version | None:
        try:
            with open(self._path(name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return _Version(data, _digest(data))

    def _write(self, name: str, data: bytes) -> _Version:
        tmp = self._path(f".tmp-{name}-{uuid.uuid4().hex[:12]}")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
            os.replace(tmp, self._path(name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return _Version(data, _digest(data))

    def read(self, name: str) -> _Version | None:
        return self._read(name)

    def create(self, name: str, data: bytes) -> _Version | None:
        with self._locked():
            if self._read(name) is not None:
                return None
            return self._write(name, data)

    def replace(self, name: str, data: bytes, expected: _Version) -> _Version | None:
        with self._locked():
            cur = self._read(name)
            if cur is None or cur.tag != expected.tag:
                return None
            return self._write(name, data)

    def delete(self, name: str) -> None:
        with self._locked(), contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if _NAME_RE.fullmatch(n))
        except FileNotFoundError:
            return []


_MEMORY_LOCK = threading.Lock()


class _MemoryStore:
    """``memory://`` (one process, shared by its threads): each operation under one lock."""

    def __init__(self, loc: Location) -> None:
        self.url = loc.url
        self.fs = loc.fs
        self.root = loc.path

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def _read(self, name: str) -> _Version | None:
        try:
            data = bytes(self.fs.cat_file(self._path(name)))
        except FileNotFoundError:
            return None
        return _Version(data, _digest(data))

    def read(self, name: str) -> _Version | None:
        with _MEMORY_LOCK:
            return self._read(name)

    def create(self, name: str, data: bytes) -> _Version | None:
        with _MEMORY_LOCK:
            if self._read(name) is not None:
                return None
            self.fs.pipe_file(self._path(name), data)
            return _Version(data, _digest(data))

    def replace(self, name: str, data: bytes, expected: _Version) -> _Version | None:
        with _MEMORY_LOCK:
            cur = self._read(name)
            if cur is None or cur.tag != expected.tag:
                return None
            self.fs.pipe_file(self._path(name), data)
            return _Version(data, _digest(data))

    def delete(self, name: str) -> None:
        with _MEMORY_LOCK, contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def names(self) -> list[str]:
        with _MEMORY_LOCK:
            try:
                paths = self.fs.ls(self.root, detail=False)
            except FileNotFoundError:
                return []
        return sorted(n for n in (posixpath.basename(p) for p in paths) if _NAME_RE.fullmatch(n))


def _s3_code(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and S3 error code of an error raised by s3fs (the ClientError is its cause)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            code = (response.get("Error") or {}).get("Code")
            return (status if isinstance(status, int) else None), (str(code) if code else None)
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None, None


def _lost_race(exc: BaseException) -> bool:
    """412 (the condition failed) or 409 (AWS: a concurrent conditional write won)."""
    status, code = _s3_code(exc)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


_UNQUOTED_IF_MATCH: dict[str, bool] = {}
"""Per endpoint: whether If-Match must carry the bare ETag (radosgw) rather than the quoted one."""


class _S3Store:
    """S3 with conditional writes: the server decides every race (see the module docstring)."""

    def __init__(self, loc: Location) -> None:
        self.url = loc.url
        fs = getattr(loc.fs, "wrapped", loc.fs)
        self.s3 = fs
        bucket, key, _ = fs.split_path(loc.path)
        self.bucket = bucket
        self.prefix = key.rstrip("/") + "/"
        client_kwargs = getattr(fs, "client_kwargs", None) or {}
        self.endpoint = str(
            getattr(fs, "endpoint_url", None) or client_kwargs.get("endpoint_url") or "aws"
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _call(self, op: str, name: str, **kwargs: Any) -> Any:
        return call_with_retry(
            lambda: self.s3.call_s3(op, Bucket=self.bucket, Key=self._key(name), **kwargs),
            f"lease {op}",
            f"{self.url}/{name}",
        )

    def read(self, name: str) -> _Version | None:
        from fsspec.asyn import sync

        async def get() -> _Version | None:
            try:
                out = await self.s3._call_s3("get_object", Bucket=self.bucket, Key=self._key(name))
            except FileNotFoundError:
                return None
            async with out["Body"] as body:
                data: bytes = await body.read()
            return _Version(data, str(out["ETag"]).strip('"'))

        version: _Version | None = call_with_retry(
            lambda: sync(self.s3.loop, get), "lease read", f"{self.url}/{name}"
        )
        return version

    def _put(self, name: str, data: bytes, **condition: str) -> _Version | None:
        tries = [0]

        def put() -> _Version | None:
            tries[0] += 1
            try:
                out = self.s3.call_s3(
                    "put_object", Bucket=self.bucket, Key=self._key(name), Body=data, **condition
                )
            except OSError as exc:
                if not _lost_race(exc):
                    raise
                if tries[0] > 1:  # an earlier try may have landed and lost only its reply
                    cur = self.read(name)
                    if cur is not None and cur.data == data:
                        return cur
                return None
            return _Version(data, str(out["ETag"]).strip('"'))

        return call_with_retry(put, "lease write", f"{self.url}/{name}")

    def create(self, name: str, data: bytes) -> _Version | None:
        return self._put(name, data, IfNoneMatch="*")

    def replace(self, name: str, data: bytes, expected: _Version) -> _Version | None:
        unquoted = _UNQUOTED_IF_MATCH.get(self.endpoint, False)
        tag = expected.tag if unquoted else f'"{expected.tag}"'
        out = self._put(name, data, IfMatch=tag)
        if out is None and not unquoted:
            cur = self.read(name)
            if cur is not None and cur.tag == expected.tag:
                # the server refused its own current ETag in quotes: it wants it bare (radosgw)
                _UNQUOTED_IF_MATCH[self.endpoint] = True
                out = self._put(name, data, IfMatch=expected.tag)
        return out

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete_object", name)

    def names(self) -> list[str]:
        out: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = call_with_retry(
                lambda extra=extra: self.s3.call_s3(  # type: ignore[misc]
                    "list_objects_v2", Bucket=self.bucket, Prefix=self.prefix, **extra
                ),
                "lease list",
                self.url,
            )
            for obj in page.get("Contents", []):
                name = str(obj["Key"])[len(self.prefix) :]
                if _NAME_RE.fullmatch(name):
                    out.append(name)
            if not page.get("IsTruncated"):
                return sorted(out)
            token = page.get("NextContinuationToken")


class _ReadBackStore:
    """Any file system: write, wait ``settle_s``, read back (see the module docstring)."""

    def __init__(self, loc: Location, settle_s: float, sleep: Callable[[float], None]) -> None:
        self.url = loc.url
        self.loc = loc
        loc.makedirs()  # a no-op on object stores
        self.settle_s = settle_s
        self.sleep = sleep

    def read(self, name: str) -> _Version | None:
        loc = self.loc.join(name)
        try:
            data = bytes(loc.read_bytes())
        except FileNotFoundError:
            return None
        return _Version(data, _digest(data))

    def _write_and_check(self, name: str, data: bytes) -> _Version | None:
        self.loc.fs.pipe_file(self.loc.join(name).path, data)
        self.sleep(self.settle_s)
        cur = self.read(name)
        return cur if cur is not None and cur.data == data else None

    def create(self, name: str, data: bytes) -> _Version | None:
        if self.read(name) is not None:
            return None
        return self._write_and_check(name, data)

    def replace(self, name: str, data: bytes, expected: _Version) -> _Version | None:
        cur = self.read(name)
        if cur is None or cur.tag != expected.tag:
            return None
        return self._write_and_check(name, data)

    def delete(self, name: str) -> None:
        loc = self.loc.join(name)
        with contextlib.suppress(FileNotFoundError):
            loc.fs.rm_file(loc.path)

    def names(self) -> list[str]:
        fs = self.loc.fs
        invalidate = getattr(fs, "invalidate_cache", None)
        if callable(invalidate):
            invalidate(self.loc.path)  # another driver's leases are not in a cached listing
        try:
            paths = fs.ls(self.loc.path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            n for n in (posixpath.basename(p.rstrip("/")) for p in paths) if _NAME_RE.fullmatch(n)
        )


_CONDITIONAL_OK: dict[str, bool] = {}


def _s3_conditional_writes(store: _S3Store) -> bool:
    """Whether the server refuses a second ``If-None-Match: *`` create (probed per endpoint)."""
    known = _CONDITIONAL_OK.get(store.endpoint)
    if known is not None:
        return known
    name = f".probe-{secrets.token_hex(6)}"
    try:
        first = store.create(name, b"1")
        second = store.create(name, b"2")
        ok = first is not None and second is None
    except (OSError, StorageError) as exc:
        status, code = _s3_code(exc)
        if status in (400, 501) or code in ("NotImplemented", "InvalidArgument"):
            ok = False
        else:
            raise
    finally:
        with contextlib.suppress(OSError, StorageError):
            store.delete(name)
    if not ok:
        log.warning(
            "the object store at %s ignores conditional writes (If-None-Match); shard leases "
            "use the write/read-back protocol",
            store.url,
        )
    _CONDITIONAL_OK[store.endpoint] = ok
    return ok


def _open_store(
    loc: Location, mode: LeaseMode, settle_s: float, sleep: Callable[[float], None]
) -> _Store:
    if mode == "read-back":
        return _ReadBackStore(loc, settle_s, sleep)
    protocols = loc.fs.protocol if isinstance(loc.fs.protocol, tuple) else (loc.fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return _LocalStore(loc)
    if "memory" in protocols:
        return _MemoryStore(loc)
    if "s3" in protocols or "s3a" in protocols:
        store = _S3Store(loc)
        if _s3_conditional_writes(store):
            return store
        if mode == "exclusive":
            raise ConfigError(f"the object store at {loc.url} does not honour conditional writes")
        return _ReadBackStore(loc, settle_s, sleep)
    if mode == "exclusive":
        raise ConfigError(f"no exclusive create for {loc.url} (protocols {protocols})")
    return _ReadBackStore(loc, settle_s, sleep)


# -- the leases of one run -------------------------------------------------------------------------


@dataclass
class _Held:
    info: LeaseInfo
    version: _Version


@dataclass
class ShardLeases:
    """This driver's view of a run folder's shard leases (see the module docstring).

    Thread-safe: the run driver calls it from worker threads (``asyncio.to_thread``).
    """

    store: _Store
    ttl_s: float
    driver: DriverInfo = field(default_factory=DriverInfo.new)
    clock: Callable[[], float] = time.time
    check_pids: bool = field(
        default_factory=lambda: os.environ.get("ASSAY_LEASE_PID_CHECK", "1") != "0"
    )
    """Whether a holder on this machine whose process is gone counts as dead before its TTL."""
    _held: dict[int, _Held] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def open(
        cls,
        run_folder: Location,
        ttl_s: float,
        *,
        driver: DriverInfo | None = None,
        mode: LeaseMode = "auto",
        settle_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        check_pids: bool | None = None,
    ) -> ShardLeases:
        """The leases under ``<run_folder>/_leases``.

        ``mode``: ``auto`` picks the exact mechanism of the file system (falling back to the
        read-back protocol where there is none), ``exclusive`` refuses to run without one,
        ``read-back`` forces the read-back protocol (with ``settle_s``). ``check_pids`` None:
        on unless ``ASSAY_LEASE_PID_CHECK=0`` (see :meth:`live`).
        """
        if ttl_s <= 0:
            raise ConfigError(f"lease TTL must be positive, got {ttl_s}")
        store = _open_store(run_folder.join(LEASES), mode, settle_s, sleep)
        leases = cls(store=store, ttl_s=ttl_s, driver=driver or DriverInfo.new(), clock=clock)
        if check_pids is not None:
            leases.check_pids = check_pids
        return leases

    @staticmethod
    def name(shard_id: int) -> str:
        """The lease object's name of a shard."""
        return f"{shard_id:05d}"

    @property
    def held(self) -> set[int]:
        """Shards this driver holds the lease of."""
        with self._lock:
            return set(self._held)

    def _parse(self, shard_id: int, version: _Version) -> LeaseInfo | None:
        try:
            info = LeaseInfo.model_validate_json(version.data)
        except ValidationError:
            log.warning(
                "unreadable lease %s/%s: treated as expired", self.store.url, self.name(shard_id)
            )
            return None
        return info

    def live(self, info: LeaseInfo, now: float) -> bool:
        """Whether a lease is in force: not expired, and its holder not known to be dead.

        A holder on this machine (same kernel and pid namespace) whose process is gone is dead
        at once, so a driver killed on a laptop is resumed without waiting for the TTL (unless
        ``check_pids`` is off: ``ASSAY_LEASE_PID_CHECK=0``).
        """
        if info.expired(now):
            return False
        if info.holder.token == self.driver.token:
            return True
        return not (self.check_pids and info.holder.gone())

    def acquire(self, shard_id: int) -> Claim:
        """Takes the shard's lease if it is free or expired; else says who holds it."""
        name = self.name(shard_id)
        holder: LeaseInfo | None = None
        for _ in range(5):  # each retry means another driver changed the lease meanwhile
            now = self.clock()
            mine = LeaseInfo(
                shard_id=shard_id,
                holder=self.driver,
                ttl_s=self.ttl_s,
                acquired_at=now,
                renewed_at=now,
            )
            # Create first: a free shard (the common case) then costs one write, no read.
            version = self.store.create(name, mine.encode())
            if version is not None:
                return self._won(mine, version, None)
            cur = self.store.read(name)
            if cur is None:
                continue  # released meanwhile
            holder = self._parse(shard_id, cur)
            if holder is not None and holder.holder.token == self.driver.token:
                with self._lock:
                    self._held[shard_id] = _Held(holder, cur)
                return Claim(shard_id, True, holder)
            if holder is not None and self.live(holder, now):
                return Claim(shard_id, False, holder)
            version = self.store.replace(name, mine.encode(), cur)
            if version is not None:
                if holder is not None:
                    why = (
                        f"lease expired {holder.age(now) - holder.ttl_s:.0f} s ago"
                        if holder.expired(now)
                        else "its process is gone"
                    )
                    log.warning(
                        "took over shard %d from driver %s (%s)", shard_id, holder.holder.label, why
                    )
                return self._won(mine, version, holder)
        return Claim(shard_id, False, holder)

    def _won(self, info: LeaseInfo, version: _Version, took_over: LeaseInfo | None) -> Claim:
        with self._lock:
            self._held[info.shard_id] = _Held(info, version)
        return Claim(info.shard_id, True, info, took_over)

    def renew(self) -> list[int]:
        """Renews every lease this driver holds; returns the shards whose lease it lost."""
        lost: list[int] = []
        with self._lock:
            held = dict(self._held)
        for shard_id, h in held.items():
            info = h.info.model_copy(update={"renewed_at": self.clock(), "seq": h.info.seq + 1})
            version = self.store.replace(self.name(shard_id), info.encode(), h.version)
            with self._lock:
                if shard_id not in self._held:  # released meanwhile
                    continue
                if version is None:
                    del self._held[shard_id]
                    lost.append(shard_id)
                else:
                    self._held[shard_id] = _Held(info, version)
        for shard_id in lost:
            log.warning(
                "lost the lease of shard %d (another driver took it over); finishing the shard "
                "anyway (a shard committed twice keeps one copy of each row)",
                shard_id,
            )
        return lost

    def release(self, shard_id: int, committed: bool) -> None:
        """Gives up a shard's lease.

        After a commit the lease is deleted whoever holds it by then (the shard is done, so no
        lease on it matters any more): one delete. Otherwise (the shard failed) it is deleted
        only if it is still this driver's, so another driver may run the shard at once.
        """
        with self._lock:
            held = self._held.pop(shard_id, None)
        name = self.name(shard_id)
        if committed:
            self.store.delete(name)
            return
        if held is None:
            return
        cur = self.store.read(name)
        if cur is not None and cur.tag == held.version.tag:
            self.store.delete(name)

    def release_all(self) -> None:
        """Releases every lease held (the run stopped: failed, interrupted)."""
        for shard_id in sorted(self.held):
            with contextlib.suppress(OSError, StorageError):
                self.release(shard_id, committed=False)

    def holders(self) -> dict[int, LeaseInfo]:
        """Every shard lease in the folder, by shard (one listing and one read per lease)."""
        out: dict[int, LeaseInfo] = {}
        for name in self.store.names():
            cur = self.store.read(name)
            if cur is None:
                continue
            info = self._parse(int(name), cur)
            if info is not None:
                out[int(name)] = info
        return out

    def clear(self) -> None:
        """Deletes every lease left (the run is complete: no lease means anything any more)."""
        for name in self.store.names():
            with contextlib.suppress(OSError, StorageError):
                self.store.delete(name)


def describe_holders(leases: dict[int, LeaseInfo], now: float) -> list[str]:
    """One line per other driver: the shard ranges it holds and the age of its newest renewal.

    E.g. ``shards 3..9, 12 are being run by driver host:123 (lease age 12 s)``; the ranges are
    merged so thousands of shards make one line.
    """
    by_driver: dict[str, list[LeaseInfo]] = {}
    for info in leases.values():
        by_driver.setdefault(info.holder.token, []).append(info)
    lines = []
    for infos in by_driver.values():
        shards = sorted(i.shard_id for i in infos)
        age = min(i.age(now) for i in infos)
        which = f"shard {shards[0]} is" if len(shards) == 1 else f"shards {_ranges(shards)} are"
        lines.append(f"{which} being run by driver {infos[0].holder.label} (lease age {age:.0f} s)")
    return lines


def _ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``1..3, 7, 9..10`` (at most 8 ranges, then a count)."""
    spans: list[tuple[int, int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    parts = [f"{a}..{b}" if b > a else f"{a}" for a, b in spans[:8]]
    if len(spans) > 8:
        parts.append(f"and {sum(b - a + 1 for a, b in spans[8:])} more")
    return ", ".join(parts)


__all__ = [
    "LEASES",
    "Claim",
    "DriverInfo",
    "LeaseInfo",
    "LeaseMode",
    "ShardLeases",
    "describe_holders",
]
