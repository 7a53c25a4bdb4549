"""Streaming readers of source records: JSONL, JSON arrays, CSV/TSV, Parquet; zipped or compressed.

Every reader yields :class:`SourceRecord` objects one at a time and holds at most one record (plus a
read buffer) in memory, so a 1 GB input streams in constant memory. A record that cannot be read (a
malformed line, bytes that are not UTF-8, a line over the size limit) is yielded with ``error`` set
and the reader goes on with the next line; nothing is skipped without a record saying so.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import lzma
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow.parquet as pq

from ..errors import InputError
from ..io import Location, StorageOptions

CHUNK_BYTES = 1 << 20
RAW_KEEP_CHARS = 100_000
"""Rejects keep a bad record's text up to this length (longer ones are cut, with a note)."""

_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_KINDS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}


@dataclass
class SourceRecord:
    """One record read from a source file, or the reason it could not be read."""

    file: str
    """The file it came from, as shown to the user (``archive.zip!member.jsonl`` inside a zip)."""
    line: int
    """1-based line where it starts (for Parquet: the 1-based row number); 0 when the error is
    about the file as a whole (a corrupt archive, a compressed stream that breaks off)."""
    data: dict[str, Any] | None
    """The parsed record, or None when ``error`` is set."""
    raw: str
    """The record's source text, for the rejects file."""
    error: str | None = None
    """Why the record could not be read."""


def clip(text: str, limit: int = RAW_KEEP_CHARS) -> str:
    """Cuts long text for error reports, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [cut: {len(text):,} characters in all]"


def file_kind(name: str) -> tuple[str | None, str | None]:
    """The (kind, compression) of a file name: ('jsonl', 'gzip') for 'x.jsonl.gz'."""
    lower = name.lower()
    compression = None
    for suffix, comp in _COMPRESSIONS.items():
        if lower.endswith(suffix):
            compression = comp
            lower = lower[: -len(suffix)]
            break
    for suffix, kind in _KINDS.items():
        if lower.endswith(suffix):
            return kind, compression
    return None, compression


def expand_source(source: str, storage_options: StorageOptions | None = None) -> list[Location]:
    """The files a source names: a file, a folder (all readable files below it) or a glob."""
    loc = Location.parse(source, storage_options)
    is_dir = False
    if any(ch in source for ch in "*?["):
        paths = sorted(loc.fs.glob(loc.path))
        files = [p for p in paths if not loc.fs.isdir(p)]
    elif not loc.exists():
        raise InputError(f"no such file or folder: {source}")
    elif loc.isdir():
        is_dir = True
        files = sorted(
            p
            for p in loc.fs.find(loc.path)
            if file_kind(p)[0] is not None or p.lower().endswith(".zip")
        )
        files = [p for p in files if not p.rsplit("/", 1)[-1].startswith((".", "_"))]
    else:
        return [loc]
    if not files:
        raise InputError(f"no readable files (.jsonl .json .csv .tsv .parquet .zip) in {source}")
    base = loc.path.rstrip("/")
    out = []
    for p in files:
        if is_dir:  # shown as the source URL plus the path below it
            url = f"{source.rstrip('/')}/{p[len(base) :].lstrip('/')}"
        else:  # a glob match: its full URL
            url = p if "://" not in source else loc.fs.unstrip_protocol(p)
        out.append(Location(url=url, fs=loc.fs, path=p))
    return out


def iter_records(
    source: str,
    storage_options: StorageOptions | None = None,
    max_record_bytes: int = 64 << 20,
) -> Iterator[SourceRecord]:
    """Streams every record of every file of ``source``."""
    for loc in expand_source(source, storage_options):
        yield from iter_file(loc, max_record_bytes)


_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, gzip.BadGzipFile, lzma.LZMAError)
"""What reading a corrupt archive or compressed stream raises (it names no file)."""


def iter_file(loc: Location, max_record_bytes: int) -> Iterator[SourceRecord]:
    """Streams the records of one file (a zip archive: of each member in turn).

    A file that cannot be read as what its name says (a corrupt zip archive, a gzip stream that
    breaks off) gives one record with ``error`` set and line 0, naming the file; the records
    read before the damage are kept, and the source's other files are read on.
    """
    if loc.path.lower().endswith(".zip"):
        with loc.open("rb") as f:
            try:
                zf = zipfile.ZipFile(f)
            except (*_CORRUPT, ValueError) as exc:
                reason = f"not a readable zip archive ({exc}); nothing in it was read"
                yield SourceRecord(loc.url, 0, None, "", reason)
                return
            with zf:
                yield from _iter_zip(zf, loc.url, max_record_bytes)
        return
    kind, compression = file_kind(loc.path)
    if kind is None:
        raise InputError(
            f"cannot tell the format of {loc.url}: name it .jsonl, .json, .csv, .tsv or .parquet "
            "(optionally .gz/.bz2/.xz, or inside a .zip)"
        )
    with loc.open("rb") as f:
        try:
            yield from _dispatch(f, loc.url, kind, compression, max_record_bytes)
        except _CORRUPT as exc:
            yield _broken(loc.url, exc)


def _broken(display: str, exc: BaseException) -> SourceRecord:
    """The record saying that a file broke off while it was read."""
    detail = str(exc) or type(exc).__name__
    return SourceRecord(
        display, 0, None, "", f"corrupt data ({detail}); the rest of the file was not read"
    )


def _iter_zip(zf: zipfile.ZipFile, url: str, max_record_bytes: int) -> Iterator[SourceRecord]:
    """The records of each member of a zip archive that assay can read, in turn."""
    for info in zf.infolist():
        name = info.filename
        if (
            info.is_dir()
            or name.startswith("__MACOSX/")
            or name.rsplit("/", 1)[-1][:1] in (".", "_")
        ):
            continue
        kind, compression = file_kind(name)
        if kind is None:
            continue
        display = f"{url}!{name}"
        if info.flag_bits & 0x1:
            yield SourceRecord(display, 0, None, "", "encrypted archive member; it was not read")
            continue
        try:
            with zf.open(info) as member:
                yield from _dispatch(member, display, kind, compression, max_record_bytes)
        except (*_CORRUPT, NotImplementedError) as exc:
            yield _broken(display, exc)


def _dispatch(
    f: IO[bytes], display: str, kind: str, compression: str | None, max_bytes: int
) -> Iterator[SourceRecord]:
    stream: IO[bytes] = f
    if compression is not None:
        from fsspec.compression import compr

        if compression not in compr or compr[compression] is None:
            raise InputError(f"cannot read {display}: no {compression} decompressor installed")
        stream = compr[compression](f, mode="rb")
    if kind == "jsonl":
        yield from _iter_jsonl(stream, display, max_bytes)
    elif kind == "json":
        yield from _iter_json(stream, display, max_bytes)
    elif kind in ("csv", "tsv"):
        yield from _iter_csv(stream, display, "\t" if kind == "tsv" else ",", max_bytes)
    else:
        yield from _iter_parquet(stream, display)


def iter_lines(f: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Splits a byte stream into lines without ever holding more than ``max_bytes`` of one.

    Yields (line number, bytes without the newline, length); bytes are None for a line longer
    than ``max_bytes`` (its length is still counted, and reading resumes at the next line).
    """
    pending = bytearray()
    skipping = False
    length = 0
    lineno = 0
    while True:
        chunk = f.read(CHUNK_BYTES)
        if not chunk:
            break
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            end = len(chunk) if nl < 0 else nl
            length += end - start
            if not skipping:
                pending += chunk[start:end]
                if len(pending) > max_bytes:
                    skipping = True
                    pending.clear()
            if nl < 0:
                break
            lineno += 1
            if skipping:
                yield lineno, None, length
            else:
                yield lineno, bytes(pending.rstrip(b"\r")), length
            pending.clear()
            skipping = False
            length = 0
            start = nl + 1
    if pending or skipping:
        lineno += 1
        yield lineno, None if skipping else bytes(pending.rstrip(b"\r")), length


