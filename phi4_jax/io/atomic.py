"""Atomic file writes: a temporary file in the same directory, fsync, then one rename.

A reader (or a rerun after kill -9) sees either the previous file or the complete new one.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` via a temporary sibling file and an atomic rename."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """`obj` as JSON (sorted keys, trailing newline), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
