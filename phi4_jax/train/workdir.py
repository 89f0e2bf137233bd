"""One run per work dir: an exclusive lease, WORKDIR/lease.json, that works on a shared disk
and on GCS.

    with workdir.hold(path, timeout_s=600) as lease:   # LeaseHeld if another run holds it
        ...                                            # lease.check() raises LeaseLost once
                                                       # another run took it over

The lease is a small JSON object naming its holder (run id, host, pid, start time) with a
heartbeat timestamp that a daemon thread refreshes every `timeout_s / 4` seconds. Taking it is
an atomic create-if-absent:

    local path   os.open(O_CREAT | O_EXCL): atomic on a local disk and on NFS v3+ (a reader
                 that catches the file still empty judges it by its mtime); a refresh writes a
                 temporary file and os.replace-s it after checking the lease is still its own; a
                 reclaim renames the stale lease aside (atomic: one of two racers gets it),
                 checks that what it moved is what it judged stale, then creates its own with
                 O_EXCL. Limitation: a refresh's check-then-replace is not atomic against a
                 reclaim at the same instant, which needs the holder to have stalled past the
                 timeout first
    URL (gs://)  tensorstore's key-value store with generation preconditions: create is a write
                 if the object does not exist (GCS `ifGenerationMatch=0`); refresh, reclaim and
                 release are writes / deletes conditional on the generation last seen, so each
                 is a compare-and-swap (`file://` takes the same path: the tests use it).
                 Credentials are tensorstore's (application default credentials)

A lease is reclaimable when its heartbeat is older than `timeout_s` (train.lease_timeout_s), or
at once when its holder ran on this host and that process is gone (kill -9, a crash: the
relaunch need not wait; a reused pid is told apart by its start time); a reclaim logs a line
naming the previous holder. The heartbeat is the holder's wall clock, so hosts sharing a GCS
work dir need clocks that agree to well within the timeout. A holder that finds its lease taken
over (it stalled past the timeout and another run reclaimed it) marks it lost; `check()` then
raises and the loop stops before its next step. `hold()` is the multi-host form: only process
0 takes the lease, the others learn whether it did.

`WorkdirError` (and its kinds `LeaseHeld`, `LeaseLost`) is a `phi4_jax.cli.UsageError`: an
entry point reports it in one line with exit status 2, without a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from phi4_jax import cli

log = logging.getLogger(__name__)

LEASE_NAME = "lease.json"


class WorkdirError(cli.UsageError):
    """The work dir cannot be used as asked (another run holds it, no space, nothing
    restorable); the message says what to do."""


class LeaseHeld(WorkdirError):
    """Another live run holds the work dir's lease."""


class LeaseLost(WorkdirError):
    """This run's lease was taken over by another run."""


