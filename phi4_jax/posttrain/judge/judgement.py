"""What a judge returns: the rubric it is given, and the parsed, validated `Judgement`.

The judge reviews one reply to a request and answers JSON: a list of faults, each typed
comprehension / logical / factual / stylistic, and 1-5 scores for accuracy, style and detail
(Phi-4 report, DPO round 2). `parse_judgement` finds that object in a bare, fenced or
prose-wrapped reply and raises `JudgeParseError` naming the field at fault -- and only that,
whatever the reply: the scan for the object is one linear pass over at most `max_chars`
characters (a longer reply is a JudgeParseError with reason 'oversized'), JSON is parsed by
`phi4_jax.io.jsonl.loads` (NaN, Infinity, 1e999, deep nesting and 5,000-digit integers are
parse failures), and a score must be a finite integer 1-5. `judge` asks for one judgement
through any async `ask(messages) -> text` (the judge workflow's asks the engine's client),
re-asking on an invalid reply with what was wrong, and raises `JudgeError` listing every attempt.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from phi4_jax.io import jsonl

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


def judge_messages(prompt: str, reply: str, reference: str | None = None, *,
                   system: str = JUDGE_SYSTEM) -> list[dict[str, str]]:
    """The chat messages sent to the judge for one reply (optionally with a reference)."""
    parts = [f"## Request\n{prompt}"]
    if reference:
        parts.append(f"## Reference answer (may be used to check correctness)\n{reference}")
    parts.append(f"## Reply to review\n{reply}")
    return [{"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)}]


MAX_REPLY_CHARS = 100_000  # a judge reply longer than this is refused unread ('oversized')
MAX_CANDIDATES = 16  # JSON parses tried per reply (whole text, fenced blocks, {...} spans)


class JudgeParseError(ValueError):
    """The judge's reply is not a valid judgement; the message names the field. `reason`:
    'oversized' (longer than max_chars) or 'invalid'."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


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

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Judgement:
        return cls(tuple(Fault(**f) for f in obj["faults"]),
                   **{k: obj["scores"][k] for k in SCORES})


_SCAN = re.compile(r'[{}"\\]')
_OBJECT = re.compile(r'\{\s*["}]')


def _fenced_blocks(text: str, limit: int) -> list[str]:
    """The contents of up to `limit` ```-fenced blocks (an optional `json` tag dropped)."""
    blocks, start = [], text.find("```")
    while start >= 0 and len(blocks) < limit:
        end = text.find("```", start + 3)
        if end < 0:
            break
        body = text[start + 3:end]
        blocks.append(body[4:] if body.startswith("json") else body)
        start = text.find("```", end + 3)
    return blocks


def _brace_spans(text: str) -> list[tuple[int, int, int]]:
    """(depth, start, end) of every balanced {...} span, in one pass (linear in len(text)):
    strings are respected inside braces; outside every brace quotes are prose."""
    spans: list[tuple[int, int, int]] = []
    stack: list[int] = []
    in_str, skip = False, -1
    for m in _SCAN.finditer(text):
        i, ch = m.start(), m.group()
        if i == skip:
            continue
        if in_str:
            if ch == "\\":
                skip = i + 1  # the escaped character
            elif ch == '"':
                in_str = False
        elif ch == "{":
            stack.append(i)
        elif not stack:
            continue
        elif ch == '"':
            in_str = True
        elif ch == "}":
            spans.append((len(stack) - 1, stack.pop(), i + 1))
    return spans


def _json_object(text: str, max_chars: int = MAX_REPLY_CHARS) -> Any:
    """The first JSON value among: the whole text, its fenced blocks, its balanced {...} spans
    (outermost first). At most MAX_CANDIDATES parses; `JudgeParseError` when none parses."""
    if not isinstance(text, str):
        raise JudgeParseError(f"the reply is a {type(text).__name__}, not text")
    if len(text) > max_chars:
        raise JudgeParseError(f"the reply has {len(text)} characters, over the {max_chars} "
                              "scanned for a judgement", reason="oversized")
    candidates = [text.strip(), *_fenced_blocks(text, MAX_CANDIDATES - 1)]
    if len(candidates) < MAX_CANDIDATES:  # spans that can open an object: '{"' or '{}'
        spans = [(d, a, b) for d, a, b in sorted(_brace_spans(text)) if _OBJECT.match(text, a)]
        candidates += [text[a:b] for _, a, b in spans[:MAX_CANDIDATES - len(candidates)]]
    for c in candidates:
        try:
            return jsonl.loads(c)
        except jsonl.JSONError:
            continue
    raise JudgeParseError(f"no JSON object in the reply: {text[:120]!r}")


def _score(value: Any, field: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,3}(\.0+)?\s*", value):
        value = float(value)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value)) or value != int(value)):
        raise JudgeParseError(f"{field}: expected an integer 1-5, got {value!r:.40}")
    if not 1 <= value <= 5:
        raise JudgeParseError(f"{field}: {value!r} is outside 1-5")
    return int(value)


def parse_judgement(text: str, *, max_chars: int = MAX_REPLY_CHARS) -> Judgement:
    """Parses and validates a judge reply; raises `JudgeParseError` naming the bad field (and
    nothing else, for any reply)."""
    obj = _json_object(text, max_chars)
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


JUDGE_REASONS = {
    "no_valid_judgement": "the judge gave no valid judgement in all attempts",
    "oversized": "every judge reply was longer than the scanned maximum (MAX_REPLY_CHARS)",
    "judge_failed": "judging raised an unexpected error (its type and message are shown)",
    "judge_request_failed": "the judge's server did not answer after every retry, or refused "
                            "the request (a transient failure is asked again by the next run)",
}


class JudgeError(RuntimeError):
    """No valid judgement after all attempts; `errors` has one entry per attempt."""

    def __init__(self, errors: list[str], reasons: list[str]):
        super().__init__(f"no valid judgement after {len(errors)} attempts: "
                         + " | ".join(f"attempt {i + 1}: {e}" for i, e in enumerate(errors)))
        self.errors, self.reasons = errors, reasons

    @property
    def reason(self) -> str:
        """'oversized' when every attempt's reply was too long to scan, else
        'no_valid_judgement' (the JUDGE_REASONS it is counted under)."""
        if self.reasons and all(r == "oversized" for r in self.reasons):
            return "oversized"
        return "no_valid_judgement"


async def judge(ask: Callable[[list[dict[str, str]]], Awaitable[str]], prompt: str, reply: str,
                *, reference: str | None = None, attempts: int = 3,
                system: str = JUDGE_SYSTEM) -> Judgement:
    """One judgement; an invalid reply is answered with the error and asked again. What `ask`
    raises (the engine's RequestError after its retries) goes up unchanged."""
    messages = judge_messages(prompt, reply, reference, system=system)
    errors: list[str] = []
    reasons: list[str] = []
    for _ in range(attempts):
        text = await ask(messages)
        try:
            return parse_judgement(text)
        except JudgeParseError as e:
            errors.append(str(e))
            reasons.append(e.reason)
            shown = text if e.reason != "oversized" else text[:2000] + " [...]"
            messages = messages + [
                {"role": "assistant", "content": shown},
                {"role": "user", "content": f"That reply was not valid ({e}). Reply again "
                                            "with only the JSON object described."}]
    raise JudgeError(errors, reasons)
