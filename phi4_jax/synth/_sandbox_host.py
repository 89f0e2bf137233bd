"""Host side of one sandbox run: read the bootstrap's pipes, enforce the deadline and the output
cap, stop the run, and clean up after the fallbacks (uid sweep, leftover files).

Used by :mod:`phi4_jax.synth.sandbox`; nothing here runs inside the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

DRAIN_S = 0.3  # after the program exits, how long to wait for the pipes to close


def collect(proc: subprocess.Popen, status_fd: int, timeout_s: float, setup_grace_s: float,
            max_output_bytes: int, start: float) -> dict[str, Any]:
    """Read stdout/stderr/status incrementally until EOF, the wall deadline or the output cap.

    The deadline is ``start + timeout_s + setup_grace_s`` until the bootstrap reports
    ``setup``, then ``timeout_s`` from that moment."""
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr",
               status_fd: "status"}
    bufs = {name: bytearray() for name in streams.values()}
    messages: list[dict[str, Any]] = []
    sel = selectors.DefaultSelector()
    for fd in streams:
        sel.register(fd, selectors.EVENT_READ)
    deadline = start + timeout_s + setup_grace_s
    drain_until: float | None = None
    kill_reason: str | None = None
    truncated = False
    init_fd: int | None = None
    with sel, contextlib.ExitStack() as stack:
        stack.callback(lambda: _stop_init(proc.pid, init_fd))
        while sel.get_map() and kill_reason is None:
            now = time.monotonic()
            if drain_until is None and (exited(proc.pid) or
                                        any(m["stage"] in ("exit", "error") for m in messages)):
                drain_until = now + DRAIN_S
            if drain_until is not None and now >= drain_until:
                break
            if now >= deadline:
                kill_reason = "timeout"
                break
            for key, _ in sel.select(timeout=min(0.1, deadline - now)):
                name = streams[key.fd]  # type: ignore[index]
                data = os.read(key.fd, 1 << 16)  # type: ignore[arg-type]
                if not data:
                    sel.unregister(key.fd)
                elif name == "status":
                    bufs[name] += data
                    *lines, rest = bufs[name].split(b"\n")
                    bufs[name] = bytearray(rest)
                    for msg in _trusted(messages, lines):
                        messages.append(msg)
                        if msg["stage"] == "init" and init_fd is None:
                            init_fd = _pidfd(int(msg["pid"]))
                        if msg["stage"] == "setup":
                            deadline = min(deadline, time.monotonic() + timeout_s)
                else:
                    room = max_output_bytes - len(bufs[name])
                    bufs[name] += data[:room]
                    if len(data) > room:
                        truncated, kill_reason = True, "output_limit"
                        break
    return {"stdout": bytes(bufs["stdout"]), "stderr": bytes(bufs["stderr"]),
            "messages": messages, "kill_reason": kill_reason, "truncated": truncated}


def _trusted(seen: list[dict[str, Any]], lines: list[bytes]) -> list[dict[str, Any]]:
    """The status messages to accept.  Until ``setup`` only the bootstrap and the init write to
    the pipe; afterwards the program runs, so only the reaper's one ``started`` and one ``exit``
    are taken (the program could at most forge its own exit status), never another report or
    an ``init`` pid (which the host would SIGKILL).  Malformed lines are dropped."""
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            msg = json.loads(line)
            stage = msg["stage"]
        except (ValueError, TypeError, KeyError):
            continue
        stages = [m["stage"] for m in seen + out]
        if "exit" in stages or "error" in stages:
            break
        if "setup" in stages and (stage not in ("started", "exit") or stage in stages):
            continue
        out.append(msg)
    return out


def _pidfd(pid: int) -> int | None:
    """A pidfd for the sandbox init (a child of the unreaped bootstrap, so the pid is valid)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _stop_init(boot_pid: int, init_fd: int | None) -> None:
    """SIGKILL the native init and let the bootstrap reap it: with a PID namespace that tears
    down every process in it before the bootstrap exits, so nothing outlives the run.  (The
    bwrap backend has no init pid here: killing the group kills bwrap, whose PID 1 then gets
    its ``--die-with-parent`` SIGKILL.)"""
    if init_fd is None:
        return
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(init_fd, signal.SIGKILL)
    os.close(init_fd)
    deadline = time.monotonic() + 2.0
    while not exited(boot_pid) and time.monotonic() < deadline:
        time.sleep(0.002)


def exited(pid: int) -> bool:
    """Has the bootstrap exited?  Does not reap it, so its pid (= the group id) stays reserved."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def sweep_uid(uid: int) -> None:
    """kill(-1) as the sandbox uid until nothing is left (catches setsid'd and orphaned kids)."""
    script = "i=0; while kill -9 -1 2>/dev/null && [ $i -lt 200 ]; do i=$((i+1)); done"
    subprocess.run(["/bin/sh", "-c", script], user=uid, group=uid, extra_groups=[],
                   env={"PATH": "/usr/bin:/bin"}, cwd="/", check=False, timeout=30)


def remove_owned(uid: int, dirs: Sequence[str]) -> None:
    """Without a private /tmp the program may have left files there; remove those it owns."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass
