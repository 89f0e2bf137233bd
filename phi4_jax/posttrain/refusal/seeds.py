"""Trivia seeds of the refusal workflow, and how a reply to one is graded.

A seed is {"id", "question", "answer", "aliases"?} (JSONL). A reply is `correct` if the gold
answer or an alias occurs in it as whole words after SQuAD-style normalization, else `refusal`
if it declines to answer, else `wrong`.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Literal

from phi4_jax.io import BadInputReport
from phi4_jax.io.jsonl import read_objects

Grade = Literal["correct", "refusal", "wrong"]
SEED_REASONS = {
    "malformed_json": "a seeds line is not JSON",
    "not_an_object": "a seeds line is not a JSON object",
    "missing_field": "id, question or answer absent or not a non-empty string",
    "bad_aliases": "aliases is not a list of strings",
    "duplicate_id": "a seed id seen before",
}


@dataclasses.dataclass(frozen=True)
class TriviaSeed:
    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()


class SeedError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def check_seed(obj: dict) -> TriviaSeed:
    """The seed of a decoded JSON object; `SeedError` (a SEED_REASONS reason) when invalid."""
    missing = [k for k in ("id", "question", "answer")
               if not isinstance(obj.get(k), str) or not obj[k].strip()]
    if missing:
        raise SeedError("missing_field", f"{missing[0]}: missing or not a non-empty string")
    aliases = obj.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise SeedError("bad_aliases", "aliases: must be a list of strings")
    return TriviaSeed(obj["id"], obj["question"], obj["answer"], tuple(aliases))


def read_seeds(path: str, report: BadInputReport | None = None
               ) -> tuple[list[TriviaSeed], BadInputReport]:
    """The valid seeds of a JSONL file; bad lines are counted in the report (SEED_REASONS)."""
    report = report if report is not None else BadInputReport(SEED_REASONS)
    report.file(path)
    seeds, seen = [], set()
    for line_no, obj, error in read_objects(path):
        where = f"{path}:{line_no}"
        if error:
            report.bad(path, "not_an_object" if error == "not a JSON object" else
                       "malformed_json", where, error)
            continue
        try:
            seed = check_seed(obj)
        except SeedError as e:
            report.bad(path, e.reason, where, e.detail)
            continue
        if seed.id in seen:
            report.bad(path, "duplicate_id", where, f"id: duplicate {obj['id']!r}")
        else:
            seen.add(seed.id)
            report.ok(path)
            seeds.append(seed)
    return seeds, report


def normalize(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed (SQuAD-style)."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


REFUSALS = ("i don t know", "i do not know", "not sure", "i m not certain", "cannot answer",
            "can t answer", "unable to answer", "no reliable", "i don t have", "can t find",
            "cannot find", "no record")


def grade(reply: str, seed: TriviaSeed) -> Grade:
    """'correct' if the gold answer or an alias occurs as whole words, else 'refusal' if the
    reply declines to answer, else 'wrong'."""
    text = f" {normalize(reply)} "
    if any(f" {normalize(a)} " in text for a in (seed.answer, *seed.aliases) if normalize(a)):
        return "correct"
    return "refusal" if any(f" {r} " in text for r in REFUSALS) else "wrong"
