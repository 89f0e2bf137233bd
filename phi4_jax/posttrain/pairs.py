"""Record schemas shared by post-training data: DPO pairs, pivotal tokens, SFT conversations.

One JSON object per line. Token ids travel end to end: the DPO trainer concatenates
`prompt_ids + chosen_ids` and `prompt_ids + rejected_ids` exactly as written -- no decode /
re-encode, no appended EOS, no inserted BOS. A completion may be a single token (PTS) or a few
tokens (refusal data, truncated to 5).

    pair   {"schema": "phi4_jax.pair/v1", "id": str, "source": "pts"|"judge"|"refusal",
            "tokenizer": str, "prompt_ids": [int], "chosen_ids": [int], "rejected_ids": [int],
            "meta": {...}}
    pivot  {"schema": "phi4_jax.pivot/v1", "id": str, "question_id": str, "tokenizer": str,
            "prefix_ids": [int], "token_id": int, "p_before": float, "p_after": float,
            "position": int, "n_samples": int, "meta": {...}}
    sft    {"schema": "phi4_jax.sft/v1", "id": str, "source": str,
            "messages": [{"role": "system"|"user"|"assistant", "content": str}], "meta": {...}}

`read_records` validates every line and counts malformed ones by reason (with a few
`path:line: field: problem` examples) instead of raising; duplicate ids are malformed too.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from phi4_jax.posttrain.jsonl import read_lines

PAIR_SCHEMA = "phi4_jax.pair/v1"
PIVOT_SCHEMA = "phi4_jax.pivot/v1"
SFT_SCHEMA = "phi4_jax.sft/v1"
ROLES = ("system", "user", "assistant")
Kind = Literal["pair", "pivot", "sft"]


class RecordError(ValueError):
    """A record that does not fit its schema; `field` names the offending key."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


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
        return {"schema": PAIR_SCHEMA, "id": self.id, "source": self.source,
                "tokenizer": self.tokenizer, "prompt_ids": list(self.prompt_ids),
                "chosen_ids": list(self.chosen_ids), "rejected_ids": list(self.rejected_ids),
                "meta": self.meta}


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
        return {"schema": PIVOT_SCHEMA, "id": self.id, "question_id": self.question_id,
                "tokenizer": self.tokenizer, "prefix_ids": list(self.prefix_ids),
                "token_id": self.token_id, "p_before": self.p_before, "p_after": self.p_after,
                "position": self.position, "n_samples": self.n_samples, "meta": self.meta}


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """A conversation for SFT (rendered later by the trainer's chat template)."""

    id: str
    messages: tuple[dict[str, str], ...]
    source: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SFT_SCHEMA, "id": self.id, "source": self.source,
                "messages": [dict(m) for m in self.messages], "meta": self.meta}


# -- field checks ----------------------------------------------------------------------------
def _get(obj: dict[str, Any], field: str, default: Any = dataclasses.MISSING) -> Any:
    if field not in obj:
        if default is dataclasses.MISSING:
            raise RecordError(field, "missing")
        return default
    return obj[field]


def _str(obj: dict[str, Any], field: str) -> str:
    value = _get(obj, field)
    if not isinstance(value, str) or not value:
        raise RecordError(field, f"must be a non-empty string, got {value!r:.60}")
    return value


