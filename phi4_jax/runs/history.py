"""WORKDIR/runs.jsonl: one JSON record per launch, appended, never overwritten.

    append(workdir, record)   adds a line (the record's "launch" is set to its 1-based number)
    update(workdir, record)   replaces the line with the record's "id" (a launch that ends)
    read(workdir)             every record, oldest first (a torn line is skipped)
    select(spec)              'WORKDIR' (the newest record), 'WORKDIR@N' (the N-th, 1-based;
                              negative counts from the end)

Each change is read + modify + write of the whole file: locally through
`phi4_jax.io.atomic_write_text` (a crash leaves the old file or the new one), on a URL (gs://)
through tensorstore's key-value store with a generation precondition, retried when another
writer got in between. Only one process of a run writes (the caller decides: process 0).
"""

from __future__ import annotations

import json
import os
from typing import Any

from phi4_jax import cli
from phi4_jax.io.atomic import atomic_write_text

RECORDS = "runs.jsonl"
_RETRIES = 8


class RecordError(cli.UsageError):
    """No such record (no runs.jsonl, or no N-th launch): one line, exit status 2."""


def _is_url(path: str) -> bool:
    return "://" in path


def path_of(workdir: str) -> str:
    return f"{workdir.rstrip('/')}/{RECORDS}" if _is_url(workdir) else os.path.join(
        workdir, RECORDS)


def _parse(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a torn line of an older writer: skipped
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _render(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


class _Local:
    def __init__(self, workdir: str):
        self.workdir, self.path = workdir, path_of(workdir)

    def load(self) -> tuple[str | None, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read(), None
        except FileNotFoundError:
            return None, None

    def store(self, text: str, token: Any) -> bool:
        del token
        os.makedirs(self.workdir, exist_ok=True)
        atomic_write_text(self.path, text)
        return True


class _Url:
    def __init__(self, workdir: str):
        import tensorstore as ts

        self.kv = ts.KvStore.open(workdir.rstrip("/") + "/").result()

    def load(self) -> tuple[str | None, Any]:
        result = self.kv.read(RECORDS).result()
        text = result.value.decode("utf-8") if result.state == "value" else None
        return text, result.stamp.generation

    def store(self, text: str, token: Any) -> bool:
        stamp = self.kv.write(RECORDS, text.encode("utf-8"), if_equal=token).result()
        return bool(stamp.generation)  # empty: another writer changed it first


def _backend(workdir: str) -> _Local | _Url:
    return _Url(workdir) if _is_url(workdir) else _Local(workdir)


def _modify(workdir: str, change) -> dict[str, Any]:
    backend = _backend(workdir)
    for _ in range(_RETRIES):
        text, token = backend.load()
        records = _parse(text or "")
        result = change(records)
        if result is None:
            return {}
        if backend.store(_render(records), token):
            return result
    raise RuntimeError(f"{path_of(workdir)}: kept changing while this launch wrote its record")


def append(workdir: str, record: dict[str, Any]) -> dict[str, Any]:
    """Appends `record` (its "launch" set to its number in the file); returns it."""
    def change(records):
        record["launch"] = len(records) + 1
        records.append(record)
        return record
    return _modify(workdir, change)


def update(workdir: str, record: dict[str, Any]) -> dict[str, Any]:
    """Replaces the record with the same "id" (appends it when the file lost it)."""
    def change(records):
        for i, old in enumerate(records):
            if old.get("id") == record["id"]:
                record["launch"] = old.get("launch", i + 1)
                records[i] = record
                return record
        record["launch"] = len(records) + 1
        records.append(record)
        return record
    return _modify(workdir, change)


def read(workdir: str) -> list[dict[str, Any]]:
    text, _ = _backend(workdir).load()
    return _parse(text or "")


def split_spec(spec: str) -> tuple[str, int | None]:
    """'DIR@N' -> (DIR, N); 'DIR' -> (DIR, None)."""
    head, sep, tail = spec.rpartition("@")
    if sep and tail.lstrip("-").isdigit():
        return head, int(tail)
    return spec, None


def select(spec: str) -> dict[str, Any]:
    """The record `spec` names ('WORKDIR' or 'WORKDIR@N'); RecordError when there is none."""
    workdir, index = split_spec(spec)
    records = read(workdir)
    if not records:
        where = path_of(workdir)
        raise RecordError(f"{where}: no run records (not a work dir of a run, or one from "
                          "before run records were written)")
    if index is None:
        return records[-1]
    if index == 0 or abs(index) > len(records):
        raise RecordError(f"{spec}: {workdir} has {len(records)} launch record(s); use @1.."
                          f"@{len(records)} (or @-1 for the newest)")
    return records[index - 1] if index > 0 else records[index]
