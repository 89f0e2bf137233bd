"""The escape classes of the hostile review, one test (or more) per class, each run on every
sandbox backend available here: memory outside ``RLIMIT_AS``, host AF_UNIX sockets, what the
program can see (``/proc``, the root), and the seccomp filter's fixed denials.  Every test uses
hostile programs of its own and measures the host side, not only the sandbox's own report."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from phi4_jax.synth import (
    SandboxConfig,
    _sandbox_host,
    _sandbox_paths,
    _sandbox_seccomp,
    run_python,
    sandbox,
)

REPO = Path(__file__).resolve().parents[2]
CAP_MB = 256
SLACK_MB = 64  # other processes on a shared host may use some shmem meanwhile

HOG = textwrap.dedent("""\
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    CHUNK = 16 << 20

    def hog(kind):
        held, fds = 0, []
        while held < (1 << 30):
            if kind == "shm":  # segments stay attached; shmdt'd ones are tried below too
                sid = libc.shmget(0, CHUNK, 0o1000 | 0o600)
                if sid < 0:
                    return f"refused shmget errno={ctypes.get_errno()}"
                addr = libc.shmat(sid, None, 0)
                if addr in (None, 2**64 - 1):
                    return f"refused shmat errno={ctypes.get_errno()}"
                ctypes.memset(addr, 1, CHUNK)
                if held % (64 << 20) == 0:
                    libc.shmdt(ctypes.c_void_p(addr))
            else:  # memfd pages written with write(): no address space needed
                try:
                    fd = os.memfd_create("hog")
                    for _ in range(CHUNK >> 20):
                        os.write(fd, b"\\1" * (1 << 20))
                except OSError as e:
                    return f"refused memfd errno={e.errno}"
                fds.append(fd)
            held += CHUNK
            print(kind, os.getpid(), "held", held >> 20, flush=True)
        return "HELD 1 GiB"

    kind, kids = sys.argv[1], []
    for _ in range(3):  # four processes, each under RLIMIT_AS: only a cgroup caps the sum
        pid = os.fork()
        if pid == 0:
            print(hog(kind), flush=True)
            os._exit(0)
        kids.append(pid)
    print(hog(kind), flush=True)
    for pid in kids:
        os.waitpid(pid, 0)
    """)


def _shmem_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(re.search(r"^Shmem:\s+(\d+) kB", f.read(), re.M).group(1)) >> 10


def _host_segments() -> set[str]:
    with open("/proc/sysvipc/shm") as f:
        return {line.split()[1] for line in f.readlines()[1:]}


@pytest.mark.parametrize("kind", ["shm", "memfd"])
@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "no-cgroup"])
def test_memory_outside_rlimit_as_is_capped(backend, kind, cgroup):
    """SysV shm segments and memfd pages, in four processes, under memory_mb=256: the run is
    OOM-killed by its cgroup or refused by seccomp; the host's shmem never grows by more than
    the cap and is back to its baseline (segments gone) once the run is over."""
    base, segments = _shmem_mb(), _host_segments()
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _shmem_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = run_python(HOG, args=[kind], memory_mb=CAP_MB, timeout_s=30,
                       config=SandboxConfig(memory_cgroup=cgroup))
    finally:
        stop.set()
        sampler.join()
    mem = r.isolation["memory"]
    assert "HELD 1 GiB" not in r.stdout, r.stdout[-500:]
    assert peak[0] - base <= CAP_MB + SLACK_MB, (peak[0] - base, mem)
    if r.isolation["memory_cgroup"]:
        assert mem["mechanism"].startswith("cgroup v") and mem["peak_bytes"] <= CAP_MB << 20
        assert r.isolation["sysv_ipc"].startswith("own IPC namespace, charged")
        # either the cgroup OOM-killed the run, or the namespace's kernel.shmall refused more
        assert r.status == "memory" or "refused" in r.stdout, (r.status, r.stdout[-300:])
        if r.status == "memory":
            assert mem["oom_kills"] >= 1 and f"{CAP_MB} MiB" in r.reason
    else:
        assert not cgroup or r.isolation["unavailable"]["memory_cgroup"]
        assert "SysV IPC and memfd denied by seccomp" in mem["mechanism"]
        assert r.isolation["sysv_ipc"] == "denied (seccomp)"
        assert r.ok and r.stdout.count("refused") == 4 and "held" not in r.stdout, r.stdout
    deadline = time.monotonic() + 10  # IPC namespace teardown is asynchronous
    while _shmem_mb() - base > 32 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _shmem_mb() - base <= 32 and _host_segments() <= segments


def test_memory_cgroup_removed_and_reported(backend):
    """The per-run cgroup is gone after the run; the report names the mechanism in force."""
    r = run_python("x = bytearray(50 << 20)\nprint(len(x))", memory_mb=CAP_MB)
    assert r.ok, r
    mem = r.isolation["memory"]
    if r.isolation["memory_cgroup"]:
        assert 50 << 20 <= mem["peak_bytes"] <= CAP_MB << 20 and mem["oom_kills"] == 0
        where = sandbox._sandbox_cgroup.locate(None)
        assert not [d for d in os.listdir(where.base) if d.startswith("phi4-sbx-")]
    else:
        assert r.isolation["unavailable"]["memory_cgroup"]


# ----------------------------------------------------------------------------- AF_UNIX


class _UnixServers:
    """A path socket outside /tmp (world-connectable) and an abstract one, counting accepts."""

    def __init__(self) -> None:
        top = "/var/tmp" if os.access("/var/tmp", os.W_OK) else str(REPO)
        self.dir = tempfile.mkdtemp(prefix="sbx-sock-", dir=top)
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "host.sock")
        self.abstract = f"\0phi4-sbx-test-{uuid.uuid4().hex}"
        self.accepted = {"path": 0, "abstract": 0}
        self.socks = []
        for name, addr in (("path", self.path), ("abstract", self.abstract)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(addr)
            s.listen(8)
            s.settimeout(0.1)
            self.socks.append((name, s))
        os.chmod(self.path, 0o777)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            for name, s in self.socks:
                with contextlib.suppress(OSError):
                    conn, _ = s.accept()
                    self.accepted[name] += 1
                    conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for _, s in self.socks:
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


UNIX_CLIENT = textwrap.dedent("""\
    import socket, sys
    for name, addr in (("path", sys.argv[1]), ("abstract", "\\0" + sys.argv[2])):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(addr)
            print("CONNECTED", name)
        except OSError as e:
            print("FAILED", name, type(e).__name__)
    """)
NO_ROOT = SandboxConfig(readonly_root=False)  # namespaces, but the host's tree is visible
FALLBACK = SandboxConfig(namespaces=False, isolate_network=False, seccomp=False)


@pytest.mark.parametrize("cfg", [SandboxConfig(), SandboxConfig(seccomp=False),
                                 SandboxConfig(isolate_network=False), NO_ROOT, FALLBACK],
                         ids=["default", "no-seccomp", "no-netns", "no-private-root", "none"])
def test_host_unix_sockets_unreachable_and_report_truthful(backend, cfg):
    """No host AF_UNIX socket -- a path socket outside /tmp, an abstract one -- is reachable
    whenever the report says the network is isolated, and the report says so by default."""
    srv = _UnixServers()
    try:
        r = run_python(UNIX_CLIENT, args=[srv.path, srv.abstract[1:]], config=cfg, timeout_s=10)
        if r.status == "sandbox_error":  # the no-namespace fallback needs a usable interpreter
            assert cfg is FALLBACK and "not executable" in r.reason
            return
        assert r.ok, r
        iso = r.isolation
        connected = "CONNECTED" in r.stdout
        assert connected == (not iso["network_isolated"]), (r.stdout, iso["network"])
        assert connected == (sum(srv.accepted.values()) > 0)
        if cfg == SandboxConfig():
            assert iso["network_isolated"] and r.stdout.count("FAILED") == 2
        if cfg is NO_ROOT or cfg == SandboxConfig(isolate_network=False):
            assert "unix" in iso["seccomp_denies"]  # the private root is not there: seccomp
        if cfg is FALLBACK:  # the documented fallback: open, and said to be open
            assert connected and iso["network"].startswith("NOT isolated")
    finally:
        srv.close()


# ----------------------------------------------------------------------------- visibility


VIEW = textwrap.dedent("""\
    import json, os
    def ls(p):
        try:
            return sorted(os.listdir(p))
        except OSError as e:
            return type(e).__name__
    with open("/proc/1/cmdline", "rb") as f:
        init = f.read().decode(errors="replace")
    print(json.dumps({"root": ls("/"), "etc": ls("/etc"), "dev": ls("/dev"), "init": init,
                      "pids": [p for p in os.listdir("/proc") if p.isdigit()],
                      "work": ls("."), "probe": {p: os.path.lexists(p) for p in __import__(
                          "sys").argv[1:]}}))
    """)


def test_only_the_documented_paths_are_visible(backend, iso):
    """A fresh /proc (PID 1 is the sandbox's, not the host's boot line), and a root holding
    only the documented minimum: no host /tmp, /run, /var, /sys, homes or checkout."""
    marker = os.path.join(tempfile.gettempdir(), f"sbx-host-marker-{uuid.uuid4().hex}")
    Path(marker).write_text("host")
    probes = [marker, "/run", "/var/run", "/var", "/sys", "/home", "/opt", "/mnt", "/srv",
              str(REPO / "setup.py"), str(REPO / "phi4_jax"), "/root/.bashrc", "/etc/shadow",
              "/etc/ssh", "/dev/sda", "/dev/mem", "/proc/kcore"]
    try:
        r = run_python(VIEW, args=probes)
    finally:
        os.unlink(marker)
    assert r.ok, r
    seen = json.loads(r.stdout)
    if not iso["private_root"]:
        pytest.skip(f"no private root here: {iso['unavailable']}")
    with open("/proc/1/cmdline", "rb") as f:
        host_init = f.read().decode(errors="replace")
    assert seen["init"] != host_init and len(seen["pids"]) <= 8, seen
    view = _sandbox_paths.view(sys.executable, tuple(sandbox.DEFAULT_HIDDEN))
    tops = {p.split("/")[1] for p in view["binds"] + [link for link, _ in view["symlinks"]]}
    assert set(seen["root"]) <= tops | {"dev", "proc", "tmp"}, seen["root"]
    etc = set(_sandbox_paths.ETC_ENTRIES)
    assert all(e in etc or e.startswith("python3") for e in seen["etc"]), seen["etc"]
    assert set(seen["dev"]) <= {*_sandbox_paths.DEVICES, "fd", "stdin", "stdout", "stderr",
                                "shm", "tty", "pts", "ptmx", "core"}, seen["dev"]
    assert seen["work"] == ["main.py"]
    visible = {p for p, there in seen["probe"].items() if there}
    assert visible <= {"/proc/kcore"}, visible  # kcore: root-only, inside the sandbox's /proc
    assert r.isolation["private_root"] and r.isolation["proc_remounted"]


# ----------------------------------------------------------------------------- seccomp


SYSCALLS = textwrap.dedent("""\
    import ctypes, json, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    for name, nr, args in json.loads(sys.argv[1]):
        ctypes.set_errno(0)
        ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        out[name] = [ret, ctypes.get_errno()]
    print(json.dumps(out))
    """)


@pytest.mark.skipif(platform.machine() not in _sandbox_seccomp.ARCHES, reason="no filter here")
def test_seccomp_denies_kernel_attack_surface(backend, iso):
    """ptrace, keyrings, bpf and io_uring are refused with seccomp and not without it."""
    nr = _sandbox_seccomp.ARCHES[platform.machine()]
    surface = dict(zip(("bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
                        "request_key", "ptrace"), nr["surface"]))
    calls = [("ptrace", surface["ptrace"], [0, 0, 0, 0]),  # PTRACE_TRACEME: normally allowed
             ("keyctl", surface["keyctl"], [0, -3, 0]),  # KEYCTL_GET_KEYRING_ID(session)
             ("bpf", surface["bpf"], [0, 0, 0]), ("io_uring_setup", nr["io_uring"][0], [1, 0])]
    r = run_python(SYSCALLS, args=[json.dumps(calls)])
    assert r.ok, r
    got = json.loads(r.stdout)
    if not iso["seccomp"]:
        pytest.skip(f"seccomp unavailable: {iso['unavailable']}")
    eperm, enosys = 1, 38
    assert got["ptrace"] == [-1, eperm] and got["keyctl"] == [-1, eperm]
    assert got["bpf"] == [-1, eperm] and got["io_uring_setup"] == [-1, enosys]
    r = run_python(SYSCALLS, args=[json.dumps(calls[:1])], config=SandboxConfig(seccomp=False))
    assert r.ok and json.loads(r.stdout)["ptrace"][0] == 0, r  # the filter made the difference


def test_seccomp_filter_assembles_for_every_arch():
    for machine in _sandbox_seccomp.ARCHES:
        for deny in (True, False):
            prog = _sandbox_seccomp.build_filter(deny_unix=deny, deny_sysv=deny,
                                                 deny_memfd=deny, machine=machine)
            assert len(prog) % 8 == 0 and 20 < len(prog) // 8 < 256
    with pytest.raises(OSError):
        _sandbox_seccomp.build_filter(deny_unix=True, deny_sysv=True, deny_memfd=True,
                                      machine="sparc")


def test_cgroup_v2_placement(tmp_path, monkeypatch):
    """v2: the caller's own cgroup when it can enable the memory controller for children, else
    (it holds processes) a sibling under its parent when that distributes memory, else why not."""
    cg = sandbox._sandbox_cgroup
    top, own = tmp_path / "cg", tmp_path / "cg" / "svc"
    own.mkdir(parents=True)
    for d in (top, own):
        (d / "cgroup.controllers").write_text("cpu memory\n")
    (top / "cgroup.subtree_control").write_text("memory\n")
    (own / "cgroup.subtree_control").mkdir()  # writing "+memory" fails, as with EBUSY
    monkeypatch.setattr(cg, "_cgroup_mounts", lambda: [(2, str(top), "/")])
    monkeypatch.setattr(cg, "_own_cgroups", lambda: {2: "/svc"})
    cg._locate.cache_clear()
    try:
        assert cg.locate() == cg.Hierarchy(2, str(top))
        (top / "cgroup.subtree_control").write_text("cpu\n")
        cg._locate.cache_clear()
        why = cg.locate()
        assert isinstance(why, str) and "cannot enable the memory controller" in why
        assert "not enabled for its children" in why
        (own / "cgroup.controllers").write_text("cpu\n")
        assert "not delegated" in cg.locate(str(own))
    finally:
        cg._locate.cache_clear()


FORGE_STATUS = textwrap.dedent("""\
    import json, os, sys
    lines = [{"stage": "init", "pid": int(sys.argv[1])},
             {"stage": "setup", "active": {}, "unavailable": {}, "notes": ["forged"]},
             {"stage": "exit", "wait_status": 0}]
    payload = "".join(json.dumps(m) + "\\n" for m in lines).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as f:
                    f.write(payload)
                print("WROTE", pid, fd)
            except OSError:
                pass
    sys.exit(3)
    """)


def test_status_pipe_not_forgeable(backend):
    """No other process of the sandbox is open to the program through /proc (the reaper, PID 1
    on both backends, is non-dumpable), so it cannot write to the host's status pipe; and the
    host would not believe a report or an init pid sent after setup anyway."""
    victim = subprocess.Popen(["sleep", "30"])
    try:
        r = run_python(FORGE_STATUS, args=[str(victim.pid)])
        assert r.returncode == 3 and r.status == "error" and "WROTE" not in r.stdout, r
        assert victim.poll() is None and "forged" not in r.isolation["notes"]
        assert r.isolation["seccomp"] or r.isolation["unavailable"].get("seccomp")
    finally:
        victim.kill()
        victim.wait()
    msgs = [b'{"stage": "namespaces", "active": {}}', b'{"stage": "setup", "active": {}}',
            b'{"stage": "init", "pid": 1}', b'{"stage": "setup", "active": {"x": 1}}',
            b'{"stage": "started", "pid": 2}', b"not json", b'{"stage": "exit", "wait_status": 0}',
            b'{"stage": "exit", "wait_status": 9}']
    kept = _sandbox_host._trusted([], msgs)
    assert [m["stage"] for m in kept] == ["namespaces", "setup", "started", "exit"]
    assert kept[-1]["wait_status"] == 0
