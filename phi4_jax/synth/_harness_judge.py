"""Check harness, judge side: the sandbox's ``main.py`` for ``check_program`` (stdlib only).

The verdict is computed in this interpreter, which never runs candidate code:

1. it makes itself non-dumpable (the candidate, same uid, can neither ptrace it -- seccomp
   denies ptrace anyway -- nor read its memory or fds through ``/proc``),
2. reads and deletes ``.sbx_token`` and ``tests.py`` and compiles the tests,
3. starts the candidate worker (``_harness_worker.py``) as a fresh interpreter on two pipes,
4. builds the tests' namespace from its *own* builtins plus, for each of the candidate's
   top-level names, a copy of its plain value or a :class:`RemoteObject` proxy (names of
   builtins are left out, names of stdlib modules are the judge's own imports),
5. runs the tests and then the tests' own ``check(<entry_point>)``; calls into the candidate are
   requests to the worker, whose answers are decoded into fresh builtin values
   (``_harness_codec``), so a candidate that patches builtins, defines ``check``, replaces
   ``sys.exit``/``os._exit``/``print``/``AssertionError`` or returns an always-equal object
   changes only its own process,
6. kills the worker and writes one line ``<token> <json verdict>`` to stdout (exit 0 if passed,
   else 3).  The candidate never sees the token, so it cannot forge that line.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import json
import linecache
import os
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness_codec as codec  # noqa: E402

del sys.path[0]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness_worker.py")
_EXIT_ONLY = ("SystemExit", "KeyboardInterrupt", "GeneratorExit")
# Names the tests may use as oracles without importing them (the program's import): bound to the
# judge's own module whatever the candidate bound to them.  Never imported: side effects.
_ORACLE_MODULES = frozenset({
    "math", "cmath", "random", "re", "string", "itertools", "collections", "functools",
    "operator", "statistics", "fractions", "decimal", "heapq", "bisect", "copy", "hashlib",
    "json", "numbers", "sys", "os", "time", "datetime", "typing"})
_NEVER_IMPORT = frozenset({"this", "antigravity", "idlelib", "tkinter", "turtle", "turtledemo"})


class CandidateExit(BaseException):
    """The candidate's process ended or raised SystemExit; ``verdict`` says how to count it."""

    def __init__(self, verdict: str, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict


class CandidateError(Exception):
    """A non-builtin exception raised by the candidate (``name`` is its class name)."""

    def __init__(self, name: str, msg: str) -> None:
        super().__init__(f"{name}: {msg}" if msg else name)
        self.name = name


class RemoteObject:
    """A proxy for one of the candidate's objects: calls, attribute reads and iteration are
    requests to the worker.  Equality and hashing are by identity of the proxy."""

    __slots__ = ("_hid", "_kind", "_worker")

    def __init__(self, worker: Worker, hid: int, kind: str) -> None:
        object.__setattr__(self, "_worker", worker)
        object.__setattr__(self, "_hid", hid)
        object.__setattr__(self, "_kind", kind)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._worker.call(self, args, kwargs)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._worker.op(self, "getattr", name=name)

    def __iter__(self) -> object:
        return self._worker.op(self, "iter")

    def __next__(self) -> object:
        return self._worker.op(self, "next")

    def __len__(self) -> int:
        n = self._worker.op(self, "len")
        if type(n) is not int:
            raise TypeError("len() of a candidate object is not an int")
        return n

    def __bool__(self) -> bool:
        return self._worker.op(self, "bool") is True

    def __repr__(self) -> str:
        return f"<candidate {self._kind} object>"


class Worker:
    """The candidate's interpreter and the request/response protocol with it."""

    def __init__(self) -> None:
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        for fd in (req_r, resp_w):
            os.set_inheritable(fd, True)
        argv = [sys.executable, "-I", "-B", "-X", "utf8", WORKER, str(req_r), str(resp_w)]
        self.pid = os.posix_spawn(sys.executable, argv, dict(os.environ))
        os.close(req_r)
        os.close(resp_w)
        self.responses = os.fdopen(self.resp_r, "rb", buffering=1 << 16)
        self.proxies: dict[int, RemoteObject] = {}
        self.status: int | None = None

    def receive(self) -> dict:
        line = self.responses.readline(codec.MAX_LINE)
        if not line.endswith(b"\n"):
            raise CandidateExit(*self._ended())
        try:
            return codec.loads(line)
        except ValueError as e:
            raise CandidateError("ProtocolError", str(e)[:200]) from None

    def _ended(self) -> tuple[str, str]:
        self.stop()
        status = self.status or 0
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            return ("timeout" if sig == signal.SIGXCPU else "killed",
                    f"the candidate's process was killed by {name}")
        return "exited_early", f"the candidate exited (code {os.waitstatus_to_exitcode(status)})"

    def stop(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.status = os.waitpid(self.pid, 0)[1]

    def proxy(self, hid: int, kind: str) -> RemoteObject:
        if hid not in self.proxies:
            self.proxies[hid] = RemoteObject(self, hid, kind)
        return self.proxies[hid]

    def _send(self, msg: dict) -> None:
        try:
            os.write(self.req_w, codec.dumps(msg))
        except BrokenPipeError:
            raise CandidateExit(*self._ended()) from None

    def value(self, reply: dict) -> object:
        if "e" in reply:
            name, msg = (str(x) for x in reply["e"][:2])
            if name in _EXIT_ONLY:
                raise CandidateExit("exited_early", f"the candidate raised {name}")
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                try:
                    exc = cls(msg)
                except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs 5 args
                    exc = CandidateError(name, msg)
                raise exc
            raise CandidateError(name, msg)
        return codec.from_wire(reply.get("v"), self.proxy)

    def op(self, target: RemoteObject, op: str, **extra: object) -> object:
        self._send({"op": op, "h": target._hid, **extra})
        return self.value(self.receive())

    def call(self, target: RemoteObject, args: tuple, kwargs: dict) -> object:
        self._send({"op": "call", "h": target._hid, "args": self.wire(list(args)),
                    "kwargs": self.wire(dict(kwargs))})
        reply = self.receive()
        result = self.value(reply)
        for arg, after in zip(args, reply.get("after") or []):
            if after is not None and type(arg) in (list, dict, set, bytearray):
                new = codec.from_wire(after, self.proxy)  # the candidate mutated its argument
                if type(new) is not type(arg):
                    continue
                if type(arg) in (list, bytearray):
                    arg[:] = new  # type: ignore[index]
                else:
                    arg.clear()  # type: ignore[union-attr]
                    arg.update(new)  # type: ignore[union-attr]
        return result

    def wire(self, value: object) -> object:
        def other(obj: object) -> dict:
            if type(obj) is RemoteObject:
                return {"h": obj._hid}
            raise TypeError(f"cannot pass a {type(obj).__name__} to the candidate")
        return codec.to_wire(value, other)


def _nondumpable() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


def _take(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    os.unlink(path)
    return text


def _code_names(code: object) -> set[str]:
    names = set(code.co_names)  # type: ignore[attr-defined]
    for const in code.co_consts:  # type: ignore[attr-defined]
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _namespace(worker: Worker, names: dict, entry: str, tests: object) -> dict:
    """The tests' globals: the judge's builtins plus the candidate's top-level names -- except
    names of builtins (the tests keep the real ``abs``, ``len``, ``set`` ...; only the entry
    point may have such a name) and stdlib modules: the judge's own import for a module, and,
    with an entry point, for any value bound to a name in ``_ORACLE_MODULES`` (a fake
    ``math``)."""
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    shadowing = {n for n in names if hasattr(builtins, n) and n != entry}
    clash = sorted(shadowing & _code_names(tests)) if not entry else []
    if clash:
        raise CandidateError("ShadowedBuiltin", f"the program redefines builtins the tests "
                                                f"use: {', '.join(clash)}")
    for name, desc in names.items():
        if name in shadowing:
            continue
        fake_module = entry and name != entry and name in _ORACLE_MODULES
        module = str(desc["m"]) if "m" in desc else name if fake_module else ""
        top = module.split(".")[0]
        if top in sys.stdlib_module_names and top not in _NEVER_IMPORT:
            try:
                ns[name] = __import__(module, fromlist=["_"])
                continue
            except Exception:  # noqa: BLE001 - not importable here: the candidate's object
                pass
        ns[name] = (worker.proxy(int(desc["h"]), "module") if "m" in desc
                    else codec.from_wire(desc["v"], worker.proxy))
    return ns


def _failure(e: BaseException) -> tuple[str, str, str]:
    """(verdict, exception name, reason) for an exception out of the tests."""
    if isinstance(e, CandidateExit):
        return e.verdict, "CandidateExit", str(e)
    name = e.name if isinstance(e, CandidateError) else type(e).__name__
    if name in _EXIT_ONLY:
        return "exited_early", name, f"{name} raised in the tests"
    if isinstance(e, AssertionError):
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "tests.py"]
        where = (frames[-1].line or "").strip() if frames else ""
        detail = f"AssertionError: {e}" if str(e) else where or "AssertionError"
        return "failed", name, f"test assertion failed: {detail}"[:300]
    return "failed", name, f"{name} in the tests: {e}"[:300]


def judge(token: str, tests_src: str, entry: str) -> dict:
    try:
        tests = compile(tests_src, "tests.py", "exec")
    except (SyntaxError, ValueError) as e:
        return {"verdict": "syntax_error", "phase": "tests", "exc": type(e).__name__,
                "reason": f"syntax error in the tests: {e}"[:300]}
    linecache.cache["tests.py"] = (len(tests_src), None, tests_src.splitlines(True), "tests.py")
    worker = Worker()
    try:
        try:
            loaded = worker.receive()
        except CandidateExit as e:
            return {"verdict": e.verdict, "phase": "program", "exc": "CandidateExit",
                    "reason": str(e)}
        except CandidateError as e:
            return {"verdict": "error", "phase": "program", "exc": e.name, "reason": str(e)}
        if "error" in loaded:
            name, msg = str(loaded["error"]), str(loaded.get("msg", ""))[:250]
            verdict = ("syntax_error" if loaded.get("syntax") else
                       "exited_early" if name in _EXIT_ONLY else "error")
            return {"verdict": verdict, "phase": "program", "exc": name,
                    "reason": f"{name} in the program: {msg}"[:300]}
        try:
            ns = _namespace(worker, loaded["globals"], entry, tests)
            exec(tests, ns)
            if entry:
                check = ns.get("check")
                if not callable(check) or type(check) is RemoteObject:
                    raise NameError("the tests define no check() function")
                check(ns[entry])
        except BaseException as e:  # noqa: BLE001 - the verdict
            traceback.print_exc()
            verdict, name, reason = _failure(e)
            return {"verdict": verdict, "phase": "tests", "exc": name, "reason": reason}
        return {"verdict": "passed", "phase": "tests", "exc": "", "reason": "all tests passed"}
    finally:
        worker.stop()


def main() -> int:
    _nondumpable()
    token = _take(".sbx_token").strip()
    tests_src = _take("tests.py")
    entry = sys.argv[1] if len(sys.argv) > 1 else ""
    verdict = judge(token, tests_src, entry)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.write(1, f"\n{token} {json.dumps(verdict)}\n".encode())
    return 0 if verdict["verdict"] == "passed" else 3


if __name__ == "__main__":
    sys.exit(main())
