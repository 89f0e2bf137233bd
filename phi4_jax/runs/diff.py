"""What differs between two run records, section by section.

    compare(a, b)        {section: [one line per difference]} for SECTIONS
    differences(a, b)    the same as "section: line" strings (what --reproduce warns about)
    render(a, b)         the report `python -m phi4_jax.runs diff` prints

Sections: config (dotted paths with both values), code (commit, dirty, diff hash; on one
commit, each changed or untracked file whose content differs), packages (Python; distributions
added, removed, changed), data (token stores by name: content fingerprint; input files by path:
sha256, directory digest or gs:// generation) and topology (platform, device kind and counts,
slices, mesh; the environment variables that change compilation). A store whose path moved but
whose fingerprint did not is the same data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from phi4_jax.runs.collect import flatten

SECTIONS = ("config", "code", "packages", "data", "topology")
_TOPOLOGY = ("platform", "device_kind", "device_count", "local_device_count", "process_count",
             "num_slices", "mesh")


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _short(value: Any) -> str:
    return value[:16] if isinstance(value, str) and len(value) > 16 else _shown(value)


def _mapping(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    return value if isinstance(value, Mapping) else {}


_ABSENT = object()


def _changed(xa: Mapping[str, Any], xb: Mapping[str, Any], key=lambda v: v):
    """(name, value in a, value in b) for each name, in order, whose `key(value)` differs or that
    one side lacks (its value is then `_ABSENT`)."""
    for name in sorted(set(xa) | set(xb)):
        va, vb = xa.get(name, _ABSENT), xb.get(name, _ABSENT)
        if va is _ABSENT or vb is _ABSENT or key(va) != key(vb):
            yield name, va, vb


def _or_absent(value: Any, shown=_shown) -> str:
    return "(absent)" if value is _ABSENT else shown(value)


def config_lines(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    fa, fb = flatten(_mapping(a, "config")), flatten(_mapping(b, "config"))
    return [f"{key}: {_or_absent(va)} -> {_or_absent(vb)}" for key, va, vb in _changed(fa, fb)]


def code_lines(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    ca, cb = _mapping(a, "code"), _mapping(b, "code")
    out = []
    if ca.get("commit") != cb.get("commit"):
        out.append(f"commit {ca.get('commit')} -> {cb.get('commit')}")
    if ca.get("dirty") != cb.get("dirty"):
        out.append(f"dirty {_shown(ca.get('dirty'))} -> {_shown(cb.get('dirty'))}")
    if (ca.get("dirty") or cb.get("dirty")) and ca.get("diff_sha256") != cb.get("diff_sha256"):
        out.append(f"uncommitted changes: diff sha256 {_short(ca.get('diff_sha256'))} -> "
                   f"{_short(cb.get('diff_sha256'))}")
        if ca.get("commit") == cb.get("commit"):  # on one commit: name the files that differ
            out += _file_lines(ca, cb)
    return out


def _file_lines(ca: Mapping[str, Any], cb: Mapping[str, Any]) -> list[str]:
    """Working-tree files (changed or untracked) whose content differs between two records of
    one commit; '(committed)' is the file as the commit has it."""
    fa = {**(ca.get("changed") or {}), **(ca.get("untracked") or {})}
    fb = {**(cb.get("changed") or {}), **(cb.get("untracked") or {})}
    return [f"file {name}: {_committed(va)} -> {_committed(vb)}"
            for name, va, vb in _changed(fa, fb)]


def _committed(value: Any) -> str:
    return "(committed)" if value is _ABSENT else _short(value)


def package_lines(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    pa, pb = _mapping(a, "packages"), _mapping(b, "packages")
    out = []
    if pa.get("python") != pb.get("python"):
        out.append(f"python {pa.get('python')} -> {pb.get('python')}")
    da, db = pa.get("distributions") or {}, pb.get("distributions") or {}
    for name, va, vb in _changed(da, db):
        if va is _ABSENT:
            out.append(f"added {name} {vb}")
        elif vb is _ABSENT:
            out.append(f"removed {name} {va}")
        else:
            out.append(f"changed {name} {va} -> {vb}")
    return out


def _identity(entry: Any) -> Any:
    """What names an input's content: fingerprint, sha256, directory digest, generation."""
    if not isinstance(entry, Mapping):
        return entry
    for key in ("fingerprint", "sha256", "listing_sha256", "generation"):
        if key in entry:
            return entry[key]
    return entry.get("error")


