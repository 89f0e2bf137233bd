"""Success oracles for Pivotal Token Search: math answers, code tests, multiple choice.

Each oracle has a batched `check(question, completions) -> list[bool]`; a completion is the text
of the assistant's whole reply (any forced reply prefix included).

* `MathOracle`: `math-verify` equivalence of the reply's final answer with `question.answer`.
  math-verify times out with `signal.alarm`, which works only in the main thread: elsewhere the
  oracle disables its timeouts (run it under an outer timeout, e.g. a process pool).
* `CodeOracle`: the reply's code (last fenced block, else the raw text) run against
  `question.tests` in `phi4_jax.synth`'s sandbox; a reply that does not define
  `question.entry_point` is appended to `question.context` (HumanEval-style continuation).
* `ChoiceOracle`: the letter the reply commits to (e.g. "answer: (B)") equals `question.answer`.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Question:
    """A problem with what its oracle needs.

    prompt: the user message. answer: the gold answer (math) or letter (multiple choice).
    tests / entry_point / context: code problems (HumanEval: tests define `check(candidate)`).
    choices: multiple-choice options (letters A, B, ... in order); in a questions file a
      list of strings (a string is refused, not split into letters).
    reply_prefix: text the assistant's reply is forced to start with (part of the prompt ids).
    """

    id: str
    prompt: str
    answer: str = ""
    kind: str = "math"
    tests: str = ""
    entry_point: str | None = None
    context: str = ""
    choices: tuple[str, ...] = ()
    reply_prefix: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)


class Oracle(Protocol):
    """Decides whether each completion solves the question."""

    def check(self, question: Question, completions: Sequence[str]) -> list[bool]:
        ...


class MathOracle:
    """Answer equivalence by `math-verify` (parse gold and reply, then `verify`)."""

    def __init__(self, timeout_s: int = 5):
        self.timeout_s = timeout_s
        self._gold: dict[str, Any] = {}

    def _timeouts(self) -> int | None:
        main = threading.current_thread() is threading.main_thread()
        return self.timeout_s if main else None  # signal.alarm only works in the main thread

    def gold(self, question: Question) -> Any:
        """The parsed gold answer (cached per question id); ValueError if it does not parse."""
        if question.id not in self._gold:
            from phi4_jax.synth.math_verify import parse_gold  # shared with eval and workflows

            # a bare gold answer is read as math ("2^{997}", "sqrt(2)"), as math-verify advises
            parsed = parse_gold(question.answer, self._timeouts())
            if not parsed:
                raise ValueError(f"question {question.id}: math-verify cannot parse the gold "
                                 f"answer {question.answer!r}")
            self._gold[question.id] = parsed
        return self._gold[question.id]

    def check(self, question: Question, completions: Sequence[str]) -> list[bool]:
        from math_verify import parse, verify

        gold, t = self.gold(question), self._timeouts()
        out = []
        for text in completions:
            try:
                pred = parse(text, parsing_timeout=t)
                out.append(bool(pred) and bool(verify(gold, pred, timeout_seconds=t)))
            except Exception:  # math-verify raises on pathological input: not a success
                out.append(False)
        return out


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def extract_code(text: str) -> str:
    """The last fenced code block of a reply, or the whole reply when it has none."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


class CodeOracle:
    """Runs each reply's code against the question's tests in the sandbox (`check_many`)."""

    def __init__(self, timeout_s: float = 10.0, max_workers: int | None = None,
                 config: Any = None):
        self.timeout_s, self.max_workers, self.config = timeout_s, max_workers, config

    def program(self, question: Question, completion: str) -> str:
        code = extract_code(completion)
        ep = question.entry_point
        if ep and not re.search(rf"^\s*def\s+{re.escape(ep)}\s*\(", code, re.M):
            code = question.context + code
        return code

    def check(self, question: Question, completions: Sequence[str]) -> list[bool]:
        from phi4_jax.synth import CheckCase, SandboxConfig, check_many

        config = self.config or SandboxConfig(timeout_s=self.timeout_s)
        cases = [CheckCase(self.program(question, c), question.tests, question.entry_point)
                 for c in completions]
        return [r.passed for r in check_many(cases, config=config, max_workers=self.max_workers)]


_LETTER_PATTERNS = (
    r"(?i:answer)(?:\s+(?i:is))?[\s:=*(]*([A-Z])\b",  # "answer is (B)", "**Answer:** B"
    r"^\s*\(?([A-Z])[).:]",                           # "B) ...", "(B) ...", "B. ..."
    r"^\s*\(?([A-Z])\)?\s*$",                          # the reply is just a letter
)


def extract_choice(text: str, n_choices: int = 26) -> str | None:
    """The option letter a reply commits to, or None (the last "answer ..." mention wins)."""
    letters = {chr(ord("A") + i) for i in range(n_choices)}
    for pattern in _LETTER_PATTERNS:
        found = [m for m in re.findall(pattern, text, re.M) if m in letters]
        if found:
            return found[-1]
    return None


class ChoiceOracle:
    """Multiple choice: the committed letter equals `question.answer` (a letter)."""

    def check(self, question: Question, completions: Sequence[str]) -> list[bool]:
        gold = question.answer.strip().strip("()").upper()
        n = len(question.choices) or 26
        return [extract_choice(c, n) == gold for c in completions]


ORACLES = {"math": MathOracle, "code": CodeOracle, "choice": ChoiceOracle}


def oracle_for(kind: str, **kwargs: Any) -> Oracle:
    """A fresh oracle for a question kind ('math', 'code', 'choice')."""
    if kind not in ORACLES:
        raise ValueError(f"unknown oracle kind {kind!r}; known: {sorted(ORACLES)}")
    return ORACLES[kind](**kwargs)
