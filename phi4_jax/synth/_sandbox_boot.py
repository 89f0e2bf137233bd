"""Sandbox bootstrap, run as its own interpreter: ``python -I -S _sandbox_boot.py CONFIG_JSON``.

It is started by :mod:`phi4_jax.synth.sandbox` (never imported by it) so that the isolation steps
run in a fresh single-threaded process instead of a ``preexec_fn`` (which is unsafe in the threaded
batch runner).  Stdlib only: it imports its sibling helper modules as top-level modules, never the
package.  Steps, each recorded on the status pipe:

1. Join the run's memory cgroup (``cfg['cgroup_procs']``) before anything else, so every page
   the run faults in -- SysV shm, memfd, tmpfs included -- is charged to it.
2. ``unshare``: a user namespace first when not root, then network and IPC (with
   ``kernel.shm*``/``msg*`` limits set inside the new IPC namespace), and for the native
   backend mount and PID; a namespace the kernel refuses is recorded with its errno and skipped.
3. *native* (``_sandbox_mounts``): fork an init (PID 1 of the new PID namespace) that builds the
   private minimal read-only root and ``pivot_root``\\ s into it, sets the rlimits, drops to the
   sandbox uid, sets ``no_new_privs`` and the seccomp filter (``_sandbox_seccomp``), then runs
   the program through ``_sandbox_init.run_program``.  When PID 1 exits the kernel kills
   everything left in the namespace.
   *bwrap* (``_sandbox_bwrap``): set the rlimits, drop to the sandbox uid and ``exec`` bubblewrap,
   which builds the same root and loads the same filter.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _sandbox_bwrap as bwrap_backend  # noqa: E402
import _sandbox_init as reaper  # noqa: E402
import _sandbox_mounts as mounts  # noqa: E402
import _sandbox_seccomp as seccomp  # noqa: E402

del sys.path[0]

CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
BWRAP_EXTRA_PROCESSES = 2  # bwrap's monitor and its PID 1, both as the sandbox uid

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


def _ok(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int = 0) -> None:
    _ok(LIBC.prctl(option, arg, 0, 0, 0), f"prctl {option}")


class Channel:
    """JSON lines to the parent; each line is well below PIPE_BUF, so writes are atomic."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_inheritable(fd, False)

    def send(self, **msg: object) -> None:
        os.write(self.fd, (json.dumps(msg) + "\n").encode())


def join_cgroup(cfg: dict, rep: dict) -> None:
    if cfg["cgroup_procs"] is None:
        if cfg["cgroup_unavailable"]:
            rep["unavailable"]["memory_cgroup"] = cfg["cgroup_unavailable"]
        return
    try:
        with open(cfg["cgroup_procs"], "w") as f:
            f.write(str(os.getpid()))
        rep["active"]["memory_cgroup"] = True
    except OSError as e:
        rep["unavailable"]["memory_cgroup"] = f"cannot join {cfg['cgroup_procs']}: {e}"


def unshare_namespaces(cfg: dict, rep: dict) -> None:
    """Enter new namespaces one by one; a refused one is recorded in ``rep['unavailable']``."""
    wanted = []
    if cfg["isolate_network"]:
        wanted.append(("network_namespace", CLONE_NEWNET))
    if cfg["namespaces"]:
        wanted.append(("ipc_namespace", CLONE_NEWIPC))
        if cfg["backend"] == "native":
            wanted += [("mount_namespace", CLONE_NEWNS), ("pid_namespace", CLONE_NEWPID)]
    if not wanted:
        return
    if os.geteuid() != 0:  # unprivileged: a user namespace gives capabilities over the others
        uid, gid = os.getuid(), os.getgid()
        try:
            _ok(LIBC.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            rep["active"]["user_namespace"] = True
        except OSError as e:
            rep["unavailable"]["user_namespace"] = str(e)
    for name, flag in wanted:
        try:
            _ok(LIBC.unshare(flag), f"unshare({name})")
            rep["active"][name] = True
        except OSError as e:
            rep["unavailable"][name] = str(e)


def limit_ipc(cfg: dict, rep: dict) -> None:
    """Inside the new IPC namespace: SysV shm/msg limits of one run (writes apply to it only)."""
    if not rep["active"].get("ipc_namespace"):
        return
    mem = cfg["limits"]["memory_bytes"]
    page = os.sysconf("SC_PAGE_SIZE")
    values = {"shmmax": mem, "shmall": max(1, mem // page), "shmmni": 32, "shm_rmid_forced": 1,
              "msgmni": 16, "msgmnb": 65536}
    try:
        for name, value in values.items():
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(str(value))
        rep["active"]["ipc_limits"] = True
    except OSError as e:
        rep["notes"].append(f"kernel.shm*/msg* limits not set in the IPC namespace: {e}")


def _count_processes(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            count += name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid
    return count


def set_rlimits(lim: dict, rep: dict, extra_processes: int = 0) -> None:
    """Apply limits, never above the current hard limits (which cannot be raised)."""
    table = {"cpu_s": (resource.RLIMIT_CPU, 1), "memory_bytes": (resource.RLIMIT_AS, 0),
             "file_bytes": (resource.RLIMIT_FSIZE, 0), "open_files": (resource.RLIMIT_NOFILE, 0),
             "processes": (resource.RLIMIT_NPROC, 0), "core_bytes": (resource.RLIMIT_CORE, 0)}
    applied = {}
    for key, (res, extra_hard) in table.items():
        soft = lim[key] + (extra_processes if key == "processes" else 0)
        hard = soft + extra_hard  # CPU: SIGXCPU at soft, SIGKILL at hard
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))
        applied[key] = soft - (extra_processes if key == "processes" else 0)
    rep["rlimits"] = applied


def _identity(cfg: dict, rep: dict) -> tuple[bool, int, int]:
    """(drop?, uid, gid) for the program; records the privilege situation."""
    root = os.geteuid() == 0
    drop = root and cfg["uid"] is not None
    if drop:
        return True, cfg["uid"], cfg["gid"]
    if root:
        rep["unavailable"]["privileges_dropped"] = "disabled by config (runs as root!)"
    else:
        rep["notes"].append("not root: the program runs as the caller's uid")
    return False, os.getuid(), os.getgid()


def drop_privileges(uid: int, gid: int, rep: dict) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        rep["active"]["privileges_dropped"] = True
        return
    raise OSError("privilege drop did not stick")


def seccomp_policy(rep: dict) -> dict:
    """What the filter denies beyond the fixed list, given what else is in force."""
    act = rep["active"]
    return {"deny_unix": not (act.get("network_namespace") and act.get("private_root")),
            "deny_sysv": not (act.get("memory_cgroup") and act.get("ipc_namespace")),
            "deny_memfd": not act.get("memory_cgroup")}


def _seccomp_prog(cfg: dict, rep: dict) -> bytes | None:
    if not cfg["seccomp"]:
        return None
    policy = seccomp_policy(rep)
    try:
        prog = seccomp.build_filter(**policy)
    except OSError as e:
        rep["unavailable"]["seccomp"] = str(e)
        return None
    rep["seccomp_policy"] = policy
    return prog


def _ready(cfg: dict, chan: Channel, rep: dict, argv: list[str]) -> None:
    rep["uid"], rep["gid"], rep["interpreter"] = os.getuid(), os.getgid(), argv[0]
    if cfg["strict"] and rep["unavailable"]:
        raise OSError(f"strict mode, protections unavailable: {rep['unavailable']}")
    chan.send(stage="setup", **rep)


def native_init(cfg: dict, chan: Channel, rep: dict, boot_pid: int) -> None:
    """PID 1: set up the sandbox, run the user program, report its wait status, exit."""
    drop, uid, gid = _identity(cfg, rep)
    if rep["active"].get("mount_namespace") and cfg["readonly_root"]:
        try:
            mounts.build_root(cfg, rep, uid, gid)
        except OSError as e:  # undone by build_root: the host's tree, seccomp denies AF_UNIX
            rep["unavailable"]["private_root"] = str(e)
    act = rep["active"]
    if act.get("mount_namespace") and act.get("pid_namespace") and not act.get("private_root"):
        mounts.mount(None, "/", None, mounts.MS_REC | mounts.MS_PRIVATE)
        mounts.mount("proc", "/proc", "proc", mounts.MS_NOSUID | mounts.MS_NODEV)
        rep["active"]["proc_remounted"] = True
    if drop and not rep["active"].get("private_root"):
        for root, dirs, files in os.walk(cfg["workdir"]):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
        os.chown(cfg["workdir"], uid, gid)
    os.chdir(cfg["workdir"])
    limits = dict(cfg["limits"])
    if os.geteuid() != 0:  # RLIMIT_NPROC counts all of the uid's processes
        limits["processes"] += _count_processes(uid)
    set_rlimits(limits, rep)
    if drop:
        drop_privileges(uid, gid, rep)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    rep["active"]["no_new_privs"] = True
    prog = _seccomp_prog(cfg, rep)
    if prog is not None:
        try:
            seccomp.install(prog)
            rep["active"]["seccomp"] = True
        except OSError as e:
            rep["unavailable"]["seccomp"] = str(e)
    _prctl(PR_SET_DUMPABLE, 0)  # the program (same uid) may not ptrace or read /proc/<init>
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() not in (boot_pid, 0):  # 0: PID 1 of a new PID namespace
        os._exit(70)
    argv = list(cfg["argv"])
    if not os.access(argv[0], os.X_OK):  # e.g. pyenv under /root and no mount namespace
        alt = next((p for p in cfg["python_fallbacks"] if os.access(p, os.X_OK)), None)
        if alt is None:
            raise OSError(f"interpreter {argv[0]} is not executable by uid {uid}; pass "
                          "SandboxConfig(python=...) with a world-readable interpreter")
        rep["notes"].append(f"interpreter {argv[0]} is not executable by uid {uid}: using {alt}")
        argv[0] = alt
    _ready(cfg, chan, rep, argv)
    reaper.run_program(chan.fd, argv)


def exec_bwrap(cfg: dict, chan: Channel, rep: dict) -> None:
    """Drop to the sandbox uid and become ``bwrap`` (it builds the rest of the sandbox)."""
    if not cfg["bwrap"]:
        raise OSError("backend 'bwrap': bubblewrap is not installed (apt-get install bubblewrap)")
    drop, uid, gid = _identity(cfg, rep)
    if drop:
        mounts.reexpose(cfg["view"], rep)
    sources = bwrap_backend.open_sources(cfg)
    limits = dict(cfg["limits"])
    if os.geteuid() != 0:
        limits["processes"] += _count_processes(uid)
    set_rlimits(limits, rep, extra_processes=BWRAP_EXTRA_PROCESSES)
    if drop:
        drop_privileges(uid, gid, rep)
    rep["active"].update(mount_namespace=True, pid_namespace=True, user_namespace=True,
                         private_root=True, readonly_root=True, private_tmp=True,
                         proc_remounted=True, no_new_privs=True,
                         hidden_paths=cfg["view"]["hidden"])
    prog = _seccomp_prog(cfg, rep)
    seccomp_fd = None
    if prog is not None:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, prog)
        os.close(write_fd)
        seccomp_fd = read_fd
        rep["active"]["seccomp"] = True
    argv = bwrap_backend.command(cfg["bwrap"], cfg, sources, chan.fd, seccomp_fd)
    if cfg["view"]["exposed"]:
        rep["notes"].append(f"interpreter dirs visible read-only: {cfg['view']['exposed']}")
    _ready(cfg, chan, rep, cfg["argv"])
    os.execv(argv[0], argv)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    chan = Channel(cfg["status_fd"])
    rep: dict = {"active": {}, "unavailable": {}, "notes": [], "backend": cfg["backend"]}
    try:
        join_cgroup(cfg, rep)
        unshare_namespaces(cfg, rep)
        limit_ipc(cfg, rep)
        chan.send(stage="namespaces", **rep)
        if cfg["backend"] == "bwrap":
            exec_bwrap(cfg, chan, rep)
        boot_pid = os.getpid()
        child = os.fork()
        if child == 0:
            try:
                native_init(cfg, chan, rep, boot_pid)
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                chan.send(stage="error", error=f"{type(e).__name__}: {e}", **rep)
            os._exit(70)
        chan.send(stage="init", pid=child)
        os.waitpid(child, 0)  # returns once the PID namespace is torn down
    except OSError as e:
        chan.send(stage="error", error=f"{type(e).__name__}: {e}", **rep)
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
