"""What a judge returns: the rubric it is given, and the parsed, validated `Judgement`.

The judge reviews one reply to a request and answers JSON: a list of faults, each typed
comprehension / logical / factual / stylistic, and 1-5 scores for accuracy, style and detail
(Phi-4 report, DPO round 2). `parse_judgement` finds that object in a bare, fenced or
prose-wrapped reply and raises `JudgeParseError` naming the field at fault.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

FAULT_TYPES = ("comprehension", "logical", "factual", "stylistic")
SCORES = ("accuracy", "style", "detail")

JUDGE_SYSTEM = """\
You are a meticulous reviewer of an AI assistant's reply to a user's request.
List every fault in the reply. Each fault has a type:
- comprehension: the reply misreads the request or answers a different question;
- logical: a reasoning step, calculation or code path is wrong or unjustified;
- factual: a statement of fact is false or unsupported;
- stylistic: unclear, verbose, badly formatted or off in tone.
Then score the reply from 1 (worst) to 5 (best) on:
- accuracy: is the final answer or content correct and does it solve the request?
- style: clarity, concision, formatting and tone;
- detail: is the level of explanation and completeness right for the request?
Reply with only a JSON object, no other text:
{"faults": [{"type": "logical", "description": "..."}],
 "scores": {"accuracy": 1, "style": 1, "detail": 1}}"""


def judge_messages(prompt: str, reply: str, reference: str | None = None
                   ) -> list[dict[str, str]]:
    """The chat messages sent to the judge for one reply (optionally with a reference)."""
    parts = [f"## Request\n{prompt}"]
    if reference:
        parts.append(f"## Reference answer (may be used to check correctness)\n{reference}")
    parts.append(f"## Reply to review\n{reply}")
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": "\n\n".join(parts)}]


class JudgeParseError(ValueError):
    """The judge's reply is not a valid judgement; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Fault:
    type: str
    description: str


@dataclasses.dataclass(frozen=True)
class Judgement:
    faults: tuple[Fault, ...]
    accuracy: int
    style: int
    detail: int

    @property
    def overall(self) -> float:
        return (self.accuracy + self.style + self.detail) / 3

    def to_json(self) -> dict[str, Any]:
        return {"faults": [dataclasses.asdict(f) for f in self.faults],
                "scores": {k: getattr(self, k) for k in SCORES}}


def _json_object(text: str) -> Any:
    """The first JSON object in text (whole text, a fenced block, or a balanced {...} span)."""
    candidates = [text.strip()]
    candidates += re.findall(r"```(?:json)?\s*(.*?)```", text, re.S)
    start = text.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                esc, in_str = (False, in_str) if esc else (ch == "\\", ch != '"')
            elif ch == '"':
                in_str = True
            elif ch in "{}":
                depth += 1 if ch == "{" else -1
                if depth == 0:
                    candidates.append(text[start:i + 1])
                    break
        start = text.find("{", start + 1)
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError:
            continue
    raise JudgeParseError(f"no JSON object in the reply: {text[:120]!r}")


def _score(value: Any, field: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.0+)?\s*", value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise JudgeParseError(f"{field}: expected an integer 1-5, got {value!r:.40}")
    if not 1 <= value <= 5:
        raise JudgeParseError(f"{field}: {value!r} is outside 1-5")
    return int(value)


def parse_judgement(text: str) -> Judgement:
    """Parses and validates a judge reply; raises `JudgeParseError` naming the bad field."""
    obj = _json_object(text)
    if not isinstance(obj, dict):
        raise JudgeParseError(f"expected a JSON object, got {type(obj).__name__}")
    scores = obj.get("scores", {k: obj[k] for k in SCORES if k in obj})
    if not isinstance(scores, dict):
        raise JudgeParseError(f"scores: expected an object, got {type(scores).__name__}")
    values = {}
    for k in SCORES:
        if k not in scores:
            raise JudgeParseError(f"scores.{k}: missing")
        values[k] = _score(scores[k], f"scores.{k}")
    if "faults" not in obj:
        raise JudgeParseError("faults: missing (use [] when there are none)")
    if not isinstance(obj["faults"], list):
        raise JudgeParseError(f"faults: expected a list, got {type(obj['faults']).__name__}")
    faults = []
    for i, f in enumerate(obj["faults"]):
        if isinstance(f, str) and ":" in f:  # "logical: ..." shorthand
            f = dict(zip(("type", "description"), (s.strip() for s in f.split(":", 1))))
        if not isinstance(f, dict) or not isinstance(f.get("type"), str):
            raise JudgeParseError(f"faults[{i}]: expected {{'type', 'description'}}, got {f!r:.60}")
        kind = f["type"].strip().lower()
        if kind not in FAULT_TYPES:
            raise JudgeParseError(f"faults[{i}].type: {f['type']!r} is not one of {FAULT_TYPES}")
        faults.append(Fault(kind, str(f.get("description", ""))))
    return Judgement(tuple(faults), **values)
