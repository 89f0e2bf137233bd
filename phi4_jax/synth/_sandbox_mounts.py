"""Native backend: build the sandbox's private minimal root (stdlib only, run by the init).

Imported by ``_sandbox_boot.py`` inside a fresh mount namespace.  ``build_root`` mounts a
tmpfs over the (host) work dir path and assembles the new root in it: read-only recursive bind
mounts of the host paths in ``cfg['view']['binds']`` (same path inside), the symlinks of
``cfg['view']['symlinks']``, a tmpfs ``/dev`` with the five harmless device nodes bound in, a
fresh ``/proc`` (only with a PID namespace: a new proc instance shows only the sandbox's
processes, so ``/proc/1/cmdline`` is the sandbox init), size-limited tmpfs ``/tmp``,
``/dev/shm`` and work dir (the parent's files copied in), empty read-only tmpfs over
``covers``; then remounts the root tmpfs read-only and ``pivot_root``\\ s into it (falling back
to ``MS_MOVE`` + ``chroot`` where the old root cannot be pivoted, e.g. an initramfs), and
detaches the host's tree.  On failure before the switch it detaches the new root again, and the
caller records ``private_root`` as unavailable.  See ``_sandbox_paths.py`` for what is visible
and why.  ``reexpose`` serves the bubblewrap backend (see there).
"""

from __future__ import annotations

import ctypes
import os
import struct

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x2000, 0x4000, 0x40000
MNT_DETACH = 2
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# statvfs flags with the same bit values as MS_*, kept on a bind remount (locked in a userns).
KEEP_FLAGS = 0x1 | 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000
DEVICES = ("null", "zero", "full", "random", "urandom")

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.syscall.restype = ctypes.c_long


def _ok(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None
    _ok(LIBC.mount(enc(src), enc(target), enc(fstype), flags, enc(data or None)),
        f"mount {target}")


def _readonly(path: str, nodev: bool = True) -> None:
    """Make the bind mount at ``path`` (and its submounts) read-only and nosuid."""
    flags = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | (MOUNT_ATTR_NODEV if nodev else 0)
    attr = struct.pack("QQQQ", flags, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    if LIBC.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE, buf,
                    len(attr)) == 0:
        return
    keep = os.statvfs(path).f_flag & KEEP_FLAGS  # old kernel: this mount only
    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | keep |
          (MS_NODEV if nodev else 0))


def _mountpoint(path: str, like: str) -> None:
    """Create ``path`` (a dir, or an empty file when ``like`` is not a dir) and its parents."""
    if os.path.isdir(like):
        os.makedirs(path, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        if not os.path.lexists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _bind_ro(src: str, dst: str, nodev: bool = True) -> None:
    _mountpoint(dst, src)
    mount(src, dst, None, MS_BIND | MS_REC)
    _readonly(dst, nodev)


def _copy_tree(src_fd: int, dst: str, uid: int, gid: int) -> None:
    """Copy the parent's work dir (open as ``src_fd``, now hidden) into ``dst``."""
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


def _make_dev(root: str, shm_opts: str) -> None:
    dev = root + "/dev"
    os.makedirs(dev, 0o755, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _bind_ro(f"/dev/{name}", f"{dev}/{name}", nodev=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm", 0o1777)
    mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, shm_opts)
    mount(None, dev, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _pivot(root: str, rep: dict) -> None:
    """Make ``root`` the root directory and detach the host's tree from this namespace."""
    os.chdir(root)
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is not None and LIBC.syscall(nr, b".", b".") == 0:
        _ok(LIBC.umount2(b".", MNT_DETACH), "umount2(old root)")
    else:  # e.g. an initramfs root: move the new root over "/" and chroot into it
        rep["notes"].append(f"pivot_root refused ({os.strerror(ctypes.get_errno())}): "
                            "MS_MOVE + chroot")
        mount(root, "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def build_root(cfg: dict, rep: dict, uid: int, gid: int) -> None:
    """Assemble the minimal read-only root and switch to it (see the module docstring).  On
    failure before the switch the new root is detached again and the error re-raised."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    workdir = cfg["workdir"]
    work_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    root = workdir  # the new root's tmpfs hides the parent's files; work_fd still reads them
    try:
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
        try:
            _populate(root, cfg, rep, work_fd, uid, gid)
        except BaseException:
            LIBC.umount2(root.encode(), MNT_DETACH)
            rep["active"].pop("proc_remounted", None)
            raise
    finally:
        os.close(work_fd)
    _pivot(root, rep)
    rep["active"].update(private_root=True, readonly_root=True, private_tmp=True,
                         hidden_paths=cfg["view"]["hidden"])
    if cfg["view"]["exposed"]:
        rep["notes"].append(f"interpreter dirs visible read-only: {cfg['view']['exposed']}")


def _populate(root: str, cfg: dict, rep: dict, work_fd: int, uid: int, gid: int) -> None:
    view, workdir = cfg["view"], cfg["workdir"]
    tmp_opts = f"size={cfg['disk_mb'] * 1024}k,nr_inodes=4096,mode=1777"
    for link, target in view["symlinks"]:
        os.makedirs(os.path.dirname(root + link), 0o755, exist_ok=True)
        if not os.path.lexists(root + link):
            os.symlink(target, root + link)
    for src in view["binds"]:
        _bind_ro(src, root + src)
    _make_dev(root, tmp_opts)
    os.makedirs(root + "/proc", 0o555, exist_ok=True)
    if rep["active"].get("pid_namespace"):
        mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        rep["active"]["proc_remounted"] = True
    else:
        rep["notes"].append("no PID namespace: no /proc inside (the host's is not shown)")
    os.makedirs(root + "/tmp", 0o1777, exist_ok=True)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts)
    os.makedirs(root + workdir, 0o755, exist_ok=True)
    mount("tmpfs", root + workdir, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['disk_mb'] * 1024}k,nr_inodes=4096,mode=0700,uid={uid},gid={gid}")
    _copy_tree(work_fd, root + workdir, uid, gid)
    for hidden in view["covers"]:
        mount("tmpfs", root + hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
        mount(None, root + hidden, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def reexpose(view: dict, rep: dict) -> None:
    """For the bwrap backend, as root before the uid drop: in a private mount namespace, cover
    each ``view['untraversable']`` dir with a tmpfs and bind the sources inside it back, so the
    sandbox uid can resolve them (the rest of e.g. ``/root`` stays out of reach)."""
    tops = view["untraversable"]
    if not tops:
        return
    _ok(LIBC.unshare(0x00020000), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    inner = [(src, os.open(src, os.O_PATH)) for src in view["binds"]
             if any(src.startswith(t + "/") for t in tops)]
    for top in tops:
        mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    for src, fd in inner:
        _mountpoint(src, f"/proc/self/fd/{fd}")
        mount(f"/proc/self/fd/{fd}", src, None, MS_BIND | MS_REC)
        os.close(fd)
    rep["notes"].append(f"re-exposed for the sandbox uid: {[src for src, _ in inner]}")
