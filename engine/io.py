"""All storage I/O goes through here: fsspec URLs, atomic writes, Parquet files, retries.

A location is a URL (``file://``, ``s3://``, ``gs://``, ``memory://``) or a plain local path, plus
optional fsspec storage options. Writes are atomic for readers: on file systems with an atomic
rename (local, memory) a file is written under a hidden temporary name in the same folder and then
renamed; on object stores a completed PUT is atomic by itself, so the file is written in place.
Temporary names start with ``.`` so pyarrow.dataset, DuckDB and pandas never read them.

**Retries.** On object stores (every protocol without an atomic rename) a :class:`Location`'s file
system is wrapped in :class:`RetryingFileSystem`: reads, listings, ``exists``, deletes, copies and
writes that fail with a *transient* error (connection refused or reset, timeouts, HTTP 5xx,
throttling) are retried with exponential backoff under a :class:`RetryPolicy` (by default long
enough to ride out a gateway that is away for half a minute or more); *permanent* errors (403,
404, an invalid bucket, a bad request) are raised at once, naming the URL. Each retry is logged
at WARNING with the operation and the URL, never with data.

A retried write never leaves a duplicate or half an object: a file opened for writing buffers
its bytes (in memory, spilling to a local temporary file past 64 MiB), and ``close`` uploads the
whole buffer as one object; a failed upload is aborted and redone from the buffer, so the object
appears once, complete, or not at all. Writing the same key again is idempotent, which is also
why an upload whose response was lost may safely be repeated. Local and memory file systems are
used as they are: no wrapper, no retries.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from .errors import StorageError
from .retry import (
    PERMANENT_ERRORS,
    STORAGE_ENV_PREFIX,
    RetryPolicy,
    error_chain,
    http_status_of,
    is_transient,
)

log = logging.getLogger(__name__)

StorageOptions = dict[str, Any]
T = TypeVar("T")

_RENAME_PROTOCOLS = {"file", "local", "memory"}


# -- retry policy ----------------------------------------------------------------------------------
# The policy type, the transient-error classifier and the backoff arithmetic live in .retry (one
# policy for storage, backends and HTTP clients); what is storage's own is below: the defaults
# (RetryPolicy's, overridable with ASSAY_STORAGE_RETRY_* or set_retry_policy), the log lines and
# the errors that name the URL.

ENV_PREFIX = STORAGE_ENV_PREFIX
_policy_override: RetryPolicy | None = None
# Indirections so tests can run the retry loop without waiting.
_sleep: Callable[[float], None] = time.sleep
_clock: Callable[[], float] = time.monotonic


def retry_policy() -> RetryPolicy:
    """The policy in force: the one set with :func:`set_retry_policy`, else from the environment."""
    return _policy_override if _policy_override is not None else RetryPolicy.from_env()


def set_retry_policy(policy: RetryPolicy | None) -> RetryPolicy | None:
    """Sets the policy for this process (None: back to the environment); returns the old one."""
    global _policy_override
    old, _policy_override = _policy_override, policy
    return old


def _describe(exc: BaseException) -> str:
    """A one-line account of an error, with the storage error code where there is one."""
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror in (None, "None") and exc.errno is not None:
        text = ""  # s3fs's OSError(errno, None): the storage error code below says more
    if text in ("", "None"):
        text = ""
    for cur in error_chain(exc):
        _, code = http_status_of(cur)
        if code and code not in text:
            text = f"{text} ({code})" if text else code
            break
    return " ".join((text or type(exc).__name__).split())[:240]


def _named(exc: BaseException, op: str, url: str) -> BaseException:
    """A permanent error, reworded to name the URL.

    Not found, permission denied and the like keep their type (callers catch them); the other
    refusals of an object store (a bare OSError such as InvalidBucketName, a request the client
    library rejected) become a :class:`StorageError`, which the CLI shows as one line.
    """
    message = f"{op} {url}: {_describe(exc)}"
    if type(exc) in PERMANENT_ERRORS:
        if url in str(exc):
            return exc
        new: BaseException = type(exc)(message)
        return new
    if type(exc) in (OSError, ValueError) or any(
        k.__name__ == "BotoCoreError" for k in type(exc).__mro__
    ):
        return StorageError(message)
    return exc


def call_with_retry(
    fn: Callable[[], T],
    op: str,
    url: str,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Calls ``fn`` until it succeeds, retrying transient storage errors under ``policy``.

    ``op`` and ``url`` name the call in log lines and errors. ``on_retry`` runs before each retry
    (e.g. to reopen a stream). A permanent error is raised at once (reworded to name the URL); a
    transient one that outlasts the policy becomes a :class:`StorageError`.
    """
    policy = policy or retry_policy()
    state = policy.start(clock=_clock)
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                named = _named(exc, op, url)
                if named is exc:
                    raise
                raise named from exc
            delay = state.next_wait()
            if delay is None:
                raise StorageError(
                    f"{op} {url} failed after {state.tries} attempt(s) in {state.elapsed:.1f} s: "
                    f"{type(exc).__name__}: {_describe(exc)}"
                ) from exc
            log.warning(
                "storage %s %s failed (%s: %s); retry %d/%d in %.1f s",
                op,
                url,
                type(exc).__name__,
                _describe(exc),
                state.retries,
                policy.attempts - 1,
                delay,
            )
            _sleep(delay)
            if on_retry is not None:
                on_retry()


