"""Per-run memory cgroup for the sandbox: cgroup v1 (memory controller) or cgroup v2.

``RLIMIT_AS`` bounds each process's address space, not memory held outside it (System V shared
memory after ``shmdt``, memfd pages written with ``write()``, tmpfs files, kernel objects), nor
the sum over a run's processes.  A child cgroup per run does: the bootstrap moves itself into it
before anything else, so every process of the run -- and every page they fault in, shmem
included -- is charged to it.  ``memory.limit_in_bytes`` (v1) / ``memory.max`` (v2) is the
run's ``memory_mb``, swap is capped to the same (v1 ``memsw``) or to 0 (v2), the OOM-kill count
is read back after the run (reported as status ``memory``), and the cgroup is emptied (every
process in it SIGKILLed) and removed.

The cgroup is created under ``SandboxConfig.cgroup_parent`` or, by default, the caller's own
cgroup -- on v2, where that one holds processes and so cannot enable the memory controller for
children (the "no internal processes" rule), under its parent (a sibling of the caller; the
caller's own cgroup limits then do not cover the runs, each run has its own).  Where none is
usable (not writable, no memory controller), :func:`locate` says why and the sandbox falls back
to denying SysV IPC and memfd by seccomp.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import signal
import time
import uuid


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """Where runs' cgroups are created: ``base`` in a v1 memory or a v2 hierarchy."""

    version: int
    base: str


@dataclasses.dataclass
class RunCgroup:
    """One run's cgroup; ``procs`` is the file the bootstrap writes its pid to."""

    version: int
    path: str
    limit_bytes: int

    @property
    def procs(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    @property
    def mechanism(self) -> str:
        return f"cgroup v{self.version}"

    def stats(self) -> dict[str, int]:
        """OOM kills and peak usage so far (0 where the kernel does not report them)."""
        if self.version == 1:
            events, peak_file = "memory.oom_control", "memory.max_usage_in_bytes"
        else:
            events, peak_file = "memory.events", "memory.peak"
        oom = _read_keyed(os.path.join(self.path, events)).get("oom_kill", 0)
        peak = _read_int(os.path.join(self.path, peak_file))
        return {"oom_kills": oom, "peak_bytes": peak, "limit_bytes": self.limit_bytes}

    def remove(self, wait_s: float = 5.0) -> None:
        """SIGKILL whatever is still in the cgroup, then remove it (retrying while it drains)."""
        deadline = time.monotonic() + wait_s
        while True:
            pids = _read_pids(self.procs)
            if not pids:
                try:
                    os.rmdir(self.path)
                    return
                except FileNotFoundError:
                    return
                except OSError:  # EBUSY: the last tasks are still exiting
                    pass
            kill_file = os.path.join(self.path, "cgroup.kill")
            if self.version == 2 and os.path.exists(kill_file):
                with contextlib.suppress(OSError), open(kill_file, "w") as f:
                    f.write("1")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return  # still busy: leave it (an empty cgroup costs nothing; rmdir later)
            time.sleep(0.01)


def locate(parent: str | None = None) -> Hierarchy | str:
    """The hierarchy to create run cgroups in, or the reason there is none (a str)."""
    return _locate(parent, os.getpid())


@functools.lru_cache(maxsize=8)
def _locate(parent: str | None, _pid: int) -> Hierarchy | str:
    mounts = _cgroup_mounts()
    reasons = []
    candidates = []
    if parent is not None:
        version = 2 if os.path.exists(os.path.join(parent, "cgroup.controllers")) else 1
        candidates.append((version, parent, True))
    else:
        own = _own_cgroups()
        for version, mount_point, root in mounts:
            rel = own.get(version)
            if rel is None or not (rel == root or rel.startswith(root.rstrip("/") + "/")):
                continue
            path = os.path.normpath(mount_point + rel[len(root.rstrip("/")):])
            candidates.append((version, path, True))
            if version == 2 and path != os.path.normpath(mount_point):  # a sibling, see below
                candidates.append((2, os.path.dirname(path), False))
        if not candidates:
            return "no memory cgroup hierarchy mounted (cgroup v1 memory or v2)"
    for version, base, enable in candidates:
        # v2: our own cgroup usually holds processes, so it cannot enable the memory controller
        # for children ("no internal processes"); its parent, if writable and already
        # distributing memory, takes the run cgroups as our siblings instead (enable=False:
        # never change the parent's controllers).
        why = _usable(version, base, enable)
        if why is None:
            return Hierarchy(version, base)
        reasons.append(f"v{version} {base}: {why}")
    return "; ".join(reasons)


def create(hierarchy: Hierarchy, limit_bytes: int) -> RunCgroup:
    """A fresh child cgroup with the memory (and swap) limit set; ``OSError`` if refused."""
    path = os.path.join(hierarchy.base, f"phi4-sbx-{uuid.uuid4().hex[:16]}")
    os.mkdir(path, 0o755)
    cg = RunCgroup(hierarchy.version, path, limit_bytes)
    try:
        if hierarchy.version == 1:
            _write(path, "memory.limit_in_bytes", limit_bytes)
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: nothing to cap
                _write(path, "memory.memsw.limit_in_bytes", limit_bytes)
        else:
            _write(path, "memory.max", limit_bytes)
            with contextlib.suppress(FileNotFoundError):
                _write(path, "memory.swap.max", 0)
    except OSError:
        cg.remove(wait_s=0.5)
        raise
    return cg


def _usable(version: int, base: str, enable: bool = True) -> str | None:
    if not os.path.isdir(base):
        return "not a directory"
    if not os.access(base, os.W_OK):
        return "not writable"
    if version == 1:
        return None if os.path.exists(os.path.join(base, "memory.limit_in_bytes")) else (
            "no memory controller")
    if "memory" not in _read(os.path.join(base, "cgroup.controllers")).split():
        return "memory controller not delegated here"
    if "memory" in _read(os.path.join(base, "cgroup.subtree_control")).split():
        return None
    if not enable:
        return "memory controller not enabled for its children"
    try:
        with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
            f.write("+memory")
    except OSError as e:
        why = "it has processes of its own" if e.errno == errno.EBUSY else e.strerror
        return f"cannot enable the memory controller for children ({why})"
    return None


def _cgroup_mounts() -> list[tuple[int, str, str]]:
    """(version, mount point, root within the hierarchy), v1 memory first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3:
                continue
            root, mount_point = _unescape(fields[3]), _unescape(fields[4])
            if rfields[0] == "cgroup" and "memory" in rfields[2].split(","):
                found.append((1, mount_point, root))
            elif rfields[0] == "cgroup2":
                found.append((2, mount_point, root))
    return sorted(found, key=lambda m: m[0])


def _own_cgroups() -> dict[int, str]:
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            num, controllers, path = line.rstrip("\n").split(":", 2)
            if num == "0" and controllers == "":
                own[2] = path
            elif "memory" in controllers.split(","):
                own[1] = path
    return own


def _unescape(s: str) -> str:
    return s.encode().decode("unicode_escape")


def _write(path: str, name: str, value: int) -> None:
    with open(os.path.join(path, name), "w") as f:
        f.write(str(value))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _read_int(path: str) -> int:
    text = _read(path).strip()
    return int(text) if text.isdigit() else 0


def _read_keyed(path: str) -> dict[str, int]:
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _read_pids(path: str) -> list[int]:
    return [int(x) for x in _read(path).split() if x.isdigit()]
