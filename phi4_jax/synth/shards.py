"""The output directory of a workflow: shards, markers, rejects, reports and the manifest.

    OUTPUT/source/shard-00000.jsonl        the input records, shard_size per shard, input order
    OUTPUT/source/rejects.jsonl            input lines that are not records (with file:line)
    OUTPUT/source/_SUCCESS.json            the source's marker (input key, fingerprint, counts)
    OUTPUT/stages/S/shard-00000.jsonl      stage S's records of shard 0 (input order)
    OUTPUT/stages/S/shard-00000.rejects.jsonl   {stage, id, reason, where, detail} per reject
    OUTPUT/stages/S/shard-00000.done       the shard's completion marker (written last)
    OUTPUT/stages/S/_SUCCESS.json          the stage's marker, with report.json / report.txt
    OUTPUT/manifest.json                   every shard's counts and sha256, every fingerprint
    OUTPUT/<export>                        a stage's shards concatenated (Workflow.exports)

Every file is written whole by `phi4_jax.io.atomic_write_*` (temp file + rename) and holds only
what its inputs determine (no times, no counts of requests), so a run killed at any point and
rerun leaves the same bytes as an uninterrupted one. Records are canonical JSON lines.

`kill_point(event)` is the fault injection the tests use: with PHI4_SYNTH_KILL_AT=EVENT:N the
process SIGKILLs itself at the N-th EVENT (source, record, shard, marker, stage, manifest).
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

from phi4_jax.io import BadInputReport, atomic_write_bytes, atomic_write_json, atomic_write_text
from phi4_jax.io.jsonl import read_objects
from phi4_jax.synth.cache import canonical_json, sha256_hex

MANIFEST_SCHEMA = "phi4_jax.synth.manifest/1"
MARKER_SCHEMA = "phi4_jax.synth.shard/1"
KILL_ENV = "PHI4_SYNTH_KILL_AT"
SOURCE_REASONS = {
    "malformed_json": "an input line is not valid JSON",
    "invalid_utf8": "an input line is not UTF-8",
    "oversized": "an input line over the line bound",
    "corrupt_compressed_stream": "a truncated or corrupt gzip/zstd input",
    "not_an_object": "an input line is not a JSON object",
    "missing_id": "the id field is absent, or not a non-empty string or an integer",
    "duplicate_id": "an id seen before",
}


class _KillCounter:
    def __init__(self):
        self.counts: collections.Counter = collections.Counter()

    def __call__(self, event: str) -> None:
        spec = os.environ.get(KILL_ENV, "")
        if not spec.startswith(event + ":") and spec != event:
            return
        self.counts[event] += 1
        if self.counts[event] >= int(spec.partition(":")[2] or 1):
            os.kill(os.getpid(), signal.SIGKILL)


kill_point = _KillCounter()


def line(record: Any) -> str:
    return canonical_json(record) + "\n"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def source_dir(output: str) -> str:
    return os.path.join(output, "source")


def stage_dir(output: str, stage: str) -> str:
    return os.path.join(output, "stages", stage)


def shard_file(output: str, stage: str | None, index: int, suffix: str = ".jsonl") -> str:
    folder = source_dir(output) if stage is None else stage_dir(output, stage)
    return os.path.join(folder, shard_name(index) + suffix)


def read_shard(path: str) -> list[dict[str, Any]]:
    """The records of a shard file this module wrote."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


def read_json(path: str) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_temp_files(output: str) -> None:
    """Temp files a killed run left (atomic writes that never reached their rename)."""
    for pattern in ("*.tmp-*", "source/*.tmp-*", "stages/*/*.tmp-*"):
        for path in glob.glob(os.path.join(glob.escape(output), pattern)):
            os.remove(path)


def _input_key(files: Sequence[str], id_field: str, shard_size: int) -> str:
    digests = []
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digests.append([os.path.abspath(path), h.hexdigest()])
    return sha256_hex(canonical_json({"files": digests, "id_field": id_field,
                                      "shard_size": shard_size}))


def write_source(output: str, files: Sequence[str], *, id_field: str, shard_size: int
                 ) -> dict[str, Any]:
    """Splits the input into source shards (once per input key); returns the source marker."""
    key = _input_key(files, id_field, shard_size)
    marker_path = os.path.join(source_dir(output), "_SUCCESS.json")
    marker = read_json(marker_path)
    if marker and marker.get("input_key") == key:
        return marker
    os.makedirs(source_dir(output), exist_ok=True)
    report = BadInputReport(SOURCE_REASONS)
    records, rejects, seen = [], [], set()
    for path in files:
        for line_no, obj, error in read_objects(path):
            where = f"{path}:{line_no}"
            if error is not None:
                report.bad(path, error.reason, where, error)
                rejects.append({"stage": "source", "id": None, "reason": error.reason,
                                "where": where, "detail": str(error)})
                continue
            rid = obj.get(id_field)
            if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
                reason, detail = "missing_id", f"no usable {id_field!r} field"
            elif str(rid) in seen:
                reason, detail = "duplicate_id", f"id {rid!r} seen before"
            else:
                seen.add(str(rid))
                report.ok(path)
                records.append(obj)
                continue
            report.bad(path, reason, where, detail)
            rejects.append({"stage": "source", "id": None if reason == "missing_id" else rid,
                            "reason": reason, "where": where, "detail": detail})
    shards = []
    for index, start in enumerate(range(0, max(len(records), 1), shard_size)):
        data = "".join(line(r) for r in records[start:start + shard_size]).encode()
        atomic_write_bytes(shard_file(output, None, index), data)
        kill_point("source")
        shards.append({"file": os.path.relpath(shard_file(output, None, index), output),
                       "records": len(records[start:start + shard_size]),
                       "sha256": sha256_hex(data)})
    rejects_data = "".join(line(r) for r in rejects).encode()
    atomic_write_bytes(os.path.join(source_dir(output), "rejects.jsonl"), rejects_data)
    atomic_write_json(os.path.join(source_dir(output), "report.json"), report.to_json())
    marker = {"input_key": key, "records": len(records), "rejects": len(rejects),
              "rejects_sha256": sha256_hex(rejects_data), "shards": shards,
              "fingerprint": sha256_hex(canonical_json([s["sha256"] for s in shards]))}
    atomic_write_json(marker_path, marker)
    return marker


