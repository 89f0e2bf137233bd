"""Bubblewrap backend: the ``bwrap`` command line for one run (stdlib only, used by the boot).

The bootstrap has already joined the run's cgroup, entered the network and IPC namespaces
(as root, so the program cannot reconfigure them), set the rlimits and dropped to the sandbox
uid; it then ``exec``\\ s the command built here.  ``bwrap`` (unprivileged, in a new user
namespace) adds the PID, mount, UTS and cgroup namespaces and builds the same minimal
read-only root as the native backend (``_sandbox_paths.view``; bind sources inside dirs the
sandbox uid cannot traverse, e.g. a pyenv under ``/root``, have been re-exposed by the
bootstrap in a private mount namespace, since bwrap resolves sources by path); the work dir
is a size-limited tmpfs filled with ``--file FD`` copies; ``--seccomp FD`` loads the same BPF
filter; ``--die-with-parent`` and ``--new-session`` as usual.  Inside, ``_sandbox_init.py``
(passed as ``-c`` source) is PID 1 (``--as-pid-1``: bwrap's own reaper would be a process of
the sandbox uid outside the seccomp filter, writable through ``/proc/1/mem``); it runs the
program and reports its raw wait status.
"""

from __future__ import annotations

import os
import shutil

INIT_SOURCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_init.py")


def find() -> str | None:
    """The ``bwrap`` executable on a standard PATH, or None."""
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def _inheritable(fd: int) -> str:
    os.set_inheritable(fd, True)
    return str(fd)


def open_sources(cfg: dict) -> dict:
    """Open the work dir's files before the uid drop: its subdirs, and (relative path, read fd,
    mode) for each file, copied into the sandbox's tmpfs work dir by ``--file``."""
    dirs, files = [], []
    top = cfg["workdir"]
    for root, dnames, fnames in os.walk(top):
        rel = os.path.relpath(root, top)
        for d in sorted(dnames):
            dirs.append(os.path.normpath(os.path.join(rel, d)))
        for name in sorted(fnames):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                mode = 0o700 if os.stat(path).st_mode & 0o100 else 0o600
                files.append((os.path.normpath(os.path.join(rel, name)),
                              os.open(path, os.O_RDONLY), mode))
    return {"dirs": dirs, "files": files}


def command(bwrap: str, cfg: dict, sources: dict, status_fd: int,
            seccomp_fd: int | None) -> list[str]:
    """The full argv: ``bwrap OPTIONS -- python -I -S -c INIT STATUS_FD PROGRAM_ARGV``."""
    view, work = cfg["view"], cfg["workdir"]
    size = str(cfg["disk_mb"] << 20)
    argv = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            "--disable-userns", "--die-with-parent", "--new-session", "--as-pid-1",
            "--hostname", "sandbox"]
    for link, target in view["symlinks"]:
        argv += ["--symlink", target, link]
    for src in view["binds"]:
        argv += ["--ro-bind", src, src]
    argv += ["--dev", "/dev", "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
             "--proc", "/proc", "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--perms", "0700", "--size", size, "--tmpfs", work]
    for rel in sources["dirs"]:
        argv += ["--perms", "0700", "--dir", os.path.join(work, rel)]
    for rel, fd, mode in sources["files"]:
        argv += ["--perms", f"{mode:04o}", "--file", _inheritable(fd), os.path.join(work, rel)]
    for hidden in view["covers"]:
        argv += ["--size", "4096", "--tmpfs", hidden, "--remount-ro", hidden]
    argv += ["--remount-ro", "/", "--chdir", work]
    if seccomp_fd is not None:
        argv += ["--seccomp", _inheritable(seccomp_fd)]
    with open(INIT_SOURCE_FILE, encoding="utf-8") as f:
        init_source = f.read()
    program = cfg["argv"]
    return [*argv, "--", program[0], "-I", "-S", "-c", init_source,
            _inheritable(status_fd), *program]
