"""Record schemas shared by post-training data: DPO pairs, pivotal tokens, SFT conversations.

One JSON object per line. Token ids travel end to end: the DPO trainer concatenates
`prompt_ids + chosen_ids` and `prompt_ids + rejected_ids` exactly as written -- no decode /
re-encode, no appended EOS, no inserted BOS. A completion may be a single token (PTS), a few
tokens (refusal data, truncated to 5) or a whole reply (judge pairs).

    pair   {"schema": "phi4_jax.pair/v1", "id": str, "source": "pts"|"judge"|"refusal",
            "tokenizer": str, "prompt_ids": [int], "chosen_ids": [int], "rejected_ids": [int],
            "meta": {...}}
    pivot  {"schema": "phi4_jax.pivot/v1", "id": str, "question_id": str, "tokenizer": str,
            "prefix_ids": [int], "token_id": int, "p_before": float, "p_after": float,
            "position": int, "n_samples": int, "meta": {...}}
    sft    {"schema": "phi4_jax.sft/v1", "id": str, "source": str,
            "messages": [{"role": "system"|"user"|"assistant", "content": str}], "meta": {...}}

The sft schema belongs to the data engine (`phi4_jax.data.sft`, re-exported here).
`iter_records` validates every line and counts a malformed one in a `BadInputReport` under the
field at fault ('invalid JSON', 'duplicate id', 'chosen_ids', ...; a line that is not UTF-8,
too long or cut off by a damaged .gz/.zst: 'invalid_utf8', 'oversized',
'corrupt_compressed_stream'), with its first `path:line: field: problem`, instead of raising.
Lines are parsed by `phi4_jax.io.jsonl` (a deeply nested line, a 5,000-digit integer or NaN is
one 'invalid JSON' line; gzip / zstd files are read by their magic bytes). `JsonlWriter`
appends records (resumable runs); `write_records` replaces a file whole, atomically, and
`write_report` writes a workflow's report.json / report.txt.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from phi4_jax.data import record_fields as rf
from phi4_jax.data.record_fields import RecordError
from phi4_jax.data.sft import SFT_SCHEMA, SFTExample, parse_sft
from phi4_jax.io import BadInputReport, atomic_write_json, atomic_write_text
from phi4_jax.io.jsonl import read_lines

PAIR_SCHEMA = "phi4_jax.pair/v1"
PIVOT_SCHEMA = "phi4_jax.pivot/v1"
Kind = Literal["pair", "pivot", "sft"]

__all__ = ["PAIR_SCHEMA", "PARSERS", "PIVOT_SCHEMA", "SFT_SCHEMA", "JsonlWriter", "Pair",
           "Pivot", "ReadReport", "RecordError", "SFTExample", "iter_records",
           "fingerprint_ids", "pairs_fingerprint", "parse_pair", "parse_pivot", "parse_sft",
           "read_pairs", "read_records", "write_records", "write_report"]


@dataclasses.dataclass(frozen=True)
class Pair:
    """A DPO preference pair in token ids (see the module docstring)."""

    id: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    source: str
    tokenizer: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _json_line(PAIR_SCHEMA, self, ("id", "source", "tokenizer", "prompt_ids",
                                              "chosen_ids", "rejected_ids", "meta"))


@dataclasses.dataclass(frozen=True)
class Pivot:
    """A pivotal token: p(success) moves from p_before to p_after when token_id follows prefix."""

    id: str
    question_id: str
    prefix_ids: tuple[int, ...]
    token_id: int
    p_before: float
    p_after: float
    position: int
    n_samples: int
    tokenizer: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _json_line(PIVOT_SCHEMA, self, ("id", "question_id", "tokenizer", "prefix_ids",
                                               "token_id", "p_before", "p_after", "position",
                                               "n_samples", "meta"))


def _json_line(schema: str, record: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The JSON object a record is written as: its schema, then `keys` in the order of the
    module docstring's line formats (token id tuples as lists)."""
    values = ((k, getattr(record, k)) for k in keys)
    return {"schema": schema, **{k: list(v) if isinstance(v, tuple) else v for k, v in values}}


def parse_pair(obj: Any, vocab_size: int | None = None) -> Pair:
    """Validates one decoded JSON value as a pair; raises `RecordError`."""
    obj = rf.require_object(obj)
    rf.schema(obj, PAIR_SCHEMA)
    pair = Pair(id=rf.string(obj, "id"), prompt_ids=rf.token_ids(obj, "prompt_ids", vocab_size),
                chosen_ids=rf.token_ids(obj, "chosen_ids", vocab_size),
                rejected_ids=rf.token_ids(obj, "rejected_ids", vocab_size),
                source=rf.string(obj, "source"), tokenizer=rf.string(obj, "tokenizer"),
                meta=rf.meta(obj))
    if pair.chosen_ids == pair.rejected_ids:
        raise RecordError("rejected_ids", "identical to chosen_ids")
    return pair


