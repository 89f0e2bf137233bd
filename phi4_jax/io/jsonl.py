"""JSONL input for every reader of user records: one damaged line never stops a file.

    for line_no, obj, error in read_lines(path):
        if error: report.bad(path, error.reason, f"{path}:{line_no}", error); continue
        ...

This module is the one place where bytes a user gave become JSON values:

- only regular files are opened (`open_regular`): a FIFO, socket or device raises
  `NotRegularFileError` (an OSError) at once instead of blocking or reading forever;
- compression is recognised by its magic bytes, never by the file name (gzip 1f 8b, zstd
  28 b5 2f fd); a truncated or corrupt stream yields everything before the damage, then one
  error 'corrupt_compressed_stream';
- lines are split in linear time, and a line longer than `max_line_bytes` is one error
  'oversized', skipped without being held in memory;
- `loads` turns every parse failure into a `JSONError` with a reason: invalid JSON, nesting
  deeper than MAX_DEPTH (or Python's RecursionError), an integer over Python's int-string limit,
  NaN / Infinity / 1e999 (unless `allow_nonfinite`), bytes that are not UTF-8 and lone
  surrogates such as "\\ud800" (not Unicode text).

An error is a `LineError`: the message (a str, as before) with its `reason`, one of REASONS.
Blank lines are skipped, and a UTF-8 byte-order mark before the first line is ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

REASONS = {
    "malformed_json": "the line is not valid JSON (syntax, nesting depth, number range)",
    "invalid_utf8": "the bytes are not UTF-8, or the text holds a lone surrogate",
    "oversized": "the line is longer than max_line_bytes",
    "corrupt_compressed_stream": "a truncated or corrupt gzip/zstd stream (earlier lines kept)",
    "not_an_object": "the JSON value is not an object",
}
MAX_DEPTH = 100  # arrays/objects nested deeper than this are refused (records need a few)
MAX_LINE_BYTES = 64 << 20
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JSONError(ValueError):
    """A text that is not an acceptable JSON value; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class LineError(str):
    """The error of one line: its message, with the `reason` (one of REASONS) to count it by."""

    reason: str

    def __new__(cls, reason: str, message: str) -> LineError:
        error = super().__new__(cls, message)
        error.reason = reason
        return error


class CorruptStreamError(Exception):
    """A compressed stream that is truncated or corrupt (raised after the data before it)."""


