"""Check harness, candidate side: ``python -I -B -X utf8 _harness_worker.py REQ_FD RESP_FD``.

Started by the judge (``_harness_judge.py``) after it has read and deleted the token and the
tests.  Runs ``solution.py`` (the candidate) as ``__main__``, reports its top-level names, then
serves the judge's requests -- call / getattr / iter / next / len / bool on a handle -- one JSON
line each way (``_harness_codec``).  Everything in this process is the candidate's to tamper
with; that is by design: it can only change the *values* it returns, which the judge compares
in its own interpreter.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import traceback
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness_codec as codec  # noqa: E402

del sys.path[0]

_HANDLES: dict[int, object] = {}


def _handle(obj: object) -> dict:
    if type(obj).__module__ == "numpy" and getattr(obj, "ndim", None) == 0:
        with contextlib.suppress(Exception):  # a numpy scalar: its plain Python value
            value = obj.item()  # type: ignore[attr-defined]
            if type(value) in (bool, int, float, complex, str, bytes):
                return codec.to_wire(value, _handle)  # type: ignore[return-value]
    _HANDLES[id(obj)] = obj
    return {"h": id(obj), "n": type(obj).__name__}


def _lookup(hid: int, _name: str) -> object:
    return _HANDLES[hid]


def _wire(obj: object) -> object:
    return codec.to_wire(obj, _handle)


def _describe_globals(ns: dict) -> dict:
    out = {}
    for name, value in ns.items():
        if name.startswith("__") and name.endswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            out[name] = {"m": value.__name__, "h": _handle(value)["h"]}
            continue
        try:
            out[name] = {"v": _wire(value)}
        except (ValueError, RecursionError):
            out[name] = {"v": _handle(value)}
    return out


def _exc(e: BaseException) -> list[str]:
    try:
        return [type(e).__name__, str(e)[:1000]]
    except Exception:  # noqa: BLE001 - a hostile __str__
        return [type(e).__name__, ""]


def _serve(req: dict) -> dict:
    target = _HANDLES[req["h"]]
    op = req["op"]
    if op == "call":
        args = codec.from_wire(req["args"], _lookup)
        kwargs = codec.from_wire(req["kwargs"], _lookup)
        value = target(*args, **kwargs)  # type: ignore[operator]
        after = [_wire(a) if type(a) in (list, dict, set, bytearray) else None for a in args]
        return {"v": _wire(value), "after": after}
    if op == "getattr":
        return {"v": _wire(getattr(target, req["name"]))}
    if op == "iter":
        return {"v": _wire(iter(target))}  # type: ignore[call-overload]
    if op == "next":
        return {"v": _wire(next(target))}  # type: ignore[call-overload]
    if op == "len":
        return {"v": len(target)}  # type: ignore[arg-type]
    if op == "bool":
        return {"v": bool(target)}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    req_in = os.fdopen(int(sys.argv[1]), "rb", buffering=1 << 16)
    resp_out = os.fdopen(int(sys.argv[2]), "wb", buffering=0)
    for f in (req_in, resp_out):  # the candidate's own subprocesses do not get them
        os.set_inheritable(f.fileno(), False)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # an OOM kill should hit the candidate, not the judge

    def send(msg: dict) -> None:
        resp_out.write(codec.dumps(msg))

    with open("solution.py", encoding="utf-8") as f:
        source = f.read()
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        traceback.print_exc()
        send({"error": type(e).__name__, "msg": _exc(e)[1][:500], "syntax": True})
        return
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(code, ns)
    except BaseException as e:  # noqa: BLE001 - reported to the judge
        traceback.print_exc()
        send({"error": type(e).__name__, "msg": _exc(e)[1][:500]})
        return
    sys.stdout.flush()
    send({"globals": _describe_globals(ns)})
    for line in req_in:
        try:
            reply = _serve(codec.loads(line))
        except BaseException as e:  # noqa: BLE001 - the candidate's exception, to the judge
            reply = {"e": _exc(e)}
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        try:
            send(reply)
        except (ValueError, RecursionError) as e:
            send({"e": [type(e).__name__, f"cannot send the result: {e}"[:1000]]})


if __name__ == "__main__":
    main()