def _iter_jsonl(f: IO[bytes], display: str, max_bytes: int) -> Iterator[SourceRecord]:
    first = True
    for lineno, data, length in iter_lines(f, max_bytes):
        if data is None:
            yield SourceRecord(
                display,
                lineno,
                None,
                f"[{length:,} bytes, not kept]",
                f"line is {length:,} bytes, over the record size limit of {max_bytes:,} bytes",
            )
            continue
        if first:
            data = data.removeprefix(codecs.BOM_UTF8)
            first = False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield SourceRecord(
                display,
                lineno,
                None,
                data.decode("utf-8", "backslashreplace"),
                f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            )
            continue
        if not text.strip():
            continue  # blank lines are not records
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield SourceRecord(
                display, lineno, None, clip(text), f"malformed JSON ({exc.msg}, column {exc.colno})"
            )
            continue
        if not isinstance(obj, dict):
            yield SourceRecord(
                display,
                lineno,
                None,
                clip(text),
                f"malformed record: a JSON {type(obj).__name__}, not an object",
            )
            continue
        yield SourceRecord(display, lineno, obj, text)


def _peek_first_char(f: IO[bytes]) -> tuple[bytes, str]:
    """Reads until the first non-blank character; returns (bytes read, that character)."""
    head = b""
    while True:
        chunk = f.read(4096)
        if not chunk:
            return head, ""
        head += chunk
        stripped = head.removeprefix(codecs.BOM_UTF8).lstrip()
        if stripped:
            return head, chr(stripped[0])