def parse_pivot(obj: Any, vocab_size: int | None = None) -> Pivot:
    """Validates one decoded JSON value as a pivotal token; raises `RecordError`."""
    obj = rf.require_object(obj)
    rf.schema(obj, PIVOT_SCHEMA)
    token = rf.integer(obj, "token_id")
    if vocab_size is not None and token >= vocab_size:
        raise RecordError("token_id", f"{token} is outside the vocabulary ({vocab_size})")
    return Pivot(id=rf.string(obj, "id"), question_id=rf.string(obj, "question_id"),
                 prefix_ids=rf.token_ids(obj, "prefix_ids", vocab_size), token_id=token,
                 p_before=rf.probability(obj, "p_before"), p_after=rf.probability(obj, "p_after"),
                 position=rf.integer(obj, "position"), n_samples=rf.integer(obj, "n_samples", 1),
                 tokenizer=rf.string(obj, "tokenizer"), meta=rf.meta(obj))


PARSERS = {"pair": parse_pair, "pivot": parse_pivot, "sft": parse_sft}


# -- reading and writing ---------------------------------------------------------------------
_LINE_REASONS = {"malformed_json": "invalid JSON"}  # jsonl.read_lines' reasons -> this report's


def iter_records(path: str | os.PathLike, kind: Kind, report: BadInputReport | None = None, *,
                 vocab_size: int | None = None) -> Iterator[Any]:
    """Yields the valid records of a JSONL file; malformed lines go to `report`, not raised."""
    parse, name = PARSERS[kind], str(path)
    report = report if report is not None else BadInputReport()
    report.file(name)  # a file without a bad line is listed too
    seen: set[str] = set()
    for line_no, obj, error in read_lines(path):
        where = f"{name}:{line_no}"
        if error:  # any parse failure (syntax, nesting depth, number range, NaN) is one line
            report.bad(name, _LINE_REASONS.get(error.reason, error.reason), where, error)
            continue
        try:
            record = parse(obj, vocab_size)
        except RecordError as e:
            report.bad(name, e.field, where, str(e))
            continue
        if record.id in seen:
            report.bad(name, "duplicate id", where, f"id: duplicate {record.id!r}")
            continue
        seen.add(record.id)
        report.ok(name)
        yield record


def read_records(path: str | os.PathLike, kind: Kind, *, vocab_size: int | None = None
                 ) -> tuple[list[Any], BadInputReport]:
    """All valid records of a JSONL file and the `BadInputReport` of the rest."""
    report = BadInputReport()
    return list(iter_records(path, kind, report, vocab_size=vocab_size)), report


def read_pairs(path: str | os.PathLike, *, vocab_size: int | None = None
               ) -> tuple[list[Pair], BadInputReport]:
    """The DPO trainer's entry point: valid pairs plus the report of malformed lines."""
    return read_records(path, "pair", vocab_size=vocab_size)


class ReadReport(BadInputReport):
    """A `BadInputReport` of one file with the single-file views older callers read: `valid`,
    `malformed` (reason -> count), `n_malformed`, `examples` (the first `path:line: problem` of
    each reason) and a `summary()` naming the file. New code uses `BadInputReport` itself."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = str(path)
        self.file(self.path)

    @property
    def valid(self) -> int:
        return self.records_ok

    @property
    def malformed(self) -> collections.Counter:
        return self.totals()

    @property
    def n_malformed(self) -> int:
        return self.bad_total

    @property
    def examples(self) -> list[str]:
        return [e for f in self.files.values() for e in f.first.values()]

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in self.malformed.most_common())
        return (f"{self.path}: {self.valid} valid, {self.n_malformed} malformed"
                + (f" ({reasons})" if reasons else ""))


class JsonlWriter:
    """Appends records (objects with `to_json()`, or dicts) as lines; flushed per `write`."""

    def __init__(self, path: str | os.PathLike, *, append: bool = True, fsync: bool = False):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self._fsync = str(path), fsync
        self._file = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, records: Iterable[Any]) -> int:
        """Writes records in one block (one write call) and flushes; returns how many."""
        lines = [json.dumps(r.to_json() if hasattr(r, "to_json") else r,
                            ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]
        self._file.write("".join(lines))
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        return len(lines)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_records(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Writes a whole records file atomically (one JSON line per record); returns how many."""
    lines = [json.dumps(r.to_json() if hasattr(r, "to_json") else r, ensure_ascii=False,
                        separators=(",", ":")) + "\n" for r in records]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, "".join(lines))
    return len(lines)


def write_report(directory: str | os.PathLike, stats: dict[str, Any], report: BadInputReport,
                 title: str) -> str:
    """DIRECTORY/report.json ({"stats", "bad_input"}) and report.txt; returns the text."""
    text = "\n".join([f"{title}: " + ", ".join(f"{k} {v}" for k, v in stats.items()),
                      report.format_text()])
    atomic_write_json(os.path.join(directory, "report.json"),
                      {"stats": stats, "bad_input": report.to_json()})
    atomic_write_text(os.path.join(directory, "report.txt"), text + "\n")
    return text


def fingerprint_ids(triples: Iterable[Sequence[Sequence[int]]]) -> str:
    """sha256 over (prompt, chosen, rejected) id sequences in order: per part its 4-byte length,
    then its ids as 4-byte little-endian words. The one pair-set fingerprint (the key of the DPO
    reference log-prob cache); parts may be lists or numpy arrays."""
    h = hashlib.sha256()
    for triple in triples:
        for part in triple:
            h.update(len(part).to_bytes(4, "little"))
            h.update(np.asarray(part, "<u4").tobytes())
    return h.hexdigest()


def pairs_fingerprint(pairs: Sequence[Pair]) -> str:
    """`fingerprint_ids` of the pairs' token ids, in order."""
    return fingerprint_ids((p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs)
