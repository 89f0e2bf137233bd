"""Code-execution sandbox: run untrusted Python in a locked-down, throw-away subprocess.

Used by the Pivotal Token Search code oracle and the synthetic-data workflows (code validation,
instruction reversal).  Each run gets a fresh temp dir, a new session, rlimits (CPU, address
space, file size, open files, processes, no core dumps), a scrubbed environment, ``python -I``,
and -- where the kernel allows -- new network / mount / PID / IPC namespaces, a read-only ``/``
with private tmpfs ``/tmp`` and homes / project checkout hidden, a dedicated unprivileged uid
(when run as root), ``no_new_privs`` and a seccomp filter (only ``AF_UNIX`` sockets, no new
namespaces).  Whatever could not be enabled is listed, with the reason, in
``SandboxResult.isolation['unavailable']``.  The isolation steps run in ``_sandbox_boot.py`` (a
separate interpreter, not a ``preexec_fn``) so that many runs can be driven from threads.
See docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
FEATURES = ("network_namespace", "mount_namespace", "pid_namespace", "ipc_namespace",
            "user_namespace", "readonly_root", "private_tmp", "proc_remounted",
            "privileges_dropped", "no_new_privs", "seccomp")
BOOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_boot.py")
SETUP_GRACE_S = 10.0  # extra wall time for the bootstrap before the program starts
DRAIN_S = 0.3  # after the program exits, how long to wait for the pipes to close
_MEMORY_RE = re.compile(r"^(MemoryError|.*Cannot allocate memory|.*std::bad_alloc)", re.M)
# Hidden from the program (an empty tmpfs over each): homes and this project's checkout, so that
# e.g. a reference solution or test data on disk cannot be read.  The interpreter stays visible.
DEFAULT_HIDDEN = ("/root", "/home",
                  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# Used, with a note, when the default interpreter is not runnable by the sandbox uid.
FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
_UID_LOCK = threading.Lock()
_UIDS_IN_USE: set[int] = set()


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation switches; ``dataclasses.replace`` it to derive variants."""

    timeout_s: float = 10.0  # wall clock, counted from the program's start
    cpu_s: int | None = None  # RLIMIT_CPU (SIGXCPU); default ceil(timeout_s)
    memory_mb: int = 512  # RLIMIT_AS (address space)
    max_output_bytes: int = 1 << 20  # per stream; exceeding it kills the run
    max_file_mb: int = 16  # RLIMIT_FSIZE
    disk_mb: int = 64  # size of the tmpfs work dir and of /tmp (mount namespace only)
    max_processes: int = 16  # RLIMIT_NPROC (the sandbox uid's processes)
    max_open_files: int = 64  # RLIMIT_NOFILE
    python: str | None = None  # interpreter; default sys.executable (else FALLBACK_PYTHONS)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # extra env variables
    isolate_network: bool = True  # network namespace
    namespaces: bool = True  # mount / PID / IPC namespaces
    readonly_root: bool = True  # with a mount namespace: "/" read-only, private /tmp
    drop_privileges: bool = True  # when root: run as a dedicated unprivileged uid
    seccomp: bool = True  # only AF_UNIX sockets, no new namespaces, no io_uring
    strict: bool = False  # refuse to run (sandbox_error) if any protection is unavailable
    uid_range: tuple[int, int] | None = None  # [lo, hi) for the dedicated uids
    hide_paths: tuple[str, ...] = DEFAULT_HIDDEN  # empty tmpfs over these (mount namespace)