def data_lines(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    out = []
    for kind, label in (("stores", "store"), ("files", "file")):
        xa, xb = _mapping(_mapping(a, "data"), kind), _mapping(_mapping(b, "data"), kind)
        for name, va, vb in _changed(xa, xb, key=_identity):
            ia, ib = (_or_absent(v, lambda e: _short(_identity(e))) for v in (va, vb))
            if va is _ABSENT or vb is _ABSENT:
                out.append(f"{label} {name}: {ia} -> {ib}")
                continue
            what = "fingerprint" if kind == "stores" else "content"
            path = (vb or {}).get("path") if isinstance(vb, Mapping) else None
            where = f" at {path}" if path and path != name else ""
            out.append(f"{label} {name}{where}: {what} {ia} -> {ib}")
    return out


def topology_lines(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    ta, tb = _mapping(a, "topology"), _mapping(b, "topology")
    out = [f"{k} {_shown(ta.get(k))} -> {_shown(tb.get(k))}" for k in _TOPOLOGY
           if ta and tb and ta.get(k) != tb.get(k)]
    ea, eb = _mapping(a, "environment"), _mapping(b, "environment")
    out += [f"env {k}: {_shown(ea.get(k))} -> {_shown(eb.get(k))}"
            for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)]
    return out


_LINES = {"config": config_lines, "code": code_lines, "packages": package_lines,
          "data": data_lines, "topology": topology_lines}


def compare(a: Mapping[str, Any], b: Mapping[str, Any],
            sections: Sequence[str] = SECTIONS) -> dict[str, list[str]]:
    return {s: _LINES[s](a, b) for s in sections}


def differences(a: Mapping[str, Any], b: Mapping[str, Any],
                sections: Sequence[str] = SECTIONS) -> list[str]:
    return [f"{s}: {line}" for s, lines in compare(a, b, sections).items() for line in lines]


def describe(record: Mapping[str, Any]) -> str:
    command = _mapping(record, "command")
    return (f"launch {record.get('launch')} ({record.get('id')}, {record.get('status')}, "
            f"started {record.get('started')}): {command.get('line')}")


def _same(section: str, record: Mapping[str, Any]) -> str:
    """A one-line summary of a section that did not change."""
    if section == "config":
        return f"{len(flatten(_mapping(record, 'config')))} fields"
    if section == "code":
        code = _mapping(record, "code")
        dirty = (f", uncommitted changes {_short(code.get('diff_sha256'))}" if code.get("dirty")
                 else ", clean")
        return f"commit {str(code.get('commit'))[:12]}{dirty}"
    if section == "packages":
        packages = _mapping(record, "packages")
        return (f"python {packages.get('python')}, "
                f"{len(packages.get('distributions') or {})} distributions")
    if section == "data":
        data = _mapping(record, "data")
        return (f"{len(_mapping(data, 'stores'))} token stores, "
                f"{len(_mapping(data, 'files'))} input files")
    topo = _mapping(record, "topology")
    return (f"{topo.get('device_count')} x {topo.get('device_kind')}, mesh {topo.get('mesh')}"
            if topo else "not recorded")


def render(a: Mapping[str, Any], b: Mapping[str, Any], label_a: str = "A",
           label_b: str = "B") -> str:
    lines = [f"A {label_a}: {describe(a)}", f"B {label_b}: {describe(b)}"]
    for section, found in compare(a, b).items():
        if not found:
            lines.append(f"{section}: same ({_same(section, a)})")
            continue
        count = f"{len(found)} difference{'s' * (len(found) != 1)}"
        lines.append(f"{section}: {count}")
        lines += [f"  {line}" for line in found]
    return "\n".join(lines)