class _Prefixed(io.RawIOBase):
    """A stream that first replays ``head`` and then reads on from ``rest``."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


def _iter_json(f: IO[bytes], display: str, max_bytes: int) -> Iterator[SourceRecord]:
    """A ``.json`` file: a JSON array of objects (streamed) or, if it starts with '{', JSONL."""
    head, first = _peek_first_char(f)
    stream = _Prefixed(head, f)
    if first == "[":
        yield from _iter_json_array(stream, display, max_bytes)  # type: ignore[arg-type]
    else:
        yield from _iter_jsonl(stream, display, max_bytes)  # type: ignore[arg-type]


def _iter_json_array(f: IO[bytes], display: str, max_bytes: int) -> Iterator[SourceRecord]:
    """Streams the elements of a top-level JSON array, one object at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    parser = json.JSONDecoder()
    buf = ""
    pos = 0
    line = 1
    eof = False
    state = "start"  # start -> item -> sep -> ... -> done

    def fill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = f.read(CHUNK_BYTES)
        buf = buf[pos:] + decoder.decode(chunk, final=not chunk)
        pos = 0
        eof = not chunk
        return True

    fill()
    buf = buf.lstrip("\ufeff")
    while True:
        while True:  # skip blanks, counting lines
            while pos < len(buf) and buf[pos] in " \t\r\n":
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf) or not fill():
                break
        if pos >= len(buf):
            if state != "done":
                yield SourceRecord(
                    display, line, None, "", "malformed JSON: the array is not closed"
                )
            return
        ch = buf[pos]
        if state == "start":
            if ch != "[":
                yield SourceRecord(display, line, None, "", "malformed JSON: expected '['")
                return
            pos += 1
            state = "item"
            continue
        if state == "sep":
            if ch == ",":
                pos += 1
                state = "item"
                continue
            if ch == "]":
                pos += 1
                state = "done"
                continue
            yield SourceRecord(
                display,
                line,
                None,
                clip(buf[pos : pos + 200]),
                "malformed JSON: expected ',' or ']' between array elements",
            )
            return
        if state == "done":
            yield SourceRecord(
                display,
                line,
                None,
                clip(buf[pos : pos + 200]),
                "malformed JSON: data after the end of the array",
            )
            return
        if ch == "]":  # empty array, or a trailing comma (tolerated)
            pos += 1
            state = "done"
            continue
        start_line = line
        while True:
            try:
                obj, end = parser.raw_decode(buf, pos)
                if end < len(buf) or eof:
                    break
            except json.JSONDecodeError as exc:
                if eof or len(buf) - pos > max_bytes:
                    text = buf[pos : pos + 2000]
                    too_big = len(buf) - pos > max_bytes
                    reason = (
                        f"array element over the record size limit of {max_bytes:,} bytes"
                        if too_big
                        else f"malformed JSON ({exc.msg})"
                    )
                    yield SourceRecord(
                        display,
                        start_line,
                        None,
                        clip(text),
                        f"{reason}; the rest of the file cannot be read",
                    )
                    return
            fill()
        text = buf[pos:end]
        line += text.count("\n")
        pos = end
        state = "sep"
        if not isinstance(obj, dict):
            yield SourceRecord(
                display,
                start_line,
                None,
                clip(text),
                f"malformed record: a JSON {type(obj).__name__}, not an object",
            )
            continue
        if _has_surrogates(obj):
            yield SourceRecord(
                display,
                start_line,
                None,
                clip(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")),
                "not valid UTF-8",
            )
            continue
        yield SourceRecord(display, start_line, obj, text)


def _has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _iter_csv(f: IO[bytes], display: str, delimiter: str, max_bytes: int) -> Iterator[SourceRecord]:
    csv.field_size_limit(max(max_bytes, 131_072))
    text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield SourceRecord(display, 1, None, "", f"malformed CSV header ({exc})")
        return
    header = [h.strip() for h in header]
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        name = repeated[0]
        where = ", ".join(str(i + 1) for i, h in enumerate(header) if h == name)
        yield SourceRecord(
            display,
            1,
            None,
            clip(delimiter.join(header)),
            f"malformed CSV header: column {name!r} appears more than once (columns {where}); "
            "rename one, nothing in the file was read",
        )
        return
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield SourceRecord(display, start, None, "", f"malformed CSV ({exc})")
            continue
        raw = delimiter.join(row)
        if not row or not any(cell.strip() for cell in row):
            continue
        if _has_surrogates(row):
            yield SourceRecord(
                display,
                start,
                None,
                clip(raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")),
                "not valid UTF-8",
            )
            continue
        if len(row) != len(header):
            yield SourceRecord(
                display,
                start,
                None,
                clip(raw),
                f"malformed CSV: {len(row)} fields, the header has {len(header)}",
            )
            continue
        yield SourceRecord(display, start, dict(zip(header, row, strict=True)), clip(raw))


def _iter_parquet(f: IO[bytes], display: str) -> Iterator[SourceRecord]:
    try:
        pf = pq.ParquetFile(f)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        yield SourceRecord(display, 0, None, "", f"not a readable Parquet file ({exc})")
        return
    names = pf.schema_arrow.names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        yield SourceRecord(
            display,
            0,
            None,
            "",
            f"column {repeated[0]!r} appears more than once; nothing in the file was read",
        )
        return
    row = 0
    for batch in pf.iter_batches(batch_size=2048):
        for rec in batch.to_pylist():
            row += 1
            yield SourceRecord(
                display, row, rec, clip(json.dumps(rec, ensure_ascii=False, default=str))
            )
