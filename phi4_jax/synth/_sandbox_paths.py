"""What of the host filesystem a sandboxed program sees: the minimal read-only view.

With a mount namespace the sandbox builds a fresh root (tmpfs, ``pivot_root``) holding only:

* the system dirs ``/usr``, ``/bin``, ``/sbin``, ``/lib``, ``/lib32``, ``/lib64``, ``/libx32``
  (merged-usr symlinks are reproduced as symlinks),
* the curated ``/etc`` entries in :data:`ETC_ENTRIES` (dynamic loader, time zone, name service,
  MIME types, ``hostname``/``hosts``, Debian's ``python3*`` config),
* the interpreter: its prefix, base prefix and (for a venv) the venv dir, plus every symlink on
  the way to them -- e.g. a pyenv under ``/root`` appears without the rest of ``/root``,
* ``/dev/{null,zero,full,random,urandom}``, a fresh ``/proc`` (PID namespace only), and the
  writable size-limited tmpfs mounts ``/tmp``, ``/dev/shm`` and the run's work dir.

Everything else -- ``/run``, ``/var``, ``/tmp`` and ``/proc`` of the host, homes, the project
checkout, ``/sys``, ``/opt``, ``/mnt`` ... -- does not exist inside.  That is also what keeps
host AF_UNIX path sockets unreachable (``connect()`` needs the path).  ``hide_paths`` that lie
inside a visible dir are covered with an empty read-only tmpfs.
"""

from __future__ import annotations

import functools
import glob
import os
import stat
import sys

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
               "hostname", "hosts", "nsswitch.conf", "host.conf", "passwd", "group",
               "mime.types", "os-release", "alternatives")  # + python3* (Debian)
DEVICES = ("null", "zero", "full", "random", "urandom")


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _symlinks_on(path: str, out: list[tuple[str, str]], depth: int = 0) -> None:
    """Append ``(link, target)`` for every symlink met while resolving ``path`` (the link's
    parent given as a real path), following targets recursively, so the same lookup works
    inside the sandbox's root."""
    if depth > 16:
        return
    cur = "/"
    parts = [p for p in os.path.abspath(path).split("/") if p]
    for i, part in enumerate(parts):
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            target = os.readlink(nxt)
            out.append((nxt, target))
            rest = "/".join(parts[i + 1:])
            _symlinks_on(os.path.join(os.path.dirname(nxt), target, rest), out, depth + 1)
            return
        cur = nxt


def _interpreter_dirs(python: str) -> list[str]:
    real = os.path.realpath(python)
    dirs = [os.path.dirname(real), os.path.dirname(os.path.dirname(real))]
    if real == os.path.realpath(sys.executable):
        dirs += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    return [d for d in dirs if os.path.isdir(d)]


@functools.lru_cache(maxsize=16)
def view(python: str, hide_paths: tuple[str, ...]) -> dict[str, list]:
    """The read-only view for ``python``: ``binds`` (real host paths, bound at the same path),
    ``symlinks`` ``(path, target)`` to create, ``covers`` (hidden dirs inside a bind),
    ``hidden`` (the existing ``hide_paths``, none of which is visible), ``exposed`` (the
    interpreter dirs that lie inside a hidden path and are visible anyway), ``untraversable``
    (see :func:`_untraversable`)."""
    wanted = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    wanted += [f"/etc/{e}" for e in ETC_ENTRIES if os.path.lexists(f"/etc/{e}")]
    wanted += sorted(glob.glob("/etc/python3*"))
    interp = _interpreter_dirs(python)
    links: list[tuple[str, str]] = []
    for p in [*wanted, *interp, python]:
        _symlinks_on(p, links)
    reals = {os.path.realpath(p) for p in [*wanted, *interp] if os.path.exists(p)} - {"/"}
    binds = sorted(r for r in reals if not any(r != o and _inside(r, o) for o in reals))
    symlinks = sorted({(link, target) for link, target in links
                       if not any(_inside(link, b) for b in binds)})
    hidden = sorted({os.path.realpath(h) for h in hide_paths if os.path.isdir(h)})
    covers = [h for h in hidden if any(h != b and _inside(h, b) for b in binds)]
    exposed = [b for b in binds if any(_inside(b, h) for h in hidden)]
    return {"binds": binds, "symlinks": symlinks, "covers": covers, "hidden": hidden,
            "exposed": exposed, "untraversable": _untraversable(binds)}


def _untraversable(binds: list[str]) -> list[str]:
    """The outermost dirs on the way to a bind source that other users cannot search (e.g.
    ``/root`` on the way to a pyenv): bwrap, running as the sandbox uid, resolves its sources
    by path, so the bootstrap re-exposes those sources in a private mount namespace first."""
    found = set()
    for b in binds:
        parts = b.split("/")
        for i in range(2, len(parts)):
            anc = "/".join(parts[:i])
            if not os.stat(anc).st_mode & stat.S_IXOTH:
                found.add(anc)
                break
    return sorted(found)
