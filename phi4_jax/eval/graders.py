"""SimpleQA graders: a reply to a short factual question is correct, not attempted or incorrect.

    RuleGrader()                 the refusal workflow's rule (`posttrain.refusal.seeds.grade`):
                                 gold answer or alias as whole words -> correct; a refusal
                                 phrase -> not attempted; else incorrect
    LLMGrader(client)            asks a grader model through the workflow engine's cached
                                 `LLMClient` (SimpleQA's A / B / C protocol)

A grader is any object with `grade(items) -> list[str]` over (question, gold, aliases, reply).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, Protocol

Item = tuple[str, str, Sequence[str], str]  # question, gold answer, aliases, reply


class Grader(Protocol):
    name: str

    def grade(self, items: Sequence[Item]) -> list[str]: ...


class RuleGrader:
    """The same decision the refusal-data workflow makes, mapped to SimpleQA's buckets."""

    name = "rule"
    _BUCKET = {"correct": "correct", "refusal": "not_attempted", "wrong": "incorrect"}

    def grade(self, items: Sequence[Item]) -> list[str]:
        from phi4_jax.posttrain.refusal.seeds import TriviaSeed, grade

        return [self._BUCKET[grade(reply, TriviaSeed("", q, gold, tuple(aliases)))]
                for q, gold, aliases, reply in items]


GRADER_PROMPT = """You grade answers to short factual questions.
Question: {question}
Gold answer: {gold}{aliases}
Predicted answer: {reply}

Reply with one letter:
A if the predicted answer contains the gold answer's meaning and nothing contradicting it,
B if it gives an answer that is wrong or contradicts the gold answer,
C if it does not attempt an answer (declines, says it does not know, or only hedges)."""
_LETTER = re.compile(r"\b([ABC])\b")
_BUCKETS = {"A": "correct", "B": "incorrect", "C": "not_attempted"}


class LLMGrader:
    """A grader model behind an OpenAI-compatible server, via `phi4_jax.synth.LLMClient` (its
    SQLite cache makes a rerun ask nothing). An unreadable verdict counts as incorrect."""

    name = "llm"

    def __init__(self, client: Any, *, max_tokens: int = 8):
        self.client, self.max_tokens = client, max_tokens

    def grade(self, items: Sequence[Item]) -> list[str]:
        async def one(i: int, item: Item) -> str:
            q, gold, aliases, reply = item
            also = f" (also accepted: {', '.join(aliases)})" if aliases else ""
            prompt = GRADER_PROMPT.format(question=q, gold=gold, aliases=also, reply=reply)
            samples = await self.client.chat([{"role": "user", "content": prompt}],
                                             record_id=f"grade-{i}", temperature=0.0,
                                             max_tokens=self.max_tokens)
            found = _LETTER.search(samples[0].text.strip())
            return _BUCKETS[found.group(1)] if found else "incorrect"

        async def main() -> list[str]:
            return list(await asyncio.gather(*(one(i, it) for i, it in enumerate(items))))

        return asyncio.run(main())
