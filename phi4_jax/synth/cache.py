"""The content-addressed response cache: one model reply per key, never a failure.

    key = request_key(model="phi-4", revision=None, endpoint="chat",
                      request={"messages": [...]}, params={"temperature": 0.7, "seed": 1},
                      sample=0)
    cache = ResponseCache("out/cache.sqlite")
    cache.get_many([key])                      # {key: value} for the keys it holds
    cache.put_many({key: {"text": "...", "finish_reason": "stop"}})

The key is the sha256 of the canonical JSON (sorted keys, no spaces, UTF-8, finite numbers
only) of: the model id, the server's reported revision (None when it reports none), the
endpoint, the full rendered request (messages or prompt), every sampling parameter including the
seed, and the sample index. Anything that changes what the server is asked changes the key; a
rerun of the same request is a hit.

Storage is SQLite in WAL mode (docs/synth.md says why): each `put_many` is one transaction, so a
kill -9 at any moment leaves every earlier transaction readable and nothing half-written, and
several processes (Beam workers on one machine) may read and write one file at once, SQLite's
file locks ordering the writers. A connection belongs to the process that opened it: after a
fork the cache reopens its file. `aput_many` (the client's path) hands the entries to one writer
thread that commits whatever is queued in one transaction (group commit) and resolves the
awaiting coroutines after the commit: the event loop never waits on SQLite, and a reply is
durable before the stage that asked for it goes on. Only successful replies are ever stored
(the client's rule); the cache itself stores whatever JSON value it is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from typing import Any

SCHEMA = "phi4_jax.synth.cache/1"


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text; NaN and infinities are refused (ValueError)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256_hex(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def request_key(*, model: str, revision: str | None, endpoint: str, request: Mapping[str, Any],
                params: Mapping[str, Any], sample: int) -> str:
    """The cache key of sample `sample` of one request (module docstring)."""
    return sha256_hex(canonical_json({
        "schema": SCHEMA, "model": model, "revision": revision, "endpoint": endpoint,
        "request": dict(request), "params": dict(params), "sample": int(sample)}))


class ResponseCache:
    """key -> JSON value in one SQLite file (WAL); safe across processes and kill -9."""

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = 60.0):
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._writer: _Writer | None = None

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
        conn.execute("CREATE TABLE IF NOT EXISTS responses "
                     "(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
        return conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn, self._pid, self._writer = self._connect(), os.getpid(), None
        return self._conn

    @staticmethod
    def _insert(db: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO responses(key, value) VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        db = self._db()
        if len(keys) == 1:
            row = db.execute("SELECT value FROM responses WHERE key = ?", keys).fetchone()
            return {keys[0]: json.loads(row[0])} if row else {}
        for start in range(0, len(keys), 500):  # SQLite's bound on host parameters
            part = keys[start:start + 500]
            marks = ",".join("?" * len(part))
            for key, value in db.execute(
                    f"SELECT key, value FROM responses WHERE key IN ({marks})", part):
                found[key] = json.loads(value)
        return found

    def put_many(self, entries: Mapping[str, Any]) -> None:
        """Stores every entry in one transaction (a key already present keeps its value)."""
        if not entries:
            return
        self._insert(self._db(), [(k, canonical_json(v)) for k, v in entries.items()])

    async def aput_many(self, entries: Mapping[str, Any]) -> None:
        """`put_many` through the group-commit writer thread; returns once committed."""
        if not entries:
            return
        self._db()
        if self._writer is None or not self._writer.is_alive():
            self._writer = _Writer(self)
            self._writer.start()
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._writer.jobs.put((dict(entries), loop, done))  # serialized by the writer
        await done

    def __len__(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        if self._pid == os.getpid():
            if self._writer is not None:
                self._writer.jobs.put(None)
                self._writer.join()
            if self._conn is not None:
                self._conn.close()
        self._conn, self._writer = None, None

    def __getstate__(self) -> dict[str, Any]:  # pickled to Beam workers: the path only
        return {"path": self.path, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], timeout_s=state["timeout_s"])


def _resolve(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class _Writer(threading.Thread):
    """Commits queued entries, everything queued at once in one transaction."""

    def __init__(self, cache: ResponseCache):
        super().__init__(name="synth-cache-writer", daemon=True)
        self.cache, self.jobs = cache, queue.SimpleQueue()

    def run(self) -> None:
        db = self.cache._connect()
        try:
            while (job := self.jobs.get()) is not None:
                batch = [job]
                while True:
                    try:
                        more = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self.jobs.put(None)
                        break
                    batch.append(more)
                error = None
                try:
                    self.cache._insert(db, [(k, canonical_json(v)) for entries, _, _ in batch
                                            for k, v in entries.items()])
                except Exception as e:  # noqa: BLE001 - handed to every waiting coroutine
                    error = e
                waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
                for _, loop, future in batch:
                    waiting.setdefault(loop, []).append(future)
                for loop, futures in waiting.items():  # one wake-up per loop and commit
                    loop.call_soon_threadsafe(_resolve, futures, error)
        finally:
            db.close()
