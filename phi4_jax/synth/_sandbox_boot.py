"""Sandbox bootstrap, run as its own interpreter: ``python -I -S _sandbox_boot.py CONFIG_JSON``.

It is started by :mod:`phi4_jax.synth.sandbox` (never imported by it) so that the isolation steps
run in a fresh single-threaded process instead of a ``preexec_fn`` (which is unsafe in the threaded
batch runner).  Stdlib only, no package imports.  Steps, each recorded on the status pipe:

1. ``unshare`` network / mount / PID / IPC namespaces (through a user namespace when not root);
   every namespace that the kernel refuses is recorded with its errno and skipped.
2. ``fork`` an *init* process (PID 1 of the new PID namespace).  It makes ``/`` read-only, mounts
   private tmpfs on ``/tmp``, ``/dev/shm`` and the work dir (copying the parent's files in), hides
   homes / the checkout under empty tmpfs (binding the interpreter back), mounts a fresh
   ``/proc``; sets the rlimits; drops to the sandbox uid/gid; sets ``no_new_privs`` and a seccomp
   filter; then forks the user program and reaps until it exits.  When PID 1 exits the kernel
   kills everything left in the namespace (background children included).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys

CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = (
    442, -100, 0x8000, 0x1, 0x2)
# statvfs flags that have the same bit values as MS_* and must be kept on a bind remount.
KEEP_FLAGS = 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000
# Per machine, for the seccomp filter: audit arch, x32 syscall bit, and syscall numbers.
SECCOMP_ARCH = {
    "x86_64": dict(audit=0xC000003E, x32=0x40000000, socket=41, io_uring_setup=425, clone=56,
                   unshare=272, clone3=435),
    "aarch64": dict(audit=0xC00000B7, x32=0, socket=198, io_uring_setup=425, clone=220,
                    unshare=97, clone3=435),
}
CLONE_NEW_ANY = 0x7E020080  # every CLONE_NEW* namespace flag

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
LIBC.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
LIBC.syscall.restype = ctypes.c_long


def _ok(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = lambda s: s.encode() if s is not None else None
    _ok(LIBC.mount(enc(src), enc(target), enc(fstype), flags, enc(data or None)),
        f"mount {target}")


def _prctl(option: int, arg: int = 0) -> None:
    _ok(LIBC.prctl(option, arg, 0, 0, 0), f"prctl {option}")


class Channel:
    """JSON lines to the parent; each line is well below PIPE_BUF, so writes are atomic."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_inheritable(fd, False)

    def send(self, **msg: object) -> None:
        os.write(self.fd, (json.dumps(msg) + "\n").encode())


def unshare_namespaces(cfg: dict, rep: dict) -> None:
    """Enter new namespaces one by one; a refused one is recorded in ``rep['unavailable']``."""
    wanted = []
    if cfg["isolate_network"]:
        wanted.append(("network_namespace", CLONE_NEWNET))
    if cfg["namespaces"]:
        wanted += [("mount_namespace", CLONE_NEWNS), ("pid_namespace", CLONE_NEWPID),
                   ("ipc_namespace", CLONE_NEWIPC)]
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


def _make_root_readonly(rep: dict) -> None:
    """Recursively remount everything read-only (mount_setattr, else one bind remount each)."""
    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    if LIBC.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, buf, len(attr)) == 0:
        rep["active"]["readonly_root"] = True
        return
    failed = []
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for mp in points:
        try:
            keep = os.statvfs(mp).f_flag & KEEP_FLAGS
            _mount(None, mp, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | keep)
        except OSError:
            failed.append(mp)
    if "/" in failed:
        raise OSError(f"cannot remount / read-only (failed: {failed[:5]})")
    rep["active"]["readonly_root"] = True
    if failed:
        rep["notes"].append(f"mounts left writable: {failed[:10]}")