def _int(obj: dict[str, Any], field: str, minimum: int = 0) -> int:
    value = _get(obj, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecordError(field, f"must be an integer >= {minimum}, got {value!r:.60}")
    return value


def _prob(obj: dict[str, Any], field: str) -> float:
    value = _get(obj, field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise RecordError(field, f"must be a probability in [0, 1], got {value!r:.60}")
    return float(value)


def _ids(obj: dict[str, Any], field: str, vocab_size: int | None) -> tuple[int, ...]:
    value = _get(obj, field)
    if not isinstance(value, list) or not value:
        raise RecordError(field, f"must be a non-empty list of token ids, got {value!r:.60}")
    for j, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise RecordError(field, f"element {j} is not a token id: {t!r:.30}")
        if vocab_size is not None and t >= vocab_size:
            raise RecordError(field, f"element {j} = {t} is outside the vocabulary "
                                     f"({vocab_size})")
    return tuple(value)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = _get(obj, "meta", {})
    if not isinstance(meta, dict):
        raise RecordError("meta", f"must be an object, got {type(meta).__name__}")
    return meta


def _schema(obj: dict[str, Any], expected: str) -> None:
    found = _get(obj, "schema")
    if found != expected:
        raise RecordError("schema", f"expected {expected!r}, got {found!r:.60}")


def parse_pair(obj: Any, vocab_size: int | None = None) -> Pair:
    """Validates one decoded JSON value as a pair; raises `RecordError`."""
    if not isinstance(obj, dict):
        raise RecordError("<line>", f"expected a JSON object, got {type(obj).__name__}")
    _schema(obj, PAIR_SCHEMA)
    pair = Pair(id=_str(obj, "id"), prompt_ids=_ids(obj, "prompt_ids", vocab_size),
                chosen_ids=_ids(obj, "chosen_ids", vocab_size),
                rejected_ids=_ids(obj, "rejected_ids", vocab_size),
                source=_str(obj, "source"), tokenizer=_str(obj, "tokenizer"), meta=_meta(obj))
    if pair.chosen_ids == pair.rejected_ids:
        raise RecordError("rejected_ids", "identical to chosen_ids")
    return pair


def parse_pivot(obj: Any, vocab_size: int | None = None) -> Pivot:
    """Validates one decoded JSON value as a pivotal token; raises `RecordError`."""
    if not isinstance(obj, dict):
        raise RecordError("<line>", f"expected a JSON object, got {type(obj).__name__}")
    _schema(obj, PIVOT_SCHEMA)
    token = _int(obj, "token_id")
    if vocab_size is not None and token >= vocab_size:
        raise RecordError("token_id", f"{token} is outside the vocabulary ({vocab_size})")
    return Pivot(id=_str(obj, "id"), question_id=_str(obj, "question_id"),
                 prefix_ids=_ids(obj, "prefix_ids", vocab_size), token_id=token,
                 p_before=_prob(obj, "p_before"), p_after=_prob(obj, "p_after"),
                 position=_int(obj, "position"), n_samples=_int(obj, "n_samples", 1),
                 tokenizer=_str(obj, "tokenizer"), meta=_meta(obj))


def parse_sft(obj: Any, vocab_size: int | None = None) -> SFTExample:
    """Validates one decoded JSON value as an SFT conversation; raises `RecordError`."""
    del vocab_size  # text records
    if not isinstance(obj, dict):
        raise RecordError("<line>", f"expected a JSON object, got {type(obj).__name__}")
    _schema(obj, SFT_SCHEMA)
    messages = _get(obj, "messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("messages", "must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RecordError(f"messages[{i}].role", f"must be one of {ROLES}")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise RecordError(f"messages[{i}].content", "must be a non-empty string")
    if messages[-1]["role"] != "assistant":
        raise RecordError("messages", "the last message must be the assistant's")
    return SFTExample(id=_str(obj, "id"), source=_str(obj, "source"), meta=_meta(obj),
                      messages=tuple({"role": m["role"], "content": m["content"]}
                                     for m in messages))


PARSERS = {"pair": parse_pair, "pivot": parse_pivot, "sft": parse_sft}


# -- reading and writing ---------------------------------------------------------------------
@dataclasses.dataclass
class ReadReport:
    """What a reader saw: valid records, malformed lines by reason, a few located examples."""

    path: str
    valid: int = 0
    malformed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: list[str] = dataclasses.field(default_factory=list)
    max_examples: int = 10

    @property
    def n_malformed(self) -> int:
        return sum(self.malformed.values())

    def add(self, line_no: int, reason: str, detail: str) -> None:
        self.malformed[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{self.path}:{line_no}: {detail}")

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in self.malformed.most_common())
        return (f"{self.path}: {self.valid} valid, {self.n_malformed} malformed"
                + (f" ({reasons})" if reasons else ""))


def iter_records(path: str | os.PathLike, kind: Kind, report: ReadReport | None = None, *,
                 vocab_size: int | None = None) -> Iterator[Any]:
    """Yields the valid records of a JSONL file; malformed lines go to `report`, not raised."""
    parse = PARSERS[kind]
    report = report if report is not None else ReadReport(str(path))
    seen: set[str] = set()
    for line_no, obj, error in read_lines(path):
        if error:
            report.add(line_no, "invalid JSON", error)
            continue
        try:
            record = parse(obj, vocab_size)
        except RecordError as e:
            report.add(line_no, f"{e.field}", str(e))
            continue
        if record.id in seen:
            report.add(line_no, "duplicate id", f"id: duplicate {record.id!r}")
            continue
        seen.add(record.id)
        report.valid += 1
        yield record


def read_records(path: str | os.PathLike, kind: Kind, *, vocab_size: int | None = None
                 ) -> tuple[list[Any], ReadReport]:
    """All valid records of a JSONL file and the `ReadReport` of the rest."""
    report = ReadReport(str(path))
    return list(iter_records(path, kind, report, vocab_size=vocab_size)), report


def read_pairs(path: str | os.PathLike, *, vocab_size: int | None = None
               ) -> tuple[list[Pair], ReadReport]:
    """The DPO trainer's entry point: valid pairs plus a report of malformed lines."""
    return read_records(path, "pair", vocab_size=vocab_size)


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


def pairs_fingerprint(pairs: Sequence[Pair]) -> str:
    """sha256 over the pairs' token ids in order (a key for caching reference log-probs)."""
    h = hashlib.sha256()
    for p in pairs:
        for ids in (p.prompt_ids, p.chosen_ids, p.rejected_ids):
            h.update(len(ids).to_bytes(4, "little"))
            h.update(b"".join(t.to_bytes(4, "little") for t in ids))
    return h.hexdigest()