class NotRegularFileError(OSError):
    """A path that is not a regular file (FIFO, socket, device, directory): never read."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def loads(text: str | bytes, *, allow_nonfinite: bool = False,
          max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `text`; raises `JSONError` (never anything else) when it is not one."""
    if isinstance(text, bytes | bytearray | memoryview):
        try:  # strict UTF-8 decoding never gives a surrogate
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            message = f"invalid UTF-8 ({e.reason} at byte {e.start})"
            raise JSONError("invalid_utf8", message) from None
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise JSONError("invalid_utf8", f"a lone surrogate at character {e.start}") from None
    hooks = {} if allow_nonfinite else {"parse_constant": _no_constant,
                                        "parse_float": _finite_float}
    try:
        value = json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        raise JSONError("malformed_json", f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise JSONError("malformed_json", "invalid JSON (nested too deeply)") from None
    except ValueError as e:  # int-string digit limit; non-finite numbers (the hooks above)
        raise JSONError("malformed_json", f"invalid JSON ({str(e)[:120]})") from None
    if (max_depth and text.count("[") + text.count("{") > max_depth
            and _deeper_than(value, max_depth)):
        raise JSONError("malformed_json", f"invalid JSON (nested deeper than {max_depth})")
    if _SURROGATE_ESCAPE.search(text):  # "\\ud800"-style escapes: paired ones encode fine
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise JSONError("invalid_utf8", f"a lone surrogate in a string ({e.reason})") from None
    return value


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for binary reading, if it is a regular file; else `NotRegularFileError`.
    The file is opened without blocking and checked on its descriptor (no race)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device"
                    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
            raise NotRegularFileError(f"{os.fspath(path)}: not a regular file ({kind})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def compression(head: bytes) -> str | None:
    """'gzip', 'zstd' or None (not compressed) from a stream's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def _gunzip(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    d, started = zlib.decompressobj(31), False
    try:
        for buf in pieces:
            while buf:
                if d.eof:  # one member ended: another may follow, or NUL padding
                    if not buf.strip(b"\0"):
                        break
                    d = zlib.decompressobj(31)
                started = True
                out = d.decompress(buf, size)  # bounded output per call
                while True:
                    if out:
                        yield out
                    if d.eof or d.unconsumed_tail or len(out) < size:
                        buf = d.unused_data if d.eof else d.unconsumed_tail
                        break
                    out = d.decompress(b"", size)  # the output was capped: drain the rest
        if started and not d.eof:
            raise CorruptStreamError("the gzip stream ends inside a member (truncated)")
    except zlib.error as e:
        raise CorruptStreamError(f"corrupt gzip data ({e})") from None


def _unzstd(pieces: Iterator[bytes]) -> Iterator[bytes]:
    import zstandard  # noqa: PLC0415

    dctx = zstandard.ZstdDecompressor()
    frame, fed = dctx.decompressobj(), False
    try:
        for buf in pieces:
            while buf:
                fed = True
                if out := frame.decompress(buf):
                    yield out
                if not frame.eof:
                    break
                buf = frame.unused_data  # the next frame starts here
                frame, fed = dctx.decompressobj(), False
    except zstandard.ZstdError as e:
        raise CorruptStreamError(f"corrupt zstd data ({e})") from None
    if fed and not frame.eof:
        raise CorruptStreamError("the last zstd frame is incomplete (truncated)")


def decompressed_chunks(raw: BinaryIO, size: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of an open binary stream in chunks, decompressed when its magic bytes say gzip
    or zstd; raises `CorruptStreamError` at the first damage, after the data before it."""
    head = b""
    while len(head) < 4 and (more := raw.read(4 - len(head))):
        head += more

    def pieces() -> Iterator[bytes]:
        if head:
            yield head
        while chunk := raw.read(size):
            yield chunk

    kind = compression(head)
    if kind == "gzip":
        return _gunzip(pieces(), size)
    if kind == "zstd":
        return _unzstd(pieces())
    return pieces()


def split_lines(chunks: Iterator[bytes], max_line_bytes: int = MAX_LINE_BYTES
                ) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line bytes with its newline) in time linear in the input; None for a line
    longer than `max_line_bytes` (dropped as it streams: memory stays bounded). A stream that
    raises does so before its partial last line is yielded."""
    parts: list[bytes] = []
    size, line_no, skipping = 0, 0, False
    for chunk in chunks:
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            piece, start = chunk[start:newline + 1], newline + 1
            line_no += 1
            if skipping or size + len(piece) > max_line_bytes:
                yield line_no, None
            else:
                yield line_no, b"".join([*parts, piece]) if parts else piece
            parts, size, skipping = [], 0, False
        if start < len(chunk) and not skipping:
            size += len(chunk) - start
            if size > max_line_bytes:
                parts, skipping = [], True
            else:
                parts.append(chunk[start:] if start else chunk)
    if parts or skipping:
        yield line_no + 1, None if skipping else b"".join(parts)


def parse_lines(lines: Iterator[tuple[int, bytes | None]], *, max_line_bytes: int,
                allow_nonfinite: bool = False
                ) -> Iterator[tuple[int, Any, LineError | None]]:
    """`read_lines` over (line number, bytes or None) pairs from `split_lines`."""
    for line_no, line in lines:
        if line is None:
            yield line_no, None, LineError("oversized", f"line longer than {max_line_bytes} "
                                                        "bytes (skipped)")
            continue
        if line_no == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        if not line or line.isspace():
            continue
        try:
            yield line_no, loads(line, allow_nonfinite=allow_nonfinite), None
        except JSONError as e:
            yield line_no, None, LineError(e.reason, str(e))


def read_lines(path: str | os.PathLike, *, max_line_bytes: int = MAX_LINE_BYTES,
               allow_nonfinite: bool = False) -> Iterator[tuple[int, Any, LineError | None]]:
    """(line number, parsed value, None), or (line number, None, LineError) for a bad line.

    A corrupt compressed stream ends the file with one 'corrupt_compressed_stream' error at the
    line after the last one read. Opening raises OSError: FileNotFoundError for a missing file,
    NotRegularFileError for a FIFO / socket / device."""
    with open_regular(path) as raw:
        line_no = 0
        lines = split_lines(decompressed_chunks(raw), max_line_bytes)
        try:
            for line_no, obj, error in parse_lines(lines, max_line_bytes=max_line_bytes,
                                                   allow_nonfinite=allow_nonfinite):
                yield line_no, obj, error
        except CorruptStreamError as e:
            yield line_no + 1, None, LineError("corrupt_compressed_stream", str(e))


def read_objects(path: str | os.PathLike, **kwargs: Any
                 ) -> Iterator[tuple[int, dict | None, LineError | None]]:
    """`read_lines` for files of JSON objects: a valid line that is not an object is an error."""
    for line_no, obj, error in read_lines(path, **kwargs):
        if error is None and not isinstance(obj, dict):
            obj, error = None, LineError("not_an_object", "not a JSON object")
        yield line_no, obj, error
