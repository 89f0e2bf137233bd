"""Hallucination-mitigation data (Phi-4 report): answer when usually right, refuse otherwise.

From trivia seeds (question, gold answer, aliases) the policy's accuracy is estimated by
sampling `samples` replies per question and grading them (`grade`: correct / refusal / wrong).
A teacher writes a correct answer, a refusal, a bogus (unanswerable) variant of the question
and a refusal to it. Then

* SFT: the answer where the model is usually right (accuracy >= `usually`), the refusal where
  it is usually wrong, and the bogus question with its refusal always;
* DPO, in token ids, every completion truncated to its first `truncate` (5) tokens:
  correct > refusal where the model is sometimes right (accuracy > 0), and
  refusal > wrong where it is sometimes wrong (accuracy < 1); the wrong reply is the policy's
  most frequent wrong sample, kept as the ids it generated.

The teacher is `TemplateTeacher` (deterministic, offline) or `OpenAITeacher` (any
OpenAI-compatible server). Malformed seeds and teacher failures are counted, never fatal.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import string
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from phi4_jax.posttrain.jsonl import read_objects
from phi4_jax.posttrain.pairs import Pair, SFTExample
from phi4_jax.posttrain.sampler import Sampler

Grade = Literal["correct", "refusal", "wrong"]


@dataclasses.dataclass(frozen=True)
class TriviaSeed:
    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()


def read_seeds(path: str) -> tuple[list[TriviaSeed], list[str]]:
    """Seeds from JSONL {"id", "question", "answer", "aliases"?}; bad lines are reported."""
    seeds, problems, seen = [], [], set()
    for line_no, obj, error in read_objects(path):
        try:
            if error:
                raise ValueError(error)
            for key in ("id", "question", "answer"):
                if not isinstance(obj.get(key), str) or not obj[key].strip():
                    raise ValueError(f"{key}: missing or not a non-empty string")
            aliases = obj.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise ValueError("aliases: must be a list of strings")
            if obj["id"] in seen:
                raise ValueError(f"id: duplicate {obj['id']!r}")
        except ValueError as e:
            problems.append(f"{path}:{line_no}: {e}")
            continue
        seen.add(obj["id"])
        seeds.append(TriviaSeed(obj["id"], obj["question"], obj["answer"], tuple(aliases)))
    return seeds, problems


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
    pass


class OpenAITeacher:
    """A teacher behind any OpenAI-compatible server (one short chat request per text)."""

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
                 temperature: float = 0.7):
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused",
                                   max_retries=max_retries)
        self.client, self.name, self.attempts, self.temperature = (client, model, attempts,
                                                                    temperature)

    def _ask(self, kind: str, **fields: str) -> str:
        import openai

        errors = []
        for _ in range(self.attempts):
            try:
                out = self.client.chat.completions.create(
                    model=self.name, temperature=self.temperature, max_tokens=200,
                    messages=[{"role": "user", "content": self.PROMPTS[kind].format(**fields)}])
                text = (out.choices[0].message.content or "").strip() if out.choices else ""
            except openai.APIError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
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


@dataclasses.dataclass(frozen=True)
class RefusalConfig:
    samples: int = 8
    usually: float = 0.5
    truncate: int = 5
    seeds_per_batch: int = 8


@dataclasses.dataclass
class SeedEstimate:
    seed: TriviaSeed
    prompt_ids: tuple[int, ...]
    replies: list[tuple[tuple[int, ...], str, Grade]]

    @property
    def accuracy(self) -> float:
        return sum(g == "correct" for _, _, g in self.replies) / len(self.replies)


def estimate_accuracy(sampler: Sampler, seeds: Sequence[TriviaSeed], config: RefusalConfig,
                      *, progress: bool = True) -> list[SeedEstimate]:
    """Samples `config.samples` replies per seed (batched across seeds) and grades them."""
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(seeds), unit="seed", desc="accuracy", disable=not progress) as bar:
        for i in range(0, len(seeds), config.seeds_per_batch):
            batch = seeds[i:i + config.seeds_per_batch]
            prompts = [tuple(sampler.render([{"role": "user", "content": s.question}]))
                       for s in batch]
            for seed, prompt, rollouts in zip(batch, prompts,
                                              sampler.sample(prompts, config.samples)):
                replies = []
                for r in rollouts:
                    text = sampler.decode(r.tokens)
                    replies.append((r.tokens, text, grade(text, seed)))
                out.append(SeedEstimate(seed, prompt, replies))
            bar.update(len(batch))
    return out


@dataclasses.dataclass
class RefusalReport:
    seeds: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)


def build_refusal_data(estimates: Sequence[SeedEstimate], teacher: Teacher, sampler: Sampler,
                       config: RefusalConfig) -> tuple[list[SFTExample], list[Pair], RefusalReport]:
    """SFT examples and truncated DPO pairs from accuracy estimates (module docstring)."""
    sft: list[SFTExample] = []
    pairs: list[Pair] = []
    report = RefusalReport(seeds=len(estimates))
    k = config.truncate
    for est in estimates:
        seed, acc = est.seed, est.accuracy
        try:
            answer, refusal = teacher.answer(seed), teacher.refusal(seed)
            bogus = teacher.bogus(seed)
            bogus_refusal = teacher.bogus_refusal(seed, bogus)
        except TeacherError as e:
            report.failures.append(f"{seed.id}: {e}")
            continue
        meta = {"seed_id": seed.id, "accuracy": acc, "samples": len(est.replies),
                "teacher": teacher.name}
        usually_right = acc >= config.usually
        sft.append(SFTExample(f"refusal/{seed.id}/{'answer' if usually_right else 'refuse'}",
                              ({"role": "user", "content": seed.question},
                               {"role": "assistant", "content": answer if usually_right
                                else refusal}), "refusal", meta))
        sft.append(SFTExample(f"refusal/{seed.id}/bogus",
                              ({"role": "user", "content": bogus},
                               {"role": "assistant", "content": bogus_refusal}),
                              "refusal", meta | {"bogus": True}))
        report.counts["sft_answer" if usually_right else "sft_refusal"] += 1
        report.counts["sft_bogus"] += 1
        refusal_ids = tuple(sampler.encode(refusal))[:k]
        candidates = []
        if acc > 0:  # sometimes right: the correct answer beats a refusal
            candidates.append(("correct>refusal", tuple(sampler.encode(answer))[:k],
                               refusal_ids, {}))
        if acc < 1:  # sometimes wrong: a refusal beats the policy's (most frequent) wrong reply
            wrong = collections.Counter(normalize(t) for _, t, g in est.replies if g == "wrong")
            if wrong:
                top = wrong.most_common(1)[0][0]
                ids = next(i for i, t, g in est.replies if g == "wrong" and normalize(t) == top)
                candidates.append(("refusal>wrong", refusal_ids, tuple(ids)[:k],
                                   {"wrong_text": top, "wrong_count": wrong[top]}))
            else:
                report.counts["no_wrong_sample"] += 1  # only refusals among the misses
        for kind, chosen, rejected, extra in candidates:
            if not chosen or not rejected or chosen == rejected:
                report.counts["skipped_identical_after_truncation"] += 1
                continue
            pairs.append(Pair(f"refusal/{seed.id}/{kind}", est.prompt_ids, chosen, rejected,
                              "refusal", sampler.tokenizer_name,
                              meta | {"kind": kind, "truncate": k} | extra))
            report.counts[kind] += 1
    return sft, pairs, report