def _process_token(pid: int) -> str | None:
    """boot id and start time of process `pid` (Linux): tells a reused pid from the holder."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]  # field 22, after the command name
    except (OSError, IndexError):
        return None
    return f"{boot}:{start}"


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lease, and when it last said so (unix seconds)."""

    run_id: str
    host: str
    pid: int
    process: str | None  # _process_token of pid, when known
    started: float
    heartbeat: float

    @classmethod
    def me(cls, run_id: str) -> Holder:
        now = time.time()
        return cls(run_id=run_id, host=socket.gethostname(), pid=os.getpid(),
                   process=_process_token(os.getpid()), started=now, heartbeat=now)

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        try:
            raw = json.loads(data)
            return cls(run_id=str(raw["run_id"]), host=str(raw["host"]), pid=int(raw["pid"]),
                       process=raw.get("process"), started=float(raw["started"]),
                       heartbeat=float(raw["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return None  # being written (O_EXCL creates it empty first) or not a lease

    def describe(self, now: float | None = None) -> str:
        age = (time.time() if now is None else now) - self.heartbeat
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}; last heartbeat "
                f"{age:.0f}s ago)")

    def gone(self) -> bool:
        """The holder ran on this host and that process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # exists, another user's
        return self.process is not None and _process_token(self.pid) not in (None, self.process)


class _LocalStore:
    """lease.json on a file system; the token of a read is the content read."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LEASE_NAME)

    def read(self) -> tuple[bytes, Any] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return data, data

    def mtime(self) -> float | None:
        with contextlib.suppress(OSError):
            return os.stat(self.path).st_mtime
        return None

    def create(self, data: bytes) -> Any:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return data

    def replace(self, data: bytes, token: Any) -> Any:
        current = self.read()
        if current is None or current[1] != token:
            return None
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return data

    def take_over(self, data: bytes, token: Any) -> Any:
        aside = f"{self.path}.{uuid.uuid4().hex}.reclaimed"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self.create(data)
        with open(aside, "rb") as f:
            moved = f.read()
        if moved != token:  # another run took it over between our read and the rename
            if not os.path.exists(self.path):
                os.rename(aside, self.path)
            return None
        os.unlink(aside)
        return self.create(data)

    def delete(self, token: Any) -> bool:
        current = self.read()
        if current is None or current[1] != token:
            return False
        os.unlink(self.path)
        return True


class _KvStore:
    """lease.json in a tensorstore key-value store (gs://...); tokens are generations."""

    def __init__(self, url: str):
        import tensorstore as ts

        self.path = f"{url.rstrip('/')}/{LEASE_NAME}"
        self.kv = ts.KvStore.open(url.rstrip("/") + "/").result()

    def _read(self):
        return self.kv.read(LEASE_NAME).result()

    def read(self) -> tuple[bytes, Any] | None:
        result = self._read()
        return (result.value, result.stamp.generation) if result.state == "value" else None

    def mtime(self) -> float | None:
        return None

    def _write(self, data: bytes | None, generation: bytes) -> Any:
        stamp = self.kv.write(LEASE_NAME, data, if_equal=generation).result()
        return stamp.generation or None  # empty: the precondition failed

    def create(self, data: bytes) -> Any:
        result = self._read()  # a missing key's generation is the "no value" one
        return None if result.state == "value" else self._write(data, result.stamp.generation)

    def replace(self, data: bytes, token: Any) -> Any:
        return self._write(data, token)

    take_over = replace

    def delete(self, token: Any) -> bool:
        return self._write(None, token) is not None


def _store(workdir: str) -> _LocalStore | _KvStore:
    if "://" in workdir:
        return _KvStore(workdir)
    os.makedirs(workdir, exist_ok=True)
    return _LocalStore(workdir)


class Lease:
    """A held lease: refreshed by a daemon thread until `release()`."""

    def __init__(self, store: _LocalStore | _KvStore, holder: Holder, token: Any,
                 timeout_s: float):
        self.store, self.holder, self._token = store, holder, token
        self.timeout_s = timeout_s
        self.lost: str | None = None  # why the lease is no longer ours
        self._released = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="phi4_jax-lease", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            self.refresh()

    def refresh(self) -> None:
        """Writes a new heartbeat, if the lease is still ours (else marks it lost)."""
        with self._lock:
            if self.lost or self._stop.is_set():
                return
            holder = dataclasses.replace(self.holder, heartbeat=time.time())
            try:
                token = self.store.replace(holder.encode(), self._token)
            except Exception as err:  # noqa: BLE001 - a transient I/O error: retry next beat
                log.warning("%s: could not refresh the heartbeat (%s: %s)", self.store.path,
                            type(err).__name__, err)
                return
            if token is None:
                current = self.store.read()
                other = Holder.decode(current[0]) if current else None
                self.lost = (f"{self.store.path} was taken over by {other.describe()}"
                             if other else f"{self.store.path} was removed or taken over")
                log.error("%s", self.lost)
                return
            self.holder, self._token = holder, token

    def check(self) -> None:
        """Raises LeaseLost once another run has taken the lease over."""
        if self.lost and not self._released:
            raise LeaseLost(f"{self.lost}: this run stops before its next step (its lease was "
                            f"deleted, or its heartbeat was older than {self.timeout_s:g}s and "
                            "another run judged the work dir abandoned); the work dir is no "
                            "longer this run's")

    def release(self) -> None:
        """Stops the heartbeat and deletes the lease, if it is still ours."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self.lost:
                return
            try:
                if not self.store.delete(self._token):
                    log.warning("%s: not removed: another run holds it now", self.store.path)
            except Exception as err:  # noqa: BLE001 - never mask the run's own outcome
                log.warning("%s: could not remove the lease (%s: %s)", self.store.path,
                            type(err).__name__, err)
            self.lost, self._released = "released", True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def hold(workdir: str, *, timeout_s: float) -> Iterator[Lease | None]:
    """The work dir's lease for a (multi-host) run: process 0 takes it and the others learn
    whether it did (they get None); released on the way out, exceptions included."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    lease, error = None, None
    if jax.process_index() == 0:
        try:
            lease = acquire(workdir, timeout_s=timeout_s)
        except Exception as err:  # noqa: BLE001 - shared with the other hosts, then raised
            error = err
    if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(
            np.int32(error is None)):
        error = error or LeaseHeld(f"{workdir}: process 0 could not take the work dir's lease "
                                   "(its log says why)")
    if error is not None:
        raise error
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()


def acquire(workdir: str, *, timeout_s: float, run_id: str | None = None) -> Lease:
    """Takes `workdir`'s lease for this process, reclaiming a stale one (logged), or raises
    LeaseHeld naming the live holder and what to do."""
    store = _store(workdir)
    me = Holder.me(run_id or uuid.uuid4().hex[:12])
    for _ in range(5):
        token = store.create(me.encode())
        if token is not None:
            return Lease(store, me, token, timeout_s)
        current = store.read()
        if current is None:
            continue  # released in between: try again
        data, seen = current
        holder = Holder.decode(data)
        now = time.time()
        if holder is None:  # being created right now, or garbage: judge it by its age
            written = store.mtime()
            stale = written is not None and now - written > timeout_s
            reason = f"unreadable lease, {now - written:.0f}s old" if stale else None
        elif now - holder.heartbeat > timeout_s:
            reason = (f"its heartbeat is {now - holder.heartbeat:.0f}s old "
                      f"(train.lease_timeout_s={timeout_s:g})")
        elif holder.gone():
            reason = f"its process {holder.pid} on this host is gone"
        else:
            reason = None
        if reason is None:
            raise LeaseHeld(_held_message(workdir, store.path, holder, timeout_s, now))
        token = store.take_over(me.encode(), seen)
        if token is not None:
            who = holder.describe(now) if holder else "an unknown run"
            log.warning("%s: took over the lease of %s: %s", store.path, who, reason)
            return Lease(store, me, token, timeout_s)
    raise LeaseHeld(f"{store.path}: another run keeps taking the lease; is a second run "
                    "starting on this work dir?")


def _held_message(workdir: str, path: str, holder: Holder | None, timeout_s: float,
                  now: float) -> str:
    who = holder.describe(now) if holder else "a run that is creating it right now"
    wait = f" in {max(0.0, timeout_s - (now - holder.heartbeat)):.0f}s" if holder else ""
    return (f"{workdir.rstrip('/')} is in use by {who}; one run per work dir. Wait for it to "
            f"finish or stop it, or use another work dir. If that run is dead, its lease "
            f"({path}) goes stale{wait} (heartbeat older than train.lease_timeout_s="
            f"{timeout_s:g}s) and the next run takes it over; delete the file to take it over "
            "now")
