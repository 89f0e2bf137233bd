"""The teacher of the refusal workflow: correct answers, refusals and bogus questions.

`TemplateTeacher` is deterministic and offline (templates picked by a hash of the seed id);
`OpenAITeacher` asks any OpenAI-compatible server (`phi4_jax.posttrain.remote`). A teacher that
cannot answer raises `TeacherError`; the workflow counts it per seed and goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from phi4_jax.posttrain.refusal.seeds import TriviaSeed
from phi4_jax.posttrain.remote import ChatModel, ServerError


class Teacher(Protocol):
    name: str

    def answer(self, seed: TriviaSeed) -> str: ...
    def refusal(self, seed: TriviaSeed) -> str: ...
    def bogus(self, seed: TriviaSeed) -> str: ...
    def bogus_refusal(self, seed: TriviaSeed, bogus_question: str) -> str: ...


class TemplateTeacher:
    """Deterministic offline teacher: templates picked by a hash of the seed id."""

    name = "template"
    _REFUSALS = ("I'm not sure about that, and I'd rather not guess.",
                 "I don't know the answer to that question.",
                 "I'm not certain, so I won't guess an answer.")
    _PLACES = ("Veltmoor", "Quastria", "Ordenvale", "Brisk Harbor", "Lunmark")

    def _pick(self, seed: TriviaSeed, options: Sequence[str]) -> str:
        return options[int(hashlib.sha1(seed.id.encode()).hexdigest(), 16) % len(options)]

    def answer(self, seed: TriviaSeed) -> str:
        return f"The answer is {seed.answer}."

    def refusal(self, seed: TriviaSeed) -> str:
        return self._pick(seed, self._REFUSALS)

    def bogus(self, seed: TriviaSeed) -> str:
        q = seed.question.rstrip(" ?")
        return f"In the 1897 census of {self._pick(seed, self._PLACES)}, {q[:1].lower()}{q[1:]}?"

    def bogus_refusal(self, seed: TriviaSeed, bogus_question: str) -> str:
        place = next((p for p in self._PLACES if p in bogus_question), "that place")
        return (f"I can't find any reliable record of an 1897 census of {place}, so I can't "
                "answer that.")


class TeacherError(RuntimeError):
    """The teacher gave no usable text; the message lists each attempt's error."""


class OpenAITeacher:
    """A teacher behind any OpenAI-compatible server (one short chat request per text, retried
    `attempts` times when it fails or is empty; the client retries transport errors itself)."""

    PROMPTS = {
        "answer": "Answer this trivia question correctly in one short sentence. Question: {q}\n"
                  "(The correct answer is: {a})",
        "refusal": "Write one short sentence in which an assistant politely says it does not "
                   "know the answer to this question and will not guess: {q}",
        "bogus": "Rewrite this trivia question so that it asks about a plausible-sounding but "
                 "nonexistent person, place, work or event, making it unanswerable. Reply with "
                 "the new question only.\nQuestion: {q}",
        "bogus_refusal": "Write one short sentence in which an assistant says it cannot find "
                         "the premise of this question and therefore cannot answer it: {q}",
    }

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 client: Any = None, attempts: int = 2, max_retries: int = 3,
                 timeout: float = 120.0, temperature: float = 0.7):
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused",
                                   max_retries=max_retries, timeout=timeout)
        self.model, self.name = ChatModel(client, model, max_tokens=200), model
        self.attempts, self.temperature = attempts, temperature

    def _ask(self, kind: str, **fields: str) -> str:
        errors = []
        messages = [{"role": "user", "content": self.PROMPTS[kind].format(**fields)}]
        for _ in range(self.attempts):
            try:
                replies = self.model.complete(messages, temperature=self.temperature)
            except ServerError as e:
                errors.append(str(e))
                continue
            text = replies[0].text.strip() if replies else ""
            if text:
                return text
            errors.append("empty reply")
        raise TeacherError(f"teacher {kind!r} failed: {'; '.join(errors)}")

    def answer(self, seed: TriviaSeed) -> str:
        return self._ask("answer", q=seed.question, a=seed.answer)

    def refusal(self, seed: TriviaSeed) -> str:
        return self._ask("refusal", q=seed.question)

    def bogus(self, seed: TriviaSeed) -> str:
        return self._ask("bogus", q=seed.question)

    def bogus_refusal(self, seed: TriviaSeed, bogus_question: str) -> str:
        return self._ask("bogus_refusal", q=bogus_question)