# -- the retrying file system ----------------------------------------------------------------------

_SPOOL_BYTES = 64 << 20
_COPY_CHUNK = 8 << 20
# Methods that only read, or that write whole objects, and so may simply be called again.
_RETRIED = frozenset(
    {
        "cat",
        "cat_file",
        "cat_ranges",
        "checksum",
        "created",
        "du",
        "find",
        "get",
        "get_file",
        "glob",
        "head",
        "info",
        "isdir",
        "listdir",
        "ls",
        "makedirs",
        "mkdir",
        "modified",
        "pipe",
        "pipe_file",
        "put",
        "put_file",
        "read_bytes",
        "read_text",
        "size",
        "sizes",
        "tail",
        "touch",
        "write_bytes",
        "write_text",
        "copy",
        "cp_file",
    }
)


class RetryingFileSystem:
    """An fsspec file system whose calls retry transient errors (see the module docstring).

    Attributes and methods not named here pass through to the wrapped file system unchanged.
    """

    def __init__(self, fs: Any, policy: RetryPolicy | None = None) -> None:
        """Wraps ``fs``; ``policy`` None means the process-wide :func:`retry_policy`."""
        self._fs = fs
        self._policy = policy

    @property
    def wrapped(self) -> Any:
        """The file system underneath."""
        return self._fs

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy in force for this file system."""
        return self._policy or retry_policy()

    def url(self, path: str) -> str:
        """The full URL of a path of this file system (for messages)."""
        try:
            return str(self._fs.unstrip_protocol(path))
        except Exception:
            return path

    def _retry(self, op: str, path: Any, fn: Callable[[], T]) -> T:
        where = self.url(path) if isinstance(path, str) else str(path)
        return call_with_retry(fn, op, where, self.policy)

    def __getattr__(self, name: str) -> Any:
        fs = self.__dict__.get("_fs")
        if fs is None:
            raise AttributeError(name)
        attr = getattr(fs, name)
        if name not in _RETRIED or not callable(attr):
            return attr

        def retried(path: Any = None, *args: Any, **kwargs: Any) -> Any:
            call_args = () if path is None else (path,)
            return self._retry(name, path, lambda: attr(*call_args, *args, **kwargs))

        retried.__name__ = name
        return retried

    def __reduce__(self) -> tuple[Any, ...]:
        return (RetryingFileSystem, (self._fs, self._policy))

    def __repr__(self) -> str:
        return f"RetryingFileSystem({self._fs!r})"

    # Existence checks must not read an outage as "missing" (fsspec's default exists() and
    # isfile() turn every error into False), so they go through info().
    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether anything exists at ``path`` (transient errors are retried, not read as no)."""

        def probe() -> bool:
            try:
                self._fs.info(path, **kwargs)
            except FileNotFoundError:
                return False
            return True

        return self._retry("exists", path, probe)

    def isfile(self, path: str) -> bool:
        """Whether ``path`` is a file."""

        def probe() -> bool:
            try:
                return bool(self._fs.info(path).get("type") == "file")
            except FileNotFoundError:
                return False

        return self._retry("isfile", path, probe)

    def rm(self, path: Any, recursive: bool = False, **kwargs: Any) -> None:
        """Deletes; a retry that finds the target gone (the lost reply of a delete) is done."""
        self._delete("rm", path, lambda: self._fs.rm(path, recursive=recursive, **kwargs))

    def rm_file(self, path: str) -> None:
        """Deletes one file (see :meth:`rm`)."""
        self._delete("rm_file", path, lambda: self._fs.rm_file(path))

    def _delete(self, op: str, path: Any, fn: Callable[[], Any]) -> None:
        tried = [False]

        def once() -> None:
            first = not tried[0]
            tried[0] = True
            try:
                fn()
            except FileNotFoundError:
                if first:
                    raise

        self._retry(op, path, once)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Moves (copy then delete on object stores); a retry after a lost reply is detected."""
        tried = [False]

        def once() -> None:
            first = not tried[0]
            tried[0] = True
            try:
                self._fs.mv(path1, path2, **kwargs)
            except FileNotFoundError:
                # an earlier try that looked failed may have finished the move
                if first or not self._fs.exists(path2) or self._fs.exists(path1):
                    raise

        self._retry("mv", path1, once)

    move = mv
    rename = mv

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Opens a file: reads reopen and resume after a transient error; writes upload whole."""
        compression = kwargs.pop("compression", None)
        if "b" not in mode:
            text = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
            binary = self.open(path, mode.replace("t", "") + "b", compression=compression, **kwargs)
            return io.TextIOWrapper(binary, **text)
        raw: IO[bytes]
        if mode == "rb":
            raw = _RetryingReader(self, path, kwargs)  # type: ignore[assignment]
        elif mode == "wb":
            raw = _WholeObjectWriter(self, path, kwargs)  # type: ignore[assignment]
        else:  # appends and exclusive creates: no safe way to redo them blindly
            raw = self._retry("open", path, lambda: self._fs.open(path, mode, **kwargs))
        if compression is not None:
            from fsspec.compression import compr
            from fsspec.core import get_compression

            codec = get_compression(path, compression)
            if codec is not None:
                raw = compr[codec](raw, mode=mode[0])
        return raw


