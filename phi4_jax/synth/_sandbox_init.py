"""The sandbox's reaper: fork + exec the user program, report its raw wait status.

Stdlib only, and light (no ``json``).  The native backend imports it (its init, PID 1 of the
run's PID namespace, calls :func:`run_program`); the bubblewrap backend runs this file's source
inside the sandbox as ``python -I -S -c SOURCE STATUS_FD ARGV...`` (bwrap's own PID 1 only
reports ``128 + signal``, which cannot be told apart from an exit code).  The reaper keeps only
fds 0-2 and the status pipe and is non-dumpable, so the program (same uid) can neither ptrace it
nor open its ``/proc/<pid>/fd`` entries (e.g. to write to the status pipe); the program gets
``PDEATHSIG=SIGKILL``, the default SIGPIPE/SIGXFSZ dispositions, only fds 0-2, and
``oom_score_adj`` 1000 (a memory-cgroup OOM kill picks it, not the harness).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _send(fd: int, stage: str, key: str, value: int) -> None:
    os.write(fd, f'{{"stage": "{stage}", "{key}": {int(value)}}}\n'.encode())


def run_program(status_fd: int, argv: list[str]) -> None:
    """Run ``argv`` as a child with fds 0-2 only; report ``started`` and ``exit``; exit 0."""
    os.set_inheritable(status_fd, False)
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, 1 << 16)
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _send(status_fd, "started", "pid", os.getpid())
    child = os.fork()
    if child == 0:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("1000")
            except OSError:
                pass
            os.closerange(3, 1 << 16)
            os.execve(argv[0], argv, os.environ)
        finally:
            os._exit(127)
    while True:  # as PID 1 (native backend) this also reaps orphans
        pid, status = os.waitpid(-1, 0)
        if pid == child and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
            break  # (a ptrace stop of a PTRACE_TRACEME'd child is not the end)
    _send(status_fd, "exit", "wait_status", status)
    os._exit(0)


if __name__ == "__main__":
    run_program(int(sys.argv[1]), sys.argv[2:])