@dataclasses.dataclass
class SandboxResult:
    """Outcome of one run; ``stdout``/``stderr`` are capped (``truncated`` says if cut)."""

    status: Status
    returncode: int | None  # negative: killed by that signal; None: no exit status
    stdout: str
    stderr: str
    truncated: bool
    wall_s: float
    reason: str = ""
    isolation: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_python(code: str, *, stdin: str | bytes | None = None,
               files: Mapping[str, str | bytes] | None = None, args: Sequence[str] = (),
               timeout_s: float | None = None, memory_mb: int | None = None,
               max_output_bytes: int | None = None,
               config: SandboxConfig | None = None) -> SandboxResult:
    """Run ``code`` as ``main.py`` (``python -I main.py *args``) in a fresh sandbox.

    ``files`` are extra relative paths written next to it (note that ``-I`` keeps the work dir
    off ``sys.path``).  The keyword limits override the matching ``config`` fields.
    """
    cfg = config or SandboxConfig()
    overrides = {k: v for k, v in (("timeout_s", timeout_s), ("memory_mb", memory_mb),
                                   ("max_output_bytes", max_output_bytes)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
    all_files = {"main.py": code, **(files or {})}
    if files and "main.py" in files:
        raise ValueError("files may not contain main.py (that is the program)")
    uid = _allocate_uid(cfg) if os.geteuid() == 0 and cfg.drop_privileges else None
    workdir = tempfile.mkdtemp(prefix="phi4-sbx-")
    try:
        _write_files(workdir, all_files)
        return _execute(cfg, workdir, uid, stdin, list(args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            with _UID_LOCK:
                _UIDS_IN_USE.discard(uid)


@functools.cache
def probe_isolation() -> dict[str, Any]:
    """The isolation that the default config achieves on this machine (runs ``pass`` once)."""
    return run_python("pass", timeout_s=20).isolation


def _allocate_uid(cfg: SandboxConfig) -> int:
    lo, hi = cfg.uid_range or _default_uid_range()
    with _UID_LOCK:
        while True:
            uid = random.randrange(lo, hi)
            if uid not in _UIDS_IN_USE:
                _UIDS_IN_USE.add(uid)
                return uid


def _default_uid_range() -> tuple[int, int]:
    """A uid block with no users, inside this (possibly user-namespaced) container's uid map."""
    try:
        with open("/proc/self/uid_map") as f:
            maps = [tuple(int(x) for x in line.split()[::2]) for line in f]
    except OSError:
        maps = [(0, 65536)]
    for lo, hi in ((200_000, 265_536), (40_000, 50_000)):
        if any(start <= lo and hi <= start + count for start, count in maps):
            return lo, hi
    raise RuntimeError("no free uid range in /proc/self/uid_map; set SandboxConfig.uid_range")


def _write_files(workdir: str, files: Mapping[str, str | bytes]) -> None:
    for rel, content in files.items():
        parts = rel.split("/")
        if os.path.isabs(rel) or ".." in parts or not rel:
            raise ValueError(f"file path must be relative and inside the work dir: {rel!r}")
        path = os.path.join(workdir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@functools.lru_cache(maxsize=16)
def _hide_and_expose(python: str, hide_paths: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Dirs to cover with an empty tmpfs, and the interpreter dirs to bind back inside them.

    Hidden: ``hide_paths`` plus any dir on the interpreter's path that other users cannot
    traverse (e.g. pyenv under /root), never "/", the temp root or an interpreter dir itself."""
    real = os.path.realpath(python)
    dirs = {os.path.dirname(real), os.path.dirname(os.path.dirname(real))}
    if real == os.path.realpath(sys.executable):
        dirs |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    interp: list[str] = []
    for d in sorted(os.path.realpath(d) for d in dirs):
        if not any(_inside(d, i) for i in interp):
            interp.append(d)
    tmp_root = os.path.realpath(tempfile.gettempdir())
    hide = {os.path.realpath(p) for p in hide_paths if os.path.isdir(p)}
    hide = {h for h in hide if h != "/" and not _inside(tmp_root, h)
            and not any(_inside(h, i) for i in interp)}
    for d in interp:
        parts = d.split("/")
        for i in range(2, len(parts)):
            anc = "/".join(parts[:i])
            if not os.stat(anc).st_mode & stat.S_IXOTH:
                hide.add(anc)
                break
    outer = sorted(h for h in hide if not any(h != o and _inside(h, o) for o in hide))
    return outer, [d for d in interp if any(_inside(d, h) for h in outer)]


def _child_env(workdir: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _execute(cfg: SandboxConfig, workdir: str, uid: int | None, stdin: str | bytes | None,
             args: list[str]) -> SandboxResult:
    python = cfg.python or sys.executable
    hide, expose = _hide_and_expose(python, tuple(cfg.hide_paths))
    status_r, status_w = os.pipe()
    boot_cfg = {
        "workdir": workdir, "uid": uid, "gid": uid, "status_fd": status_w, "strict": cfg.strict,
        "argv": [python, "-I", "-B", "-X", "utf8", "main.py", *args],
        "isolate_network": cfg.isolate_network, "namespaces": cfg.namespaces,
        "readonly_root": cfg.readonly_root, "seccomp": cfg.seccomp, "disk_mb": cfg.disk_mb,
        "hide": hide, "expose": expose, "python_fallbacks": [] if cfg.python else [
            p for p in FALLBACK_PYTHONS if os.path.realpath(p) != os.path.realpath(python)],
        "limits": {"cpu_s": cfg.cpu_s or max(1, math.ceil(cfg.timeout_s)),
                   "memory_bytes": cfg.memory_mb << 20, "file_bytes": cfg.max_file_mb << 20,
                   "open_files": cfg.max_open_files, "processes": cfg.max_processes,
                   "core_bytes": 0},
    }
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, status_w)
        stack.push(lambda *exc: os.close(status_r) if exc[0] else None)  # Popen failed
        stdin_arg: Any = subprocess.DEVNULL
        if stdin is not None:  # a file, not a pipe: nothing to pump, no deadlock
            stdin_arg = stack.enter_context(tempfile.TemporaryFile())
            stdin_arg.write(stdin.encode() if isinstance(stdin, str) else stdin)
            stdin_arg.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", BOOT_SCRIPT, json.dumps(boot_cfg)],
            stdin=stdin_arg, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(status_w,), env=_child_env(workdir, cfg.env), cwd=workdir,
            start_new_session=True)
    try:
        out = _collect(proc, status_r, cfg, start)
    finally:
        _kill_group(proc.pid)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()  # type: ignore[union-attr]
        os.close(status_r)
    wall = time.monotonic() - start
    iso = _isolation(out["messages"], python, cfg)
    if uid is not None and not iso["pid_namespace"]:
        _sweep_uid(uid)  # no PID namespace: kill whatever still runs as the sandbox uid
    if uid is not None and not iso["private_tmp"]:
        _remove_owned(uid, ("/tmp", "/var/tmp", "/dev/shm"))
    return _classify(cfg, out, wall, iso)


def _collect(proc: subprocess.Popen, status_fd: int, cfg: SandboxConfig,
             start: float) -> dict[str, Any]:
    """Read stdout/stderr/status incrementally until EOF, the wall deadline or the output cap."""
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr",
               status_fd: "status"}
    bufs = {name: bytearray() for name in streams.values()}
    messages: list[dict[str, Any]] = []
    sel = selectors.DefaultSelector()
    for fd in streams:
        sel.register(fd, selectors.EVENT_READ)
    deadline = start + cfg.timeout_s + SETUP_GRACE_S
    drain_until: float | None = None
    kill_reason: str | None = None
    truncated = False
    init_fd: int | None = None
    with sel, contextlib.ExitStack() as stack:
        stack.callback(lambda: _stop_init(proc.pid, init_fd))
        while sel.get_map() and kill_reason is None:
            now = time.monotonic()
            if drain_until is None and (_exited(proc.pid) or
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
                    new = [json.loads(line) for line in lines if line.strip()]
                    messages += new
                    init_fd = next((_pidfd(m["pid"]) for m in new if m["stage"] == "init"),
                                   init_fd)
                    if any(m["stage"] == "setup" for m in messages):
                        deadline = min(deadline, time.monotonic() + cfg.timeout_s)
                else:
                    room = cfg.max_output_bytes - len(bufs[name])
                    bufs[name] += data[:room]
                    if len(data) > room:
                        truncated, kill_reason = True, "output_limit"
                        break
    return {"stdout": bytes(bufs["stdout"]), "stderr": bytes(bufs["stderr"]),
            "messages": messages, "kill_reason": kill_reason, "truncated": truncated}


def _pidfd(pid: int) -> int | None:
    """A pidfd for the sandbox init (a child of the unreaped bootstrap, so the pid is valid)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _stop_init(boot_pid: int, init_fd: int | None) -> None:
    """SIGKILL the sandbox init and let the bootstrap reap it: with a PID namespace that tears
    down every process in it before the bootstrap exits, so nothing outlives the run."""
    if init_fd is None:
        return
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(init_fd, signal.SIGKILL)
    os.close(init_fd)
    deadline = time.monotonic() + 2.0
    while not _exited(boot_pid) and time.monotonic() < deadline:
        time.sleep(0.002)


def _exited(pid: int) -> bool:
    """Has the bootstrap exited?  Does not reap it, so its pid (= the group id) stays reserved."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _sweep_uid(uid: int) -> None:
    """kill(-1) as the sandbox uid until nothing is left (catches setsid'd and orphaned kids)."""
    script = "i=0; while kill -9 -1 2>/dev/null && [ $i -lt 200 ]; do i=$((i+1)); done"
    subprocess.run(["/bin/sh", "-c", script], user=uid, group=uid, extra_groups=[],
                   env={"PATH": "/usr/bin:/bin"}, cwd="/", check=False, timeout=30)


def _remove_owned(uid: int, dirs: Sequence[str]) -> None:
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


def _isolation(messages: list[dict[str, Any]], python: str,
               cfg: SandboxConfig) -> dict[str, Any]:
    rep = next((m for m in reversed(messages)
                if m["stage"] in ("setup", "error", "namespaces") and "active" in m), {})
    active = rep.get("active", {})
    iso: dict[str, Any] = {name: bool(active.get(name)) for name in FEATURES}
    iso["hidden_paths"] = active.get("hidden_paths", [])
    iso.update(new_session=True, scrubbed_env=True, isolated_mode=True,
               interpreter=rep.get("interpreter", python),
               uid=rep.get("uid"), gid=rep.get("gid"), rlimits=rep.get("rlimits", {}),
               unavailable=rep.get("unavailable", {}), notes=rep.get("notes", []),
               disabled=[name for name, on in (
                   ("network_namespace", cfg.isolate_network), ("namespaces", cfg.namespaces),
                   ("readonly_root", cfg.readonly_root), ("seccomp", cfg.seccomp),
                   ("drop_privileges", cfg.drop_privileges)) if not on])
    return iso


def _classify(cfg: SandboxConfig, out: dict[str, Any], wall: float,
              iso: dict[str, Any]) -> SandboxResult:
    stdout = out["stdout"].decode("utf-8", "replace")
    stderr = out["stderr"].decode("utf-8", "replace")
    msgs = out["messages"]
    exit_msg = next((m for m in msgs if m["stage"] == "exit"), None)
    error = next((m["error"] for m in msgs if m["stage"] == "error"), None)
    rc = os.waitstatus_to_exitcode(exit_msg["wait_status"]) if exit_msg else None
    result = functools.partial(SandboxResult, returncode=rc, stdout=stdout, stderr=stderr,
                               truncated=out["truncated"], wall_s=wall, isolation=iso)
    if out["kill_reason"] == "output_limit":
        return result("output_limit", reason=f"output over {cfg.max_output_bytes} bytes")
    if out["kill_reason"] == "timeout" and rc is None:
        return result("timeout", reason=f"wall-clock timeout ({cfg.timeout_s:g}s)")
    if error is not None:
        return result("sandbox_error", reason=error)
    if not any(m["stage"] == "setup" for m in msgs):
        return result("sandbox_error", reason=f"bootstrap failed: {stderr[-500:]}")
    if rc is None:
        return result("killed", reason="sandbox init ended without an exit status")
    if rc == 0:
        return result("ok")
    if rc == -signal.SIGXCPU:
        return result("timeout", reason=f"CPU time limit ({iso['rlimits'].get('cpu_s')}s)")
    if _MEMORY_RE.search(stderr[-4000:]):
        return result("memory", reason=f"memory limit ({cfg.memory_mb} MiB address space)")
    if rc < 0:
        return result("killed", reason=f"killed by {signal.strsignal(-rc) or -rc}")
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return result("error", reason=lines[-1][:300] if lines else f"exit code {rc}")