def current_marker(output: str, stage: str, index: int, fingerprint: str,
                   input_sha256: str | None) -> dict[str, Any] | None:
    """The shard's marker when it names `fingerprint` and the input shard's current sha256
    (and the shard file exists); else None."""
    marker = read_json(shard_file(output, stage, index, ".done"))
    if (marker and marker.get("fingerprint") == fingerprint and input_sha256 is not None
            and marker.get("input_sha256") == input_sha256
            and os.path.exists(shard_file(output, stage, index))):
        return marker
    return None


def write_shard(output: str, stage: str, index: int, fingerprint: str, input_sha256: str,
                records: Sequence[dict[str, Any]], rejects: Sequence[dict[str, Any]], *,
                dropped: int, transient: int, report: BadInputReport) -> dict[str, Any]:
    """The shard's records, then its rejects, then its marker (each atomic)."""
    os.makedirs(stage_dir(output, stage), exist_ok=True)
    data = "".join(line(r) for r in records).encode()
    rejects_data = "".join(line(r) for r in rejects).encode()
    atomic_write_bytes(shard_file(output, stage, index), data)
    atomic_write_bytes(shard_file(output, stage, index, ".rejects.jsonl"), rejects_data)
    kill_point("shard")
    marker = {"schema": MARKER_SCHEMA, "stage": stage, "shard": index,
              "fingerprint": fingerprint, "input_sha256": input_sha256,
              "records": len(records), "sha256": sha256_hex(data),
              "rejects": len(rejects), "rejects_sha256": sha256_hex(rejects_data),
              "dropped": dropped, "transient_failures": transient, "report": report.to_json()}
    atomic_write_json(shard_file(output, stage, index, ".done"), marker)
    kill_point("marker")
    return marker


def finish_stage(output: str, stage: str, input_stage: str | None, fingerprint: str,
                 num_shards: int) -> dict[str, Any]:
    """The stage's report and marker from its shard markers (all must be done)."""
    report = BadInputReport()
    shards, totals = [], collections.Counter()
    for index in range(num_shards):
        marker = read_json(shard_file(output, stage, index, ".done"))
        if not marker or marker.get("fingerprint") != fingerprint:
            raise RuntimeError(f"stage {stage}: shard {index} has no completion marker")
        report.merge(BadInputReport.from_json(marker["report"]))
        for k in ("records", "rejects", "dropped", "transient_failures"):
            totals[k] += marker[k]
        shards.append({"file": os.path.relpath(shard_file(output, stage, index), output),
                       **{k: marker[k] for k in ("records", "sha256", "rejects",
                                                 "rejects_sha256")}})
    for stale in sorted(glob.glob(os.path.join(glob.escape(stage_dir(output, stage)),
                                               "shard-*"))):
        if int(os.path.basename(stale)[6:11]) >= num_shards:  # from a larger earlier input
            os.remove(stale)
    folder = stage_dir(output, stage)
    atomic_write_json(os.path.join(folder, "report.json"), report.to_json())
    atomic_write_text(os.path.join(folder, "report.txt"),
                      report.format_text(title=f"stage {stage}") + "\n")
    summary = {"fingerprint": fingerprint, "input": input_stage or "source",
               **{k: totals[k] for k in ("records", "rejects", "dropped", "transient_failures")},
               "shards": shards}
    atomic_write_json(os.path.join(folder, "_SUCCESS.json"), summary)
    kill_point("stage")
    return summary


def stage_records(output: str, stage: str, num_shards: int) -> Iterator[dict[str, Any]]:
    """Every record of a finished stage, in shard order."""
    for index in range(num_shards):
        yield from read_shard(shard_file(output, stage, index))


def write_export(output: str, stage: str, name: str, num_shards: int) -> dict[str, Any]:
    """The stage's shards concatenated into OUTPUT/name (atomically)."""
    parts = []
    for index in range(num_shards):
        with open(shard_file(output, stage, index), "rb") as f:
            parts.append(f.read())
    data = b"".join(parts)
    atomic_write_bytes(os.path.join(output, name), data)
    return {"file": name, "records": data.count(b"\n"), "sha256": sha256_hex(data)}


def write_manifest(output: str, manifest: dict[str, Any]) -> None:
    kill_point("manifest")
    atomic_write_json(os.path.join(output, "manifest.json"),
                      {"schema": MANIFEST_SCHEMA, **manifest})
