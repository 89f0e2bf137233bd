"""The sandbox's seccomp filter: a classic-BPF program assembled by hand (stdlib only).

Imported by the bootstrap (``_sandbox_boot.py``, run as ``python -I -S``), so it must not import
the package.  ``build_filter`` returns the raw ``struct sock_filter`` array; ``install`` loads it
into the calling thread (native backend), and the bubblewrap backend hands the same bytes to
``bwrap --seccomp FD``.

What the filter denies (everything else is allowed):

* foreign-architecture and x32 syscalls, ``clone3`` (ENOSYS, so libc falls back to ``clone``,
  whose flags a classic BPF program can inspect), io_uring (ENOSYS);
* ``clone``/``unshare`` with any ``CLONE_NEW*`` flag, ``setns`` (EPERM): no new namespaces --
  user namespaces are a large kernel attack surface;
* ``socket()`` for every family but ``AF_UNIX`` (EACCES); with ``deny_unix`` for ``AF_UNIX`` too
  (used when host sockets could otherwise be reachable: no network namespace or no private
  root).  ``socketpair`` stays allowed: it cannot reach anything outside the process tree;
* with ``deny_sysv``: every System V IPC call (shared memory, semaphores, message queues), with
  ``deny_memfd``: ``memfd_create``/``memfd_secret`` (EPERM) -- both hold memory outside
  ``RLIMIT_AS`` and are denied whenever no memory cgroup (plus, for SysV, an IPC namespace)
  bounds them;
* kernel attack surface no Python program needs (EPERM): ``bpf``, ``perf_event_open``,
  ``userfaultfd``, the keyring calls, ``ptrace``/``process_vm_*``, module and kexec loading,
  ``open_by_handle_at``, every mount-API call, ``pivot_root``, ``chroot``, swap and reboot.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

AF_UNIX = 1
CLONE_NEW_ANY = 0x7E020080  # every CLONE_NEW* namespace flag
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
EPERM, EACCES, ENOSYS = 1, 13, 38

# Per machine: audit arch, x32 bit, syscall numbers (from asm/unistd_64.h / asm-generic).
ARCHES = {
    "x86_64": dict(
        audit=0xC000003E, x32=0x40000000, clone=56, unshare=272, socket=41, clone3=435,
        io_uring=(425, 426, 427), setns=308,
        sysv=(29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71), memfd=(319, 447),
        surface=(321, 298, 323, 250, 248, 249, 101, 310, 311, 175, 176, 313, 246, 320, 304,
                 165, 166, 428, 429, 430, 431, 432, 433, 442, 155, 161, 167, 168, 169)),
    "aarch64": dict(
        audit=0xC00000B7, x32=0, clone=220, unshare=97, socket=198, clone3=435,
        io_uring=(425, 426, 427), setns=268,
        sysv=(194, 196, 195, 197, 190, 193, 191, 192, 186, 189, 188, 187), memfd=(279, 447),
        surface=(280, 241, 282, 219, 217, 218, 117, 270, 271, 105, 106, 273, 104, 294, 265,
                 40, 39, 428, 429, 430, 431, 432, 433, 442, 41, 51, 224, 225, 142)),
}

_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data (arg0: low 32 bits, LE)


class _Asm:
    """A tiny assembler: conditional jumps may target labels defined later."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int, object, object]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: object = 0, jf: object = 0) -> None:
        self.ops.append((code, k & 0xFFFFFFFF, jt, jf))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ops)

    def ret(self, value: int) -> None:
        self.op(_RET, value)

    def assemble(self) -> bytes:
        out = []
        for i, (code, k, jt, jf) in enumerate(self.ops):
            rel = [self.labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)]
            if any(not 0 <= r < 256 for r in rel):
                raise ValueError("seccomp jump out of range")
            out.append(struct.pack("HBBI", code, rel[0], rel[1], k))
        return b"".join(out)


def build_filter(*, deny_unix: bool, deny_sysv: bool, deny_memfd: bool,
                 machine: str | None = None) -> bytes:
    """The filter for this machine's architecture (``OSError`` if it has none)."""
    nr = ARCHES.get(machine or platform.machine())
    if nr is None:
        raise OSError(f"no seccomp filter for {machine or platform.machine()}")
    errno = lambda e: RET_ERRNO | e  # noqa: E731
    deny: list[tuple[int, int]] = [(nr["clone3"], ENOSYS)]
    deny += [(n, ENOSYS) for n in nr["io_uring"]]
    deny += [(n, EPERM) for n in (nr["setns"], *nr["surface"])]
    deny += [(n, EPERM) for n in nr["sysv"]] if deny_sysv else []
    deny += [(n, EPERM) for n in nr["memfd"]] if deny_memfd else []
    a = _Asm()
    a.op(_LD, _OFF_ARCH)
    a.op(_JEQ, nr["audit"], 1, 0)
    a.ret(errno(ENOSYS))
    a.op(_LD, _OFF_NR)
    if nr["x32"]:
        a.op(_JGE, nr["x32"], 0, 1)
        a.ret(errno(ENOSYS))
    for num, err in deny:
        a.op(_JEQ, num, 0, 1)
        a.ret(errno(err))
    a.op(_JEQ, nr["clone"], "flags", 0)
    a.op(_JEQ, nr["unshare"], "flags", 0)
    a.op(_JEQ, nr["socket"], "socket", 0)
    a.ret(RET_ALLOW)
    a.label("flags")
    a.op(_LD, _OFF_ARG0)
    a.op(_JSET, CLONE_NEW_ANY, 0, 1)
    a.ret(errno(EPERM))
    a.ret(RET_ALLOW)
    a.label("socket")
    if not deny_unix:
        a.op(_LD, _OFF_ARG0)
        a.op(_JEQ, AF_UNIX, 0, 1)
        a.ret(RET_ALLOW)
    a.ret(errno(EACCES))
    return a.assemble()


def install(prog: bytes) -> None:
    """``no_new_privs`` + load ``prog`` as this thread's seccomp filter (``OSError`` if not)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    filt = ctypes.create_string_buffer(prog, len(prog))
    fprog = ctypes.create_string_buffer(struct.pack("HP", len(prog) // 8, ctypes.addressof(filt)))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
