"""Judge-guided preference pairs (Phi-4 report, DPO round 2).

A judge model reviews each candidate reply with a rubric and returns JSON: a list of faults,
each typed comprehension / logical / factual / stylistic, and 1-5 scores for accuracy, style
and detail. Pairs are built any-vs-any among a prompt's judged replies: the reply with the
higher accuracy score (by="accuracy") or the higher mean of the three (by="overall") is chosen.

The judge is any OpenAI-compatible server (`OpenAIBackend`, through the `openai` client, whose
own retries cover 408/409/429/5xx and connection errors, honouring Retry-After) or this
project's model in-process (`ModelBackend`, over a `Sampler`). `judge` re-asks on an invalid
reply, telling the judge what was wrong, and raises `JudgeError` listing every attempt;
`judge_all` runs many in a thread pool with a progress bar and records failures instead.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol

from phi4_jax.posttrain.pairs import Pair
from phi4_jax.posttrain.sampler import Sampler

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


class JudgeError(RuntimeError):
    """No valid judgement after all attempts; `errors` has one entry per attempt."""

    def __init__(self, errors: list[str]):
        super().__init__(f"no valid judgement after {len(errors)} attempts: "
                         + " | ".join(f"attempt {i + 1}: {e}" for i, e in enumerate(errors)))
        self.errors = errors


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


class JudgeBackend(Protocol):
    name: str

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply text; raises `JudgeTransportError` when it cannot be reached."""
        ...


class JudgeTransportError(RuntimeError):
    """The backend failed to answer (after its own transport-level retries)."""


class OpenAIBackend:
    """Any OpenAI-compatible chat server. `max_retries` / `timeout` go to `openai.OpenAI`."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 client: Any = None, temperature: float = 0.0, max_tokens: int = 1024,
                 max_retries: int = 3, timeout: float = 120.0, json_mode: bool = False):
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused",
                                   max_retries=max_retries, timeout=timeout)
        self.client, self.name = client, model
        self.kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if json_mode:
            self.kwargs["response_format"] = {"type": "json_object"}

    def complete(self, messages: list[dict[str, str]]) -> str:
        import openai

        try:
            out = self.client.chat.completions.create(model=self.name, messages=messages,
                                                      **self.kwargs)
        except openai.APIError as e:
            raise JudgeTransportError(f"{type(e).__name__}: {e}") from e
        if not out.choices:
            return ""
        return out.choices[0].message.content or ""


class ModelBackend:
    """This project's model as the judge, in-process: one rollout of a (greedy) `Sampler`."""

    def __init__(self, sampler: Sampler, name: str = "local"):
        self.sampler, self.name = sampler, name

    def complete(self, messages: list[dict[str, str]]) -> str:
        (rollout,) = self.sampler.sample([self.sampler.render(messages)], 1)[0]
        return self.sampler.decode(rollout.tokens)


def judge(backend: JudgeBackend, prompt: str, reply: str, *, reference: str | None = None,
          attempts: int = 3) -> Judgement:
    """One judgement; an invalid reply is answered with the error and asked again."""
    messages = judge_messages(prompt, reply, reference)
    errors: list[str] = []
    for _ in range(attempts):
        try:
            text = backend.complete(messages)
        except JudgeTransportError as e:
            errors.append(str(e))
            continue
        try:
            return parse_judgement(text)
        except JudgeParseError as e:
            errors.append(str(e))
            messages = messages + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That reply was not valid ({e}). Reply again "
                                            "with only the JSON object described."}]
    raise JudgeError(errors)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A reply: text for the judge, token ids for the pair (its end-of-turn token included if
    the reply is complete), and where it came from."""

    text: str
    ids: tuple[int, ...]
    source: str = ""


@dataclasses.dataclass(frozen=True)
class JudgeItem:
    id: str
    prompt: str
    prompt_ids: tuple[int, ...]
    candidates: tuple[Candidate, ...]
    reference: str | None = None


def make_item(sampler: Sampler, id: str, prompt: str, replies: Sequence[tuple[str, str]],
              *, end_ids: Sequence[int] = (), reference: str | None = None) -> JudgeItem:
    """Tokenizes a prompt (chat template) and (text, source) replies once, for the pairs."""
    return JudgeItem(id, prompt, tuple(sampler.render([{"role": "user", "content": prompt}])),
                     tuple(Candidate(t, tuple(sampler.encode(t)) + tuple(end_ids), s)
                           for t, s in replies), reference)


@dataclasses.dataclass
class JudgeReport:
    judged: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)


def judge_all(backend: JudgeBackend, items: Sequence[JudgeItem], *, attempts: int = 3,
              max_workers: int = 4, progress: bool = True
              ) -> tuple[list[list[Judgement | None]], JudgeReport]:
    """Judges every candidate of every item (thread pool); failures are reported, not raised."""
    from tqdm.auto import tqdm

    jobs = [(i, j) for i, item in enumerate(items) for j in range(len(item.candidates))]
    out: list[list[Judgement | None]] = [[None] * len(item.candidates) for item in items]
    report = JudgeReport()

    def one(job: tuple[int, int]) -> Judgement:
        item = items[job[0]]
        return judge(backend, item.prompt, item.candidates[job[1]].text,
                     reference=item.reference, attempts=attempts)

    with ThreadPoolExecutor(max_workers=max_workers) as pool, tqdm(
            total=len(jobs), unit="reply", desc="judge", disable=not progress) as bar:
        for (i, j), fut in [(job, pool.submit(one, job)) for job in jobs]:
            try:
                out[i][j] = fut.result()
                report.judged += 1
            except JudgeError as e:
                report.failures.append(f"{items[i].id} candidate {j}: {e}")
            bar.update()
    return out, report


def build_pairs(item: JudgeItem, judgements: Sequence[Judgement | None], *, tokenizer: str,
                by: Literal["accuracy", "overall"] = "accuracy", min_margin: float = 1e-6,
                judge_name: str = "") -> list[Pair]:
    """Any-vs-any pairs among judged candidates whose `by` score differs by >= min_margin."""
    if by not in ("accuracy", "overall"):
        raise ValueError(f"by must be 'accuracy' or 'overall', got {by!r}")
    scored = [(j, getattr(g, by), g) for j, g in enumerate(judgements) if g is not None]
    pairs = []
    for a, (i, si, gi) in enumerate(scored):
        for j, sj, gj in scored[a + 1:]:
            if abs(si - sj) < min_margin:
                continue
            (hi, ghi), (lo, glo) = ((i, gi), (j, gj)) if si > sj else ((j, gj), (i, gi))
            c, r = item.candidates[hi], item.candidates[lo]
            if c.ids == r.ids:
                continue
            pairs.append(Pair(f"judge/{item.id}/{by}/{hi}>{lo}", item.prompt_ids, c.ids, r.ids,
                              "judge", tokenizer,
                              {"question_id": item.id, "by": by, "judge": judge_name,
                               "chosen": {"index": hi, "source": c.source} | ghi.to_json(),
                               "rejected": {"index": lo, "source": r.source} | glo.to_json()}))
    return pairs
