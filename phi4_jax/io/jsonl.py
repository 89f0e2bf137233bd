"""JSONL input for every reader of user records: one damaged line never stops a file.

    for line_no, obj, error in read_lines(path):
        if error: report(f"{path}:{line_no}: {error}"); continue
        ...

Blank lines are skipped; bytes that are not UTF-8 are replaced (the line then usually fails
validation and is reported by the caller, with its line number, like any other bad record).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed value, None), or (line number, None, error) for invalid JSON."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line), None
            except json.JSONDecodeError as e:
                yield line_no, None, f"invalid JSON ({e.msg} at column {e.colno})"


def read_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict | None, str | None]]:
    """`read_lines` for files of JSON objects: a valid line that is not an object is an error."""
    for line_no, obj, error in read_lines(path):
        if error is None and not isinstance(obj, dict):
            obj, error = None, "not a JSON object"
        yield line_no, obj, error
