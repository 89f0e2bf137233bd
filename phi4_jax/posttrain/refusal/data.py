"""Hallucination-mitigation data (Phi-4 report): answer when usually right, refuse otherwise.

From trivia seeds (`phi4_jax.posttrain.refusal.seeds`) the policy's accuracy is estimated by
sampling `samples` replies per question and grading them (correct / refusal / wrong): with
this project's model in-process (`estimate_accuracy`, over a `Sampler`) or behind an
OpenAI-compatible server (`estimate_accuracy_served`). A teacher
(`phi4_jax.posttrain.refusal.teachers`) writes a correct answer, a refusal, a bogus
(unanswerable) variant of the question and a refusal to it. Then

* SFT: the answer where the model is usually right (accuracy >= `usually`), the refusal where
  it is usually wrong, and the bogus question with its refusal always;
* DPO, in token ids, every completion truncated to its first `truncate` (5) tokens:
  correct > refusal where the model is sometimes right (accuracy > 0), and
  refusal > wrong where it is sometimes wrong (accuracy < 1); the wrong reply is the policy's
  most frequent wrong sample, kept as its ids (the sampled ids in-process; a served reply's
  text encoded again).

Teacher and server failures are counted per seed in a `BadInputReport`, never fatal.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from phi4_jax.io import BadInputReport
from phi4_jax.posttrain.records import Pair, SFTExample
from phi4_jax.posttrain.refusal.seeds import Grade, TriviaSeed, grade, normalize
from phi4_jax.posttrain.refusal.teachers import Teacher, TeacherError
from phi4_jax.posttrain.remote import ChatModel, Phi4Text, Reply, ServerError
from phi4_jax.posttrain.sampler import Sampler

REASONS = {"teacher_failed": "the teacher gave no usable text for a seed",
           "policy_failed": "the policy's server did not answer for a seed"}


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


def estimate_accuracy_served(model: ChatModel, text: Phi4Text, seeds: Sequence[TriviaSeed],
                             config: RefusalConfig, *, temperature: float = 1.0,
                             max_tokens: int = 256, max_workers: int = 8, progress: bool = True,
                             report: BadInputReport | None = None, source: str = "policy"
                             ) -> list[SeedEstimate]:
    """`estimate_accuracy` with the policy behind an OpenAI-compatible server: each reply's
    ids are `text.reply_ids` of its text. A seed the server fails on is counted in `report`
    ('policy_failed' under `source`) and left out."""
    from tqdm.auto import tqdm

    report = report if report is not None else BadInputReport()
    report.file(source)

    def one(seed: TriviaSeed) -> list[Reply]:
        messages = [{"role": "user", "content": seed.question}]
        return model.sample(messages, config.samples, temperature=temperature,
                            max_tokens=max_tokens)

    out = []
    with ThreadPoolExecutor(max_workers=max_workers) as pool, tqdm(
            total=len(seeds), unit="seed", desc="accuracy", disable=not progress) as bar:
        for seed, fut in [(s, pool.submit(one, s)) for s in seeds]:
            try:
                replies = fut.result()
            except ServerError as e:
                report.bad(source, "policy_failed", f"seed {seed.id}", str(e))
                continue
            finally:
                bar.update()
            report.ok(source)
            prompt = tuple(text.render([{"role": "user", "content": seed.question}]))
            out.append(SeedEstimate(seed, prompt, [(text.reply_ids(r), r.text,
                                                    grade(r.text, seed)) for r in replies]))
    return out


@dataclasses.dataclass
class RefusalStats:
    """What `build_refusal_data` made (`counts` by kind, SFT and pair); seeds the teacher
    failed on are bad input in `bad` ('teacher_failed')."""

    seeds: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    bad: BadInputReport = dataclasses.field(default_factory=BadInputReport)


class TextTokenizer(Protocol):
    """What the pairs need from the policy's tokenizer (a `Sampler` or a `Phi4Text` has it)."""

    tokenizer_name: str

    def encode(self, text: str) -> list[int]: ...


def build_refusal_data(estimates: Sequence[SeedEstimate], teacher: Teacher,
                       tokenizer: TextTokenizer, config: RefusalConfig, *,
                       report: BadInputReport | None = None, source: str = "teacher"
                       ) -> tuple[list[SFTExample], list[Pair], RefusalStats]:
    """SFT examples and truncated DPO pairs from accuracy estimates (module docstring); pair
    ids are `tokenizer`'s. Teacher failures are counted in `report` under `source`."""
    sft: list[SFTExample] = []
    pairs: list[Pair] = []
    stats = RefusalStats(seeds=len(estimates),
                         bad=report if report is not None else BadInputReport())
    stats.bad.file(source)
    k = config.truncate
    for est in estimates:
        seed, acc = est.seed, est.accuracy
        try:
            answer, refusal = teacher.answer(seed), teacher.refusal(seed)
            bogus = teacher.bogus(seed)
            bogus_refusal = teacher.bogus_refusal(seed, bogus)
        except TeacherError as e:
            stats.bad.bad(source, "teacher_failed", f"seed {seed.id}", str(e))
            continue
        stats.bad.ok(source)
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
        stats.counts["sft_answer" if usually_right else "sft_refusal"] += 1
        stats.counts["sft_bogus"] += 1
        refusal_ids = tuple(tokenizer.encode(refusal))[:k]
        candidates = []
        if acc > 0:  # sometimes right: the correct answer beats a refusal
            candidates.append(("correct>refusal", tuple(tokenizer.encode(answer))[:k],
                               refusal_ids, {}))
        if acc < 1:  # sometimes wrong: a refusal beats the policy's (most frequent) wrong reply
            wrong = collections.Counter(normalize(t) for _, t, g in est.replies if g == "wrong")
            if wrong:
                top = wrong.most_common(1)[0][0]
                ids = next(i for i, t, g in est.replies if g == "wrong" and normalize(t) == top)
                candidates.append(("refusal>wrong", refusal_ids, tuple(ids)[:k],
                                   {"wrong_text": top, "wrong_count": wrong[top]}))
            else:
                stats.counts["no_wrong_sample"] += 1  # only refusals among the misses
        for kind, chosen, rejected, extra in candidates:
            if not chosen or not rejected or chosen == rejected:
                stats.counts["skipped_identical_after_truncation"] += 1
                continue
            pairs.append(Pair(f"refusal/{seed.id}/{kind}", est.prompt_ids, chosen, rejected,
                              "refusal", tokenizer.tokenizer_name,
                              meta | {"kind": kind, "truncate": k} | extra))
            stats.counts[kind] += 1
    return sft, pairs, stats
