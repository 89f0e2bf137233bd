"""The teacher of the refusal workflow: correct answers, refusals and bogus questions.

`TemplateTeacher` is deterministic and offline (templates picked by a hash of the seed id); a
served teacher is asked `TEACHER_PROMPTS` by the refusal workflow's `texts` stage, through the
engine's client (`phi4_jax.posttrain.refusal.workflow`). A teacher that cannot answer raises
`TeacherError` (the stage: a `teacher_failed` reject); the job counts it per seed and goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from phi4_jax.posttrain.refusal.seeds import TriviaSeed


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


# What a served teacher is asked (the refusal workflow's `texts` stage, as engine templates:
# ${question} and ${answer} are the seed's; bogus_refusal's question is the bogus one).
TEACHER_PROMPTS = {
    "answer": "Answer this trivia question correctly in one short sentence. Question: "
              "${question}\n(The correct answer is: ${answer})",
    "refusal": "Write one short sentence in which an assistant politely says it does not "
               "know the answer to this question and will not guess: ${question}",
    "bogus": "Rewrite this trivia question so that it asks about a plausible-sounding but "
             "nonexistent person, place, work or event, making it unanswerable. Reply with "
             "the new question only.\nQuestion: ${question}",
    "bogus_refusal": "Write one short sentence in which an assistant says it cannot find "
                     "the premise of this question and therefore cannot answer it: ${question}",
}
