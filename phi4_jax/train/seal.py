"""A checkpoint step's seal, and what a save that ran out of space looks like.

    seal(step_dir)      writes STEP/checksums.json: size and CRC-32 of every data file (the
                        Checkpointer calls it from orbax's commit callback, before the rename)
    verify(step_dir)    what is wrong with a step's files, or None (no checksums.json: None,
                        restored unverified)
    disk_full(err)      ENOSPC anywhere in an exception's chain (OSError, tensorstore's text)

CRC-32 (zlib) runs at ~2.5 GB/s here against ~1.1 GB/s for SHA-256 (hashlib); any flip of up
to 32 adjacent bits is always caught, and a changed size (truncation) before any byte is read.
A failed save leaves noise behind it, from orbax's threads and tensorstore's late writes, some
at interpreter exit: `quiet_failed_saves()` drops exactly that (the loop reports the failure
once); `orbax_quiet()` silences orbax while a step that may be corrupt is tried.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sys
import time
import traceback
import zlib
from collections.abc import Iterator
from typing import Any

from etils import epath

log = logging.getLogger(__name__)

MANIFEST = "checksums.json"
# Top-level files that orbax writes or rewrites around the commit: its bookkeeping, not data.
_UNSEALED = ("_CHECKPOINT_METADATA", "commit_success.txt", MANIFEST)
_CHUNK = 16 * 2**20


def _digest(path: epath.Path) -> tuple[int, str]:
    """(size, CRC-32 as 8 hex digits) of a file, read in 16 MiB chunks."""
    size, crc = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    return size, f"{crc:08x}"


def _data_files(step_dir: epath.Path, prefix: str = "") -> Iterator[tuple[str, epath.Path]]:
    for path in sorted(step_dir.iterdir()):
        rel = f"{prefix}{path.name}"
        if path.is_dir():
            yield from _data_files(path, f"{rel}/")
        elif rel not in _UNSEALED:
            yield rel, path


def seal(step_dir: str | epath.Path) -> float:
    """Writes STEP/checksums.json over every data file of a step; returns the seconds taken."""
    start = time.perf_counter()
    step_dir = epath.Path(step_dir)
    files = {}
    for rel, path in _data_files(step_dir):
        size, crc = _digest(path)
        files[rel] = {"size": size, "crc32": crc}
    (step_dir / MANIFEST).write_text(json.dumps({"algorithm": "crc32", "files": files}))
    return time.perf_counter() - start


def verify(step_dir: str | epath.Path) -> str | None:
    """What is wrong with a step's files (None: they match checksums.json, or it has none)."""
    step_dir = epath.Path(step_dir)
    manifest = step_dir / MANIFEST
    if not manifest.exists():
        log.info("%s has no %s (saved before checkpoints were sealed): restoring it unverified",
                 step_dir, MANIFEST)
        return None
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__})"
    for rel, want in expected.items():
        path = step_dir / rel
        if not path.exists():
            return f"{rel} is missing"
        size, crc = _digest(path)
        if size != want["size"]:
            return f"{rel} has {size} bytes where {want['size']} were written (truncated)"
        if crc != want["crc32"]:
            return (f"{rel} does not match its checksum (CRC-32 {crc}, written {want['crc32']}): "
                    "its bytes changed on disk")
    return None


def disk_full(err: BaseException | None) -> bool:
    """Whether `err` (or what caused it) is ENOSPC, as an OSError or in tensorstore's text."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err) or "os_error_code='28'" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


class _DropDiskFullLogs(logging.Filter):
    """A save that runs out of space is logged by orbax from several threads, and by asyncio
    for each of its tasks when collected, each with a traceback; the Checkpointer reports it
    once itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (disk_full(exc) or "No space left on device" in str(record.msg))


def quiet_failed_saves() -> None:
    """Installs (once per process: a failed save's leftovers surface late, even at exit) the
    filter above on the `absl` and `asyncio` loggers, and a sys.unraisablehook filter for one
    harmless message: a tensorstore write that completes after orbax closed the asyncio loop
    waiting on it (the other writes of a failed save do) tries to wake that loop, and
    tensorstore reports `RuntimeError: Event loop is closed`, a traceback per write. Nothing
    waits for those results; everything else reaches the previous hook."""
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDiskFullLogs) for f in logger.filters):
            logger.addFilter(_DropDiskFullLogs())
    previous = sys.unraisablehook
    if getattr(previous, "phi4_jax_filter", False):
        return

    def hook(unraisable: Any) -> None:
        exc, tb = unraisable.exc_value, unraisable.exc_traceback
        names = [frame.name for frame in traceback.extract_tb(tb)] if tb else []
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
                and "call_soon_threadsafe" in names):
            previous(unraisable)

    hook.phi4_jax_filter = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def orbax_quiet() -> Iterator[None]:
    """Orbax's logs of a failing restore (the Checkpointer reports each bad step in one line)."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(level)
