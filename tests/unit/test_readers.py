"""Streaming readers: every record yielded or reported, in bounded memory."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.engine.errors import InputError
from assay.engine.importers import readers
from assay.engine.importers.readers import iter_lines, iter_records


def records(path: Path | str, max_bytes: int = 1 << 20) -> list[readers.SourceRecord]:
    return list(iter_records(str(path), max_record_bytes=max_bytes))


def test_iter_lines_bounds_memory_per_line_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CHUNK_BYTES", 7)  # force lines across chunk boundaries
    data = b"short\r\n" + b"x" * 50 + b"\nafter\n\nlast-without-newline"
    out = list(iter_lines(io.BytesIO(data), max_bytes=20))
    assert out == [
        (1, b"short", 6),
        (2, None, 50),
        (3, b"after", 5),
        (4, b"", 0),
        (5, b"last-without-newline", 20),
    ]


def test_jsonl_reports_each_bad_line_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"a": 1}\n'  # BOM on the first line
        b"{not json}\n"
        b"\n"  # blank: not a record
        b"[1, 2]\n"
        b'{"a": "\xff\xfe"}\n'  # not UTF-8
        b'{"a": "' + b"y" * 100 + b'"}\n'  # oversized
        b'{"a": 2}'
    )
    recs = records(path, max_bytes=64)
    assert [(r.line, r.data, r.error is None) for r in recs] == [
        (1, {"a": 1}, True),
        (2, None, False),
        (4, None, False),
        (5, None, False),
        (6, None, False),
        (7, {"a": 2}, True),
    ]
    errors = [r.error for r in recs if r.error]
    assert errors[0].startswith("malformed JSON")
    assert "not an object" in errors[1]
    assert "not valid UTF-8" in errors[2] and "0xff" in errors[2]
    assert "over the record size limit" in errors[3]
    assert all(r.file == str(path) for r in recs)


def test_json_array_streams_with_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "CHUNK_BYTES", 5)
    items = [{"q": f"question {i}", "label": "安全"} for i in range(6)]
    text = "[\n" + ",\n".join(json.dumps(i, ensure_ascii=False, indent=1) for i in items) + "\n]\n"
    path = tmp_path / "labels.json"
    path.write_text(text, encoding="utf-8")
    recs = records(path)
    assert [r.data for r in recs] == items
    assert [r.line for r in recs] == [2 + 4 * i for i in range(6)]  # each element is 4 lines


def test_json_array_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"a": 1}, 7, {"b": 2}]')
    recs = records(tmp_path / "a.json")
    assert [r.data for r in recs] == [{"a": 1}, None, {"b": 2}]
    assert "not an object" in (recs[1].error or "")
    (tmp_path / "b.json").write_text('[{"a": 1}, {"b": ')
    recs = records(tmp_path / "b.json")
    assert recs[0].data == {"a": 1} and "rest of the file cannot be read" in (recs[1].error or "")
    # a .json file starting with '{' is JSON lines (as Hugging Face writes them)
    (tmp_path / "c.json").write_text('{"a": 1}\n{"a": 2}\n')
    assert [r.data for r in records(tmp_path / "c.json")] == [{"a": 1}, {"a": 2}]


def test_csv_multiline_fields_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(
        b'Behavior,Tags\n"first\nspans two lines",x\nonly-one-field\ncaf\xe9,latin1\nlast,y\n'
    )
    recs = records(path)
    assert [(r.line, r.data) for r in recs] == [
        (2, {"Behavior": "first\nspans two lines", "Tags": "x"}),
        (4, None),
        (5, None),
        (6, {"Behavior": "last", "Tags": "y"}),
    ]
    assert "1 fields, the header has 2" in (recs[1].error or "")
    assert "not valid UTF-8" in (recs[2].error or "")


def test_parquet_zip_gzip_and_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"text": ["a", "b"]}), src / "p.parquet")
    with gzip.open(src / "g.jsonl.gz", "wt") as f:
        f.write('{"text": "c"}\n')
    with zipfile.ZipFile(src / "z.zip", "w") as zf:
        zf.writestr("inner/one.jsonl", '{"text": "d"}\n{"text": "e"}\n')
        zf.writestr("__MACOSX/._one.jsonl", "junk")
        zf.writestr("notes.txt", "ignored: not a data file")
    (src / "_hidden.jsonl").write_text('{"text": "never"}\n')
    recs = records(src)
    assert sorted(r.data["text"] for r in recs if r.data) == ["a", "b", "c", "d", "e"]
    zipped = [r for r in recs if r.data and r.data["text"] == "e"][0]
    assert zipped.file.endswith("z.zip!inner/one.jsonl") and zipped.line == 2
    assert [r.line for r in recs if r.file.endswith("p.parquet")] == [1, 2]


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        records(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="cannot tell the format"):
        records(tmp_path / "x.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no readable files"):
        records(empty)


def test_reading_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A ~24 MB JSONL is read with Python allocations far below its size."""
    path = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "p" * 2000, "risk_type": "Cybersecurity"})
    with path.open("w") as f:
        for _ in range(12_000):
            f.write(line + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    count = sum(1 for _ in iter_records(str(path)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 12_000
    assert peak < size / 4, f"peak {peak:,} bytes while reading a {size:,}-byte file"


def test_damaged_archives_and_streams_are_one_error_naming_the_file(tmp_path: Path) -> None:
    """Corrupt data gives one record with the file's name (line 0); other files are read on."""
    lines = "".join(json.dumps({"prompt": f"p{i}", "n": "x" * 50}) + "\n" for i in range(2000))
    # a zip member whose deflate stream is damaged half-way
    good = tmp_path / "a.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m.jsonl", lines)
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.zip").write_bytes(bytes(data))
    # a gzip file that breaks off
    gz = gzip.compress(lines.encode())
    (tmp_path / "src" / "b.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    # a Parquet file that is not one, and a good file after them all
    (tmp_path / "src" / "c.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "src" / "d.jsonl").write_text('{"prompt": "last"}\n')
    recs = records(tmp_path / "src")
    errors = [(r.file.rsplit("/", 1)[-1], r.line, r.error) for r in recs if r.error]
    assert [(f, line) for f, line, _ in errors] == [
        ("a.zip!m.jsonl", 0),
        ("b.jsonl.gz", 0),
        ("c.parquet", 0),
    ]
    assert all(e and e.startswith(("corrupt data (", "not a readable Parquet")) for *_, e in errors)
    assert "the rest of the file was not read" in (errors[0][2] or "")
    assert recs[-1].data == {"prompt": "last"}
    assert all(r.data is not None for r in recs if not r.error)  # what was read before is kept


def test_a_repeated_csv_column_is_one_error_and_nothing_is_guessed(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("text\tlang\ttext\nfirst\ten\tsecond\n")
    (rec,) = records(tmp_path / "t.tsv")
    assert rec.data is None and rec.line == 1
    assert rec.error == (
        "malformed CSV header: column 'text' appears more than once (columns 1, 3); "
        "rename one, nothing in the file was read"
    )
