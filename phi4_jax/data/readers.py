"""Input formats for `prepare`, with bad-input accounting: bad records are counted, never fatal.

Formats (by extension, or forced with `format=`):
  jsonl    .jsonl / .json / .ndjson, optionally .gz or .zst: one JSON object per line
  parquet  .parquet: one document per row of the text column
  text     .txt / .md / .rst / .text (and any file with format="text"): one document per file
  chat     JSONL whose `messages` field is a conversation (rendered later by phi4_jax.data.chat)

Every problem is counted per file and reason (REASONS) with the first location and message, and
every good record is still yielded: a truncated .gz keeps the lines before the damage.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from typing import Any

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
    "corrupt_compressed_stream": "a truncated or corrupt .gz/.zst stream (earlier records kept)",
    "unreadable_file": "the file cannot be opened or parsed",
    "missing_column": "the Parquet file has no such column",
    "unsupported_file_type": "an extension no reader handles",
    "malformed_conversation": "a chat record that cannot be rendered",
}
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
COMPRESSIONS = (".gz", ".zst")


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
    if "://" in path:
        from apache_beam.io.filesystem import CompressionTypes  # noqa: PLC0415
        from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415

        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")  # noqa: SIM115


class TruncatedStream(Exception):
    """A compressed stream that ends inside a frame."""


def _zstd_chunks(raw, size: int) -> Iterator[bytes]:
    import zstandard  # noqa: PLC0415

    dctx = zstandard.ZstdDecompressor()
    frame, fed = dctx.decompressobj(), False
    while buf := raw.read(size):
        while buf:
            fed = True
            yield frame.decompress(buf)
            if not frame.eof:
                break
            buf = frame.unused_data  # the next frame starts here
            frame, fed = dctx.decompressobj(), False
    if fed and not frame.eof:
        raise TruncatedStream("the last zstd frame is incomplete")


def _chunks(path: str, size: int = 1 << 16) -> Iterator[bytes]:
    """Decompressed bytes of `path` in chunks; raises at the first damage, after yielding
    everything that decompressed before it."""
    with open_raw(path) as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                while chunk := stream.read1(size):  # read() would drop data before a failure
                    yield chunk
        elif path.endswith(".zst"):
            yield from _zstd_chunks(raw, size)
        else:
            while chunk := raw.read(size):
                yield chunk


def _stream_errors() -> tuple[type[BaseException], ...]:
    import zstandard  # noqa: PLC0415

    return (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError, TruncatedStream)


def _lines(chunks: Iterator[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line bytes) with bounded memory; None for a line longer than `limit`.
    A damaged stream raises before its partial last line is yielded."""
    buf, line_no, skipping = b"", 0, False
    for chunk in chunks:
        buf += chunk
        start = 0
        while (newline := buf.find(b"\n", start)) >= 0:
            line, start = buf[start:newline + 1], newline + 1
            line_no += 1
            yield line_no, None if skipping or len(line) > limit else line
            skipping = False
        buf = buf[start:]
        if len(buf) > limit:
            buf, skipping = b"", True
    if buf or skipping:
        yield line_no + 1, None if skipping else buf


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


def _read_jsonl(path: str, opts: ReadOptions, report: BadInputReport, chat: bool):
    limit = 6 * opts.max_doc_chars + 4096
    line_no = 0
    try:
        for line_no, line in _lines(_chunks(path), limit):
            where = f"line {line_no}"
            if line is None:
                report.bad(path, "oversized_document", where, f"line over {limit} bytes")
                continue
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not records
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                report.bad(path, "invalid_utf8", where, str(e))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                report.bad(path, "malformed_json", where, str(e))
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
    except _stream_errors() as e:
        report.bad(path, "corrupt_compressed_stream", f"after line {line_no}",
                   f"{type(e).__name__}: {e}")


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
    except _stream_errors() as e:
        report.bad(path, "corrupt_compressed_stream", "file", f"{type(e).__name__}: {e}")
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
