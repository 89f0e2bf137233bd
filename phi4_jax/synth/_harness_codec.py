"""Wire format between the check harness's judge and its candidate worker (stdlib only).

Only plain builtin data crosses: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``,
``bytes``, ``bytearray`` and ``list``/``tuple``/``dict``/``set``/``frozenset`` of them, matched by
*exact* type (a subclass of ``int`` or ``str`` is not plain data).  Anything else is sent as an
opaque handle (``{"h": id, "n": type name}``) that the other side turns into a proxy through
``on_handle``.  Decoding builds fresh builtin objects, so whatever the candidate's process
sends, the judge only ever holds values of builtin types and its own proxies -- never an object
with a candidate-defined ``__eq__``.  One JSON document per line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 200
MAX_LINE = 64 << 20  # bytes per message
_I64 = 1 << 63


def to_wire(obj: Any, on_other: Callable[[Any], dict], depth: int = 0) -> Any:
    """The JSON-able form of ``obj``; ``on_other(obj)`` encodes what is not plain data."""
    t = type(obj)
    if obj is None or t is bool or t is str:
        return obj
    if t is int:
        return obj if -_I64 <= obj < _I64 else {"x": format(obj, "x")}
    if t is float:
        return obj if math.isfinite(obj) else {"r": repr(obj)}
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply to send")
    sub = [to_wire(x, on_other, depth + 1) for x in obj] if t in (
        list, tuple, set, frozenset) else None
    if t is list:
        return sub
    tag = {tuple: "t", set: "s", frozenset: "f"}.get(t)
    if tag is not None:
        return {tag: sub}
    if t is dict:
        return {"d": [[to_wire(k, on_other, depth + 1), to_wire(v, on_other, depth + 1)]
                      for k, v in obj.items()]}
    if t is bytes:
        return {"b": obj.hex()}
    if t is bytearray:
        return {"y": obj.hex()}
    if t is complex:
        return {"c": [to_wire(obj.real, on_other), to_wire(obj.imag, on_other)]}
    return on_other(obj)


def from_wire(w: Any, on_handle: Callable[[int, str], Any], depth: int = 0) -> Any:
    """Rebuild a value from its wire form (``ValueError`` on anything malformed)."""
    t = type(w)
    if w is None or t in (bool, int, float, str):
        return w
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if t is list:
        return [from_wire(x, on_handle, depth + 1) for x in w]
    if t is not dict or not w:
        raise ValueError(f"malformed wire value: {type(w).__name__}")
    tag = next(iter(w))
    val = w[tag]
    if tag == "h" and type(val) is int and type(w.get("n", "")) is str and len(w) <= 2:
        return on_handle(val, w.get("n", "object"))
    if len(w) != 1:
        raise ValueError("malformed wire value")
    if tag == "x" and type(val) is str:
        return int(val, 16)
    if tag == "r" and val in ("nan", "inf", "-inf"):
        return float(val)
    if tag in ("b", "y") and type(val) is str:
        return (bytes if tag == "b" else bytearray).fromhex(val)
    if tag == "c" and type(val) is list and len(val) == 2:
        re_, im = (from_wire(x, on_handle, depth + 1) for x in val)
        if type(re_) is not float or type(im) is not float:
            raise ValueError("malformed complex")
        return complex(re_, im)
    items = [from_wire(x, on_handle, depth + 1) for x in val] if type(val) is list else None
    if items is None:
        raise ValueError(f"malformed wire value for tag {tag!r}")
    if tag == "t":
        return tuple(items)
    if tag == "s":
        return set(items)
    if tag == "f":
        return frozenset(items)
    if tag == "d" and all(type(kv) is list and len(kv) == 2 for kv in items):
        return {k: v for k, v in items}
    raise ValueError(f"malformed wire value for tag {tag!r}")


def dumps(msg: dict) -> bytes:
    return json.dumps(msg, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def loads(line: bytes) -> dict:
    msg = json.loads(line)
    if type(msg) is not dict:
        raise ValueError("message is not an object")
    return msg