class _RetryingReader(io.RawIOBase):
    """A read-only stream over a remote file; after a transient error it reopens where it was."""

    def __init__(self, fs: RetryingFileSystem, path: str, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self._rfs = fs
        self._path = path
        self._kwargs = kwargs
        self._pos = 0
        self._f: Any = None
        self._f = fs._retry("open", path, self._open)

    def _open(self) -> Any:
        f = self._rfs.wrapped.open(self._path, "rb", **self._kwargs)
        if self._pos:
            f.seek(self._pos)
        return f

    def _reopen(self) -> None:
        old, self._f = self._f, None
        if old is not None:
            with contextlib.suppress(Exception):  # the old stream is broken; only a new one counts
                old.close()

    def _do(self, op: str, fn: Callable[[Any], T]) -> T:
        def once() -> T:
            if self._f is None:
                self._f = self._open()
            out = fn(self._f)
            self._pos = self._f.tell()
            return out

        return call_with_retry(once, op, self._rfs.url(self._path), self._rfs.policy, self._reopen)

    def __getattr__(self, name: str) -> Any:  # size, details, ... of the underlying file
        f = self.__dict__.get("_f")
        if f is None:
            raise AttributeError(name)
        return getattr(f, name)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self._do("read", lambda f: f.read(-1 if size is None else size)))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        return bytes(self._do("read", lambda f: f.readline(-1 if size is None else size)))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._do("seek", lambda f: f.seek(offset, whence)))

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._reopen()
        super().close()


class _WholeObjectWriter(io.RawIOBase):
    """A write-only stream that becomes one object at close: uploaded whole, retried whole.

    Bytes are spooled (memory, then a local temporary file); ``close`` opens the remote file,
    copies the spool into it and closes it (the PUT, or the completion of a multipart upload).
    A failed attempt is discarded (an unfinished multipart upload is aborted) and redone from the
    start of the spool. ``discard`` drops everything: nothing is uploaded.
    """

    def __init__(self, fs: RetryingFileSystem, path: str, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self._rfs = fs
        self._path = path
        self._kwargs = kwargs
        self._spool: Any = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self.path = path

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"write to closed file {self._rfs.url(self._path)}")
        n: int = self._spool.write(data)
        return n

    def tell(self) -> int:
        return int(self._spool.tell())

    def flush(self) -> None:
        """Nothing goes out before close."""

    def discard(self) -> None:
        """Drops the buffered bytes; nothing is written."""
        if not self.closed:
            self._spool.close()
            super().close()

    def _upload(self) -> None:
        self._spool.seek(0)
        f = self._rfs.wrapped.open(self._path, "wb", **self._kwargs)
        try:
            shutil.copyfileobj(self._spool, f, _COPY_CHUNK)
            f.close()
        except BaseException:
            discard = getattr(f, "discard", None)
            if callable(discard):
                with contextlib.suppress(Exception):  # nothing more to undo
                    discard()  # aborts a multipart upload, drops the buffer
            raise

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._rfs._retry("write", self._path, self._upload)
        finally:
            self._spool.close()
            super().close()


def _wrap(fs: Any) -> Any:
    """The file system to use for ``fs``: object stores get retries, the rest stay as they are."""
    if isinstance(fs, RetryingFileSystem) or _renames_atomically(fs):
        return fs
    return RetryingFileSystem(fs)


