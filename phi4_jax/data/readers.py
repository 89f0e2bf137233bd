"""Input formats for `prepare`, with bad-input accounting: bad records are counted, never fatal.

Formats (by extension, in any letter case, or forced with `format=`):
  jsonl    .jsonl / .json / .ndjson, optionally .gz / .zst: one JSON object per line
  parquet  .parquet: one document per row of the text column
  text     .txt / .md / .rst / .text (and any file with format="text"): one document per file
  chat     JSONL whose `messages` field is a conversation (checked and rendered by prepare)

Bytes are read through `phi4_jax.io.jsonl`: gzip and zstd are recognised by their magic bytes
whatever the file is called (so `X.JSONL.GZ`, or gzip data named `.jsonl`, are decompressed),
lines are split in linear time with a length bound, every JSON parse failure (syntax, nesting,
a 5,000-digit integer, NaN) is one bad line, and only regular files are opened: a FIFO, socket
or device is counted `unreadable_file` instead of blocking the job.

Every problem is counted per file and reason (REASONS) with the first location and message, and
every good record is still yielded: a truncated .gz keeps the lines before the damage.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

from phi4_jax.io import jsonl
from phi4_jax.io.bad_input import BadInputReport

REASONS = {
    "malformed_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object",
    "missing_field": "the text field is missing or null",
    "field_not_string": "the text field is not a string",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "empty_document": "the text is empty or only whitespace",
    "oversized_document": "longer than max_doc_chars (or max_doc_tokens)",
    "binary_content": "a text file containing NUL bytes",
    "corrupt_compressed_stream": "a truncated or corrupt gzip/zstd stream (earlier records kept)",
    "unreadable_file": "the file cannot be opened or parsed, or is not a regular file",
    "missing_column": "the Parquet file has no such column",
    "unsupported_file_type": "an extension no reader handles",
    "malformed_conversation": "a chat record that cannot be rendered",
}
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
COMPRESSIONS = (".gz", ".gzip", ".zst", ".zstd")  # names only: content decides


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    format: str = "auto"  # auto | jsonl | parquet | text | chat
    text_field: str = "text"  # the JSON key / Parquet column (chat: the messages key)
    max_doc_chars: int = 10_000_000


def detect_format(path: str, forced: str = "auto") -> str | None:
    name = path.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    if forced == "chat":
        return "chat"
    if forced != "auto":
        return forced
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def open_raw(path: str):
    """A binary stream of `path`: Beam's filesystems for URLs, else only a regular file (a FIFO,
    socket or device raises `jsonl.NotRegularFileError`, an OSError, instead of blocking)."""
    if "://" in path:
        from apache_beam.io.filesystem import CompressionTypes  # noqa: PLC0415
        from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415

        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return jsonl.open_regular(path)


def _chunks(path: str, size: int = 1 << 16) -> Iterator[bytes]:
    """Decompressed bytes of `path` in chunks (gzip / zstd recognised by their magic bytes);
    raises `jsonl.CorruptStreamError` at the first damage, after everything before it."""
    with open_raw(path) as raw:
        yield from jsonl.decompressed_chunks(raw, size)


def _check_text(text: str, path: str, where: str, opts: ReadOptions,
                report: BadInputReport) -> bool:
    if not text.strip():
        report.bad(path, "empty_document", where)
        return False
    if len(text) > opts.max_doc_chars:
        report.bad(path, "oversized_document", where, f"{len(text)} chars")
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates from JSON escapes such as "\ud800"
        report.bad(path, "invalid_utf8", where, str(e))
        return False
    return True


# jsonl.read_lines' reasons -> this reader's
_LINE_REASONS = {"oversized": "oversized_document"}


def _read_jsonl(path: str, opts: ReadOptions, report: BadInputReport, chat: bool):
    limit = 6 * opts.max_doc_chars + 4096
    lines = jsonl.split_lines(_chunks(path), limit)
    line_no = 0
    try:
        for line_no, record, error in jsonl.parse_lines(lines, max_line_bytes=limit):
            where = f"line {line_no}"
            if error is not None:
                report.bad(path, _LINE_REASONS.get(error.reason, error.reason), where, error)
                continue
            if not isinstance(record, dict):
                report.bad(path, "not_an_object", where, type(record).__name__)
                continue
            value = record.get(opts.text_field)
            if value is None:
                report.bad(path, "missing_field", where, f"no {opts.text_field!r}")
            elif chat:
                yield where, value
            elif not isinstance(value, str):
                report.bad(path, "field_not_string", where,
                           f"{opts.text_field!r} is {type(value).__name__}")
            elif _check_text(value, path, where, opts, report):
                yield where, value
    except jsonl.CorruptStreamError as e:
        report.bad(path, "corrupt_compressed_stream", f"after line {line_no}", str(e))


def _read_parquet(path: str, opts: ReadOptions, report: BadInputReport):
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    row = 0
    try:
        with open_raw(path) as f:
            parquet = pq.ParquetFile(f)
            if opts.text_field not in parquet.schema_arrow.names:
                report.bad(path, "missing_column", "schema",
                           f"no column {opts.text_field!r} in {parquet.schema_arrow.names}")
                return
            for batch in parquet.iter_batches(batch_size=1024, columns=[opts.text_field]):
                for value in batch.column(0).to_pylist():
                    row += 1
                    where = f"row {row}"
                    if value is None:
                        report.bad(path, "missing_field", where, "null")
                        continue
                    if isinstance(value, bytes):
                        try:
                            value = value.decode("utf-8")
                        except UnicodeDecodeError as e:
                            report.bad(path, "invalid_utf8", where, str(e))
                            continue
                    if not isinstance(value, str):
                        report.bad(path, "field_not_string", where, type(value).__name__)
                    elif _check_text(value, path, where, opts, report):
                        yield where, value
    except (OSError, pa.ArrowException) as e:
        report.bad(path, "unreadable_file", f"after row {row}", f"{type(e).__name__}: {e}")


def _read_text(path: str, opts: ReadOptions, report: BadInputReport):
    limit = 4 * opts.max_doc_chars + 4
    parts, size = [], 0
    try:
        for chunk in _chunks(path):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    except jsonl.CorruptStreamError as e:
        report.bad(path, "corrupt_compressed_stream", "file", str(e))
        return
    data = b"".join(parts)
    if len(data) > limit:
        report.bad(path, "oversized_document", "file", f"over {limit} bytes")
        return
    nul = data.find(b"\x00")
    if nul >= 0:
        report.bad(path, "binary_content", "file", f"NUL at byte {nul}")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        report.bad(path, "invalid_utf8", "file", str(e))
        return
    if _check_text(text, path, "file", opts, report):
        yield "file", text


def read_records(path: str, opts: ReadOptions, report: BadInputReport
                 ) -> Iterator[tuple[str, Any]]:
    """Yields (location, text or conversation) for every good record of `path`."""
    kind = detect_format(path, opts.format)
    try:
        if kind is None:
            report.bad(path, "unsupported_file_type", "file", os.path.splitext(path)[1] or path)
        elif kind in ("jsonl", "chat"):
            yield from _read_jsonl(path, opts, report, chat=kind == "chat")
        elif kind == "parquet":
            yield from _read_parquet(path, opts, report)
        elif kind == "text":
            yield from _read_text(path, opts, report)
        else:
            raise ValueError(f"unknown format {kind!r}")
    except OSError as e:
        report.bad(path, "unreadable_file", "file", f"{type(e).__name__}: {e}")
