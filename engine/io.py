"""All storage I/O goes through here: fsspec URLs, atomic writes, Parquet files.

A location is a URL (``file://``, ``s3://``, ``gs://``, ``memory://``) or a plain local path, plus
optional fsspec storage options. Writes are atomic for readers: on file systems with an atomic
rename (local, memory) a file is written under a hidden temporary name in the same folder and then
renamed; on object stores a completed PUT is atomic by itself, so the file is written in place.
Temporary names start with ``.`` so pyarrow.dataset, DuckDB and pandas never read them.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from .errors import StorageError

StorageOptions = dict[str, Any]

_RENAME_PROTOCOLS = {"file", "local", "memory"}


@dataclass(frozen=True)
class Location:
    """A folder or file on some fsspec file system: the URL it came from, the fs and the path."""

    url: str
    fs: fsspec.AbstractFileSystem = field(repr=False, compare=False)
    path: str

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
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return any(p in _RENAME_PROTOCOLS for p in protocols)

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

    On an exception inside the block the partial file is removed and nothing is committed.
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
        # Aborting (an exception in the block) must not complete it: fsspec's buffered files
        # upload on close, so discard the buffer instead of closing normally.
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