def _renames_atomically(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return any(p in _RENAME_PROTOCOLS for p in protocols)


# -- locations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A folder or file on some fsspec file system: the URL it came from, the fs and the path.

    The file system of an object store is wrapped in :class:`RetryingFileSystem` on creation.
    """

    url: str
    fs: fsspec.AbstractFileSystem = field(repr=False, compare=False)
    path: str

    def __post_init__(self) -> None:
        """Gives object stores their retries."""
        object.__setattr__(self, "fs", _wrap(self.fs))

    @classmethod
    def parse(cls, url: str, storage_options: StorageOptions | None = None) -> Location:
        """Resolves a URL or a local path (made absolute) to its file system."""
        try:
            fs, path = url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StorageError(f"cannot open {url!r}: {exc}") from exc
        return cls(url=url.rstrip("/") if url not in ("/", "") else url, fs=fs, path=path)

    def join(self, *parts: str) -> Location:
        """A location below this one."""
        sub = "/".join(p.strip("/") for p in parts if p)
        url = f"{self.url.rstrip('/')}/{sub}"
        return Location(url=url, fs=self.fs, path=posixpath.join(self.path, sub))

    @property
    def name(self) -> str:
        """The last path component."""
        return posixpath.basename(self.path.rstrip("/"))

    def parent(self) -> Location:
        """The folder containing this location."""
        head = self.url.rstrip("/").rsplit("/", 1)[0]
        return Location(url=head, fs=self.fs, path=posixpath.dirname(self.path.rstrip("/")))

    def sibling(self, name: str) -> Location:
        """A location next to this one, in the same folder."""
        return self.parent().join(name)

    @property
    def atomic_rename(self) -> bool:
        """Whether this file system renames atomically (else writes are single atomic PUTs)."""
        return _renames_atomically(self.fs)

    def exists(self) -> bool:
        """Whether anything exists at this location."""
        return bool(self.fs.exists(self.path))

    def isdir(self) -> bool:
        """Whether this location is a folder."""
        return bool(self.fs.isdir(self.path))

    def makedirs(self) -> None:
        """Creates this folder and its parents (a no-op on object stores)."""
        self.fs.makedirs(self.path, exist_ok=True)

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """Opens the file (``compression="infer"`` may be passed for reading)."""
        return self.fs.open(self.path, mode, **kwargs)  # type: ignore[no-any-return]

    def read_bytes(self) -> bytes:
        """The whole file."""
        return self.fs.cat_file(self.path)  # type: ignore[no-any-return]

    def read_json(self) -> Any:
        """The file parsed as JSON."""
        return json.loads(self.read_bytes())

    def remove(self, recursive: bool = False) -> None:
        """Deletes the file (or folder, with ``recursive``); missing is fine."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=recursive)


@contextmanager
def atomic_open(loc: Location) -> Iterator[IO[bytes]]:
    """Opens ``loc`` for writing so that readers see either nothing or the whole file.

    On an exception inside the block the partial file is removed and nothing is committed. On an
    object store the bytes are uploaded as one object when the block ends, and the upload is
    retried whole after a transient error (see the module docstring).
    """
    parent = loc.parent()
    parent.makedirs()
    if loc.atomic_rename:
        tmp = parent.join(f".tmp-{loc.name}-{uuid.uuid4().hex[:12]}")
        try:
            with tmp.open("wb") as f:
                yield f
            loc.fs.mv(tmp.path, loc.path)
        except BaseException:
            tmp.remove()
            raise
    else:
        # An object store's PUT is atomic: the object appears only when the upload completes.
        # Aborting (an exception in the block) must not complete it: the file buffers until
        # close, so discard the buffer instead of closing normally.
        f = loc.open("wb")
        try:
            yield f
        except BaseException:
            discard = getattr(f, "discard", None)
            if callable(discard):
                discard()
            raise
        else:
            f.close()


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Writes a whole file atomically."""
    with atomic_open(loc) as f:
        f.write(data)


def write_json_atomic(loc: Location, obj: Any) -> None:
    """Writes JSON (indented, UTF-8) atomically."""
    write_bytes_atomic(loc, json.dumps(obj, ensure_ascii=False, indent=2, default=str).encode())


def write_parquet_atomic(loc: Location, table: pa.Table, compression: str = "zstd") -> None:
    """Writes one Parquet file atomically; the schema's metadata lands in the file's footer."""
    with atomic_open(loc) as f:
        pq.write_table(table, f, compression=compression)


def read_parquet(loc: Location, columns: list[str] | None = None) -> pa.Table:
    """Reads one Parquet file."""
    with loc.open("rb") as f:
        return pq.read_table(f, columns=columns)


__all__ = [
    "Location",
    "RetryPolicy",
    "RetryingFileSystem",
    "StorageOptions",
    "atomic_open",
    "call_with_retry",
    "is_transient",
    "read_parquet",
    "retry_policy",
    "set_retry_policy",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
]
