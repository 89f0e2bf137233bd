"""Code-execution sandbox: run untrusted Python in a locked-down, throw-away subprocess.

Used by the Pivotal Token Search code oracle, pass@k evaluation and the synthetic-data workflows
(code validation, instruction reversal).  Each run gets a fresh work dir, a new session, rlimits
(CPU, address space, file size, open files, processes, no core dumps), a per-run memory cgroup
capping all of the run's memory (where the host allows one), a scrubbed environment,
``python -I``, and -- where the kernel allows -- new network / IPC / mount / PID namespaces, a
private minimal read-only root (only the interpreter, system libraries and a few ``/etc`` files;
no host ``/tmp``, ``/run``, ``/proc``, homes or checkout), a dedicated unprivileged uid (when run
as root), ``no_new_privs`` and a seccomp filter.  Two backends build it: ``bwrap``
(bubblewrap, where installed and working) and ``native`` (namespaces and mounts by hand over
ctypes); ``SandboxConfig.backend`` chooses, default ``auto``.  Whatever could not be enabled is
listed, with the reason, in ``SandboxResult.isolation['unavailable']``; summaries of what holds
are ``isolation['network_isolated']``, ``['memory']`` and ``['sysv_ipc']``.  The isolation
steps run in ``_sandbox_boot.py`` (a separate interpreter, not a ``preexec_fn``) so that many
runs can be driven from threads.  See docs/sandbox.md.
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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from phi4_jax.synth import _sandbox_bwrap, _sandbox_cgroup, _sandbox_host, _sandbox_paths

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
Backend = Literal["auto", "bwrap", "native"]
FEATURES = ("network_namespace", "mount_namespace", "pid_namespace", "ipc_namespace",
            "user_namespace", "private_root", "readonly_root", "private_tmp", "proc_remounted",
            "privileges_dropped", "no_new_privs", "seccomp", "memory_cgroup", "ipc_limits")
BOOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_boot.py")
SETUP_GRACE_S = 10.0  # extra wall time for the bootstrap before the program starts
_MEMORY_RE = re.compile(r"^(MemoryError|.*Cannot allocate memory|.*std::bad_alloc)", re.M)
# Never visible to the program: homes and this project's checkout (e.g. reference solutions or
# test data).  With a private root nothing outside the documented minimum is visible anyway;
# these are also covered where they lie inside a visible dir.  The interpreter stays visible.
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
    memory_mb: int = 512  # RLIMIT_AS per process, and the whole run's memory cgroup limit
    max_output_bytes: int = 1 << 20  # per stream; exceeding it kills the run
    max_file_mb: int = 16  # RLIMIT_FSIZE
    disk_mb: int = 64  # size of each tmpfs: the work dir, /tmp, /dev/shm (mount namespace)
    max_processes: int = 16  # RLIMIT_NPROC (the sandbox uid's processes)
    max_open_files: int = 64  # RLIMIT_NOFILE
    python: str | None = None  # interpreter; default sys.executable (else FALLBACK_PYTHONS)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # extra env variables
    isolate_network: bool = True  # network namespace
    namespaces: bool = True  # mount / PID / IPC namespaces
    readonly_root: bool = True  # with a mount namespace: private minimal read-only root
    drop_privileges: bool = True  # when root: run as a dedicated unprivileged uid
    seccomp: bool = True  # syscall filter (see _sandbox_seccomp.py)
    strict: bool = False  # refuse to run (sandbox_error) if any protection is unavailable
    uid_range: tuple[int, int] | None = None  # [lo, hi) for the dedicated uids
    hide_paths: tuple[str, ...] = DEFAULT_HIDDEN  # never visible (mount namespace)
    backend: Backend = "auto"  # "bwrap" | "native" | "auto": bwrap where it works, else native
    memory_cgroup: bool = True  # per-run memory cgroup (v1 or v2) where the host allows it
    cgroup_parent: str | None = None  # cgroup dir to create run cgroups in; default: our own


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
    if cfg.backend not in ("auto", "bwrap", "native"):
        raise ValueError(f"backend must be 'auto', 'bwrap' or 'native': {cfg.backend!r}")
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


def available_backends() -> list[str]:
    """The backends that run a program here (``native`` always; ``bwrap`` if it works)."""
    return ["native"] + (["bwrap"] if _bwrap_probe()[0] else [])


@functools.cache
def _bwrap_probe() -> tuple[bool, str]:
    """Does the bwrap backend run a program here?  (once per process; the reason if not)"""
    if _sandbox_bwrap.find() is None:
        return False, "bwrap not installed"
    r = run_python("import sys; print(sys.flags.isolated)",
                   config=SandboxConfig(backend="bwrap", timeout_s=30))
    if r.ok and r.stdout.strip() == "1":
        return True, ""
    return False, f"bwrap probe: {r.status}: {r.reason[:200]}"


def _choose_backend(cfg: SandboxConfig) -> tuple[str, str]:
    """(backend, note) -- ``auto`` is bwrap when it is installed, works, and the config wants
    a private root; else native."""
    if cfg.backend == "native":
        return "native", ""
    wants_root = cfg.namespaces and cfg.readonly_root
    if cfg.backend == "bwrap":
        if not wants_root:
            raise ValueError("backend='bwrap' needs namespaces=True and readonly_root=True")
        return "bwrap", ""
    if not wants_root:
        return "native", ""
    works, why = _bwrap_probe()
    return ("bwrap", "") if works else ("native", f"auto backend: native ({why})")


def _make_cgroup(cfg: SandboxConfig) -> tuple[_sandbox_cgroup.RunCgroup | None, str]:
    if not cfg.memory_cgroup:
        return None, ""
    where = _sandbox_cgroup.locate(cfg.cgroup_parent)
    if isinstance(where, str):
        return None, where
    try:
        return _sandbox_cgroup.create(where, cfg.memory_mb << 20), ""
    except OSError as e:
        return None, f"cannot create a cgroup in {where.base}: {e}"


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


def _child_env(workdir: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _execute(cfg: SandboxConfig, workdir: str, uid: int | None, stdin: str | bytes | None,
             args: list[str]) -> SandboxResult:
    python = cfg.python or sys.executable
    backend, note = _choose_backend(cfg)
    boot_cfg = {
        "workdir": workdir, "uid": uid, "gid": uid, "strict": cfg.strict,
        "argv": [python, "-I", "-B", "-X", "utf8", "main.py", *args], "backend": backend,
        "bwrap": _sandbox_bwrap.find(), "isolate_network": cfg.isolate_network,
        "namespaces": cfg.namespaces, "readonly_root": cfg.readonly_root, "seccomp": cfg.seccomp,
        "disk_mb": cfg.disk_mb, "view": _sandbox_paths.view(python, tuple(cfg.hide_paths)),
        "python_fallbacks": [] if cfg.python else [
            p for p in FALLBACK_PYTHONS if os.path.realpath(p) != os.path.realpath(python)],
        "limits": {"cpu_s": cfg.cpu_s or max(1, math.ceil(cfg.timeout_s)),
                   "memory_bytes": cfg.memory_mb << 20, "file_bytes": cfg.max_file_mb << 20,
                   "open_files": cfg.max_open_files, "processes": cfg.max_processes,
                   "core_bytes": 0},
    }
    cgroup, boot_cfg["cgroup_unavailable"] = _make_cgroup(cfg)
    boot_cfg["cgroup_procs"] = cgroup.procs if cgroup else None
    status_r, status_w = os.pipe()
    boot_cfg["status_fd"] = status_w
    start = time.monotonic()
    try:
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
            out = _sandbox_host.collect(proc, status_r, cfg.timeout_s, SETUP_GRACE_S,
                                        cfg.max_output_bytes, start)
        finally:
            _sandbox_host.kill_group(proc.pid)
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                stream.close()  # type: ignore[union-attr]
            os.close(status_r)
        wall = time.monotonic() - start
        iso = _isolation(out["messages"], python, cfg, backend, note)
        if uid is not None and not iso["pid_namespace"]:
            _sandbox_host.sweep_uid(uid)  # no PID namespace: kill what still runs as the uid
        if uid is not None and not iso["private_tmp"]:
            _sandbox_host.remove_owned(uid, ("/tmp", "/var/tmp", "/dev/shm"))
        stats = cgroup.stats() if cgroup is not None and iso["memory_cgroup"] else None
    finally:
        if cgroup is not None:
            cgroup.remove()
    iso["memory"] = _memory_report(cfg, iso, cgroup, stats)
    return _classify(cfg, out, wall, iso)


def _isolation(messages: list[dict[str, Any]], python: str, cfg: SandboxConfig, backend: str,
               note: str) -> dict[str, Any]:
    rep = next((m for m in reversed(messages)
                if m["stage"] in ("setup", "error", "namespaces") and "active" in m), {})
    active = rep.get("active", {})
    iso: dict[str, Any] = {name: bool(active.get(name)) for name in FEATURES}
    iso["hidden_paths"] = active.get("hidden_paths", [])
    iso.update(new_session=True, scrubbed_env=True, isolated_mode=True, backend=backend,
               interpreter=rep.get("interpreter", python),
               uid=rep.get("uid"), gid=rep.get("gid"), rlimits=rep.get("rlimits", {}),
               unavailable=rep.get("unavailable", {}),
               notes=rep.get("notes", []) + ([note] if note else []),
               disabled=[name for name, on in (
                   ("network_namespace", cfg.isolate_network), ("namespaces", cfg.namespaces),
                   ("readonly_root", cfg.readonly_root), ("seccomp", cfg.seccomp),
                   ("drop_privileges", cfg.drop_privileges),
                   ("memory_cgroup", cfg.memory_cgroup)) if not on])
    policy = rep.get("seccomp_policy", {}) if iso["seccomp"] else {}
    iso["seccomp_denies"] = sorted(k.removeprefix("deny_") for k, v in policy.items() if v)
    if iso["network_namespace"] and iso["private_root"]:
        iso["network_isolated"], iso["network"] = True, (
            "network namespace (host interfaces and abstract AF_UNIX sockets unreachable) + "
            "private root (no host socket paths)")
    elif "unix" in iso["seccomp_denies"]:
        iso["network_isolated"], iso["network"] = True, (
            "seccomp: socket() refused for every address family (socketpair only)")
    else:
        iso["network_isolated"], iso["network"] = False, (
            "NOT isolated: " + ("host AF_UNIX path sockets reachable (no private root)"
                                if iso["network_namespace"] else "host network reachable"))
    if iso["memory_cgroup"] and iso["ipc_namespace"]:
        iso["sysv_ipc"] = "own IPC namespace, charged to the memory cgroup, gone with the run"
    elif "sysv" in iso["seccomp_denies"]:
        iso["sysv_ipc"] = "denied (seccomp)"
    elif iso["ipc_namespace"]:
        iso["sysv_ipc"] = ("own IPC namespace, gone with the run" +
                           (", kernel.shm* = memory_mb" if iso["ipc_limits"] else ", unbounded"))
    else:
        iso["sysv_ipc"] = "host IPC namespace, NOT bounded"
    return iso


def _memory_report(cfg: SandboxConfig, iso: dict[str, Any],
                   cgroup: _sandbox_cgroup.RunCgroup | None,
                   stats: dict[str, int] | None) -> dict[str, Any]:
    per_process = cfg.memory_mb << 20
    if cgroup is not None and stats is not None:
        return {"mechanism": f"{cgroup.mechanism} (whole run) + RLIMIT_AS (per process)",
                "limit_bytes": per_process, **stats}
    denied = {"sysv", "memfd"} <= set(iso["seccomp_denies"])
    how = ("RLIMIT_AS per process; SysV IPC and memfd denied by seccomp" if denied else
           "RLIMIT_AS per process only: SysV shm and memfd NOT bounded")
    return {"mechanism": how, "limit_bytes": per_process, "oom_kills": 0}


def _classify(cfg: SandboxConfig, out: dict[str, Any], wall: float,
              iso: dict[str, Any]) -> SandboxResult:
    stdout = out["stdout"].decode("utf-8", "replace")
    stderr = out["stderr"].decode("utf-8", "replace")
    msgs = out["messages"]
    stages = {m["stage"] for m in msgs}
    exit_msg = next((m for m in msgs if m["stage"] == "exit"), None)
    error = next((m["error"] for m in msgs if m["stage"] == "error"), None)
    rc = os.waitstatus_to_exitcode(exit_msg["wait_status"]) if exit_msg else None
    result = functools.partial(SandboxResult, returncode=rc, stdout=stdout, stderr=stderr,
                               truncated=out["truncated"], wall_s=wall, isolation=iso)
    oom = iso["memory"].get("oom_kills", 0) > 0  # the cap was hit: some process was killed
    mem_reason = f"memory limit ({cfg.memory_mb} MiB"
    if out["kill_reason"] == "output_limit":
        return result("output_limit", reason=f"output over {cfg.max_output_bytes} bytes")
    if out["kill_reason"] == "timeout" and rc is None and not oom:
        return result("timeout", reason=f"wall-clock timeout ({cfg.timeout_s:g}s)")
    if error is not None:
        return result("sandbox_error", reason=error)
    if "setup" not in stages:
        return result("sandbox_error", reason=f"bootstrap failed: {stderr[-500:]}")
    if oom:
        return result("memory", reason=f"{mem_reason} for the whole run: OOM kill, "
                                       f"{iso['memory']['mechanism'].split(' (')[0]})")
    if iso["backend"] == "bwrap" and "started" not in stages:
        return result("sandbox_error", reason=f"bubblewrap failed: {stderr[-500:].strip()}")
    if rc is None:
        return result("killed", reason="sandbox init ended without an exit status")
    if rc == 0:
        return result("ok")
    if rc == -signal.SIGXCPU:
        return result("timeout", reason=f"CPU time limit ({iso['rlimits'].get('cpu_s')}s)")
    if _MEMORY_RE.search(stderr[-4000:]):
        return result("memory", reason=f"{mem_reason} address space)")
    if rc < 0:
        return result("killed", reason=f"killed by {signal.strsignal(-rc) or -rc}")
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return result("error", reason=lines[-1][:300] if lines else f"exit code {rc}")