def _copy_tree(src_fd: int, dst: str, uid: int, gid: int) -> None:
    """Copy the parent's work dir (open as ``src_fd``, now hidden under a tmpfs) into ``dst``."""
    for entry in os.scandir(src_fd):
        target = os.path.join(dst, entry.name)
        if entry.is_dir(follow_symlinks=False):
            os.mkdir(target, 0o700)
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                _copy_tree(sub, target, uid, gid)
            finally:
                os.close(sub)
        elif entry.is_file(follow_symlinks=False):
            fd_in = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
            with os.fdopen(fd_in, "rb") as fin, open(target, "wb") as fout:
                fout.write(fin.read())
            os.chmod(target, 0o700 if entry.stat().st_mode & 0o100 else 0o600)
        else:
            continue
        os.chown(target, uid, gid)


def setup_filesystem(cfg: dict, rep: dict, uid: int, gid: int) -> None:
    """Private mounts: read-only ``/``, fresh tmpfs for /tmp, /dev/shm and the work dir."""
    workdir, tmp_kb = cfg["workdir"], cfg["disk_mb"] * 1024
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    work_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    exposed = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in cfg["expose"]]
    if cfg["readonly_root"]:
        try:
            _make_root_readonly(rep)
        except OSError as e:
            rep["unavailable"]["readonly_root"] = str(e)
        opts = f"size={tmp_kb}k,nr_inodes=4096,mode=1777"
        try:
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
            if os.path.isdir("/dev/shm"):
                _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts)
            rep["active"]["private_tmp"] = True
        except OSError as e:
            rep["unavailable"]["private_tmp"] = str(e)
    hidden = [d for d in cfg["hide"] if os.path.isdir(d)]
    for d in hidden:  # e.g. /root, /home, the project checkout: replaced by an empty tmpfs
        _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for path, fd in exposed:  # interpreter dirs inside those (e.g. pyenv in /root, a venv)
        os.makedirs(path, 0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    for d in hidden:
        _mount(None, d, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if hidden:
        rep["active"]["hidden_paths"] = hidden
        rep["notes"].append(f"interpreter dirs re-exposed read-only: {cfg['expose']}")
    os.makedirs(workdir, 0o700, exist_ok=True)
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={tmp_kb}k,nr_inodes=4096,mode=0700,uid={uid},gid={gid}")
    _copy_tree(work_fd, workdir, uid, gid)
    os.close(work_fd)
    if rep["active"].get("pid_namespace"):
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        rep["active"]["proc_remounted"] = True


def _chown_tree(path: str, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
    os.chown(path, uid, gid)


def _count_processes(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            count += name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid
    return count


def set_rlimits(lim: dict, rep: dict) -> None:
    """Apply limits, never above the current hard limits (which cannot be raised)."""
    table = {"cpu_s": (resource.RLIMIT_CPU, 1), "memory_bytes": (resource.RLIMIT_AS, 0),
             "file_bytes": (resource.RLIMIT_FSIZE, 0), "open_files": (resource.RLIMIT_NOFILE, 0),
             "processes": (resource.RLIMIT_NPROC, 0), "core_bytes": (resource.RLIMIT_CORE, 0)}
    applied = {}
    for key, (res, extra_hard) in table.items():
        soft, hard = lim[key], lim[key] + extra_hard  # CPU: SIGXCPU at soft, SIGKILL at hard
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))
        applied[key] = soft
    rep["rlimits"] = applied


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError("privilege drop did not stick")


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def install_seccomp() -> None:
    """Deny: sockets other than AF_UNIX (EACCES), new namespaces via clone/unshare (EPERM; the
    user namespaces they need are a large kernel attack surface), clone3 (ENOSYS, so libc falls
    back to the inspectable clone), io_uring, x32 and foreign-arch syscalls (ENOSYS)."""
    nr = SECCOMP_ARCH.get(platform.machine())
    if nr is None:
        raise OSError(f"no seccomp filter for {platform.machine()}")
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eacces, eperm, enosys = 0x7FFF0000, 0x00050000 | 13, 0x00050000 | 1, 0x00050000 | 38
    prog = [_bpf(ld, 4), _bpf(jeq, nr["audit"], 1, 0), _bpf(ret, enosys), _bpf(ld, 0)]
    if nr["x32"]:
        prog += [_bpf(jge, nr["x32"], 0, 1), _bpf(ret, enosys)]
    prog += [
        _bpf(jeq, nr["io_uring_setup"], 0, 1), _bpf(ret, enosys),
        _bpf(jeq, nr["clone3"], 0, 1), _bpf(ret, enosys),
        _bpf(jeq, nr["clone"], 1, 0), _bpf(jeq, nr["unshare"], 0, 4),
        _bpf(ld, 16), _bpf(jset, CLONE_NEW_ANY, 0, 1), _bpf(ret, eperm), _bpf(ret, allow),
        _bpf(jeq, nr["socket"], 0, 3), _bpf(ld, 16), _bpf(jeq, 1, 1, 0),  # args[0] == AF_UNIX
        _bpf(ret, eacces), _bpf(ret, allow)]
    filt = ctypes.create_string_buffer(b"".join(prog))
    fprog = ctypes.create_string_buffer(struct.pack("HP", len(prog), ctypes.addressof(filt)))
    _ok(LIBC.prctl(PR_SET_SECCOMP, 2, ctypes.addressof(fprog), 0, 0), "seccomp")


def init_process(cfg: dict, chan: Channel, rep: dict, boot_pid: int) -> None:
    """Set up the sandbox, run the user program, report its wait status, exit."""
    root = os.geteuid() == 0
    drop = root and cfg["uid"] is not None
    uid, gid = (cfg["uid"], cfg["gid"]) if drop else (os.getuid(), os.getgid())
    if rep["active"].get("mount_namespace"):
        setup_filesystem(cfg, rep, uid, gid)
    elif drop:
        _chown_tree(cfg["workdir"], uid, gid)
    os.chdir(cfg["workdir"])
    limits = dict(cfg["limits"])
    if not root:  # RLIMIT_NPROC counts all of the uid's processes (per user ns on new kernels)
        limits["processes"] += _count_processes(uid)
    set_rlimits(limits, rep)
    if drop:
        drop_privileges(uid, gid)
        rep["active"]["privileges_dropped"] = True
    elif root:
        rep["unavailable"]["privileges_dropped"] = "disabled by config (runs as root!)"
    else:
        rep["notes"].append("not root: the program runs as the caller's uid")
    rep["uid"], rep["gid"] = os.getuid(), os.getgid()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    rep["active"]["no_new_privs"] = True
    if cfg["seccomp"]:
        try:
            install_seccomp()
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
    rep["interpreter"] = argv[0]
    if cfg["strict"] and rep["unavailable"]:
        raise OSError(f"strict mode, protections unavailable: {rep['unavailable']}")
    chan.send(stage="setup", **rep)
    child = os.fork()
    if child == 0:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(argv[0], argv, os.environ)
        finally:
            os._exit(127)
    while True:  # as PID 1 this also reaps orphans
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    chan.send(stage="exit", wait_status=status)
    os._exit(0)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    chan = Channel(cfg["status_fd"])
    rep: dict = {"active": {}, "unavailable": {}, "notes": []}
    try:
        unshare_namespaces(cfg, rep)
        chan.send(stage="namespaces", **rep)
        boot_pid = os.getpid()
        child = os.fork()
        if child == 0:
            try:
                init_process(cfg, chan, rep, boot_pid)
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                chan.send(stage="error", error=f"{type(e).__name__}: {e}", **rep)
            os._exit(70)
        chan.send(stage="init", pid=child)
        os.waitpid(child, 0)  # returns once the PID namespace is torn down
    except OSError as e:
        chan.send(stage="error", error=f"{type(e).__name__}: {e}")
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
