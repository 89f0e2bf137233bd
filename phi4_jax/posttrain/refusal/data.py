"""Hallucination-mitigation data (Phi-4 report): answer when usually right, refuse otherwise.

From trivia seeds (`phi4_jax.posttrain.refusal.seeds`) the policy's accuracy is estimated by
sampling `samples` replies per question and grading them (correct / refusal / wrong): with
this project's model in-process (`estimate_accuracy`, over a `Sampler`) or behind an
OpenAI-compatible server (the `estimates` stage of `phi4_jax.posttrain.refusal.workflow`). A
teacher (`phi4_jax.posttrain.refusal.teachers`) writes a correct answer, a refusal, a bogus
(unanswerable) variant of the question and a refusal to it. Then (`seed_data`, per seed)

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
from typing import Protocol

from phi4_jax.io import BadInputReport
from phi4_jax.posttrain.records import Pair, SFTExample
from phi4_jax.posttrain.refusal.seeds import Grade, TriviaSeed, grade, normalize
from phi4_jax.posttrain.refusal.teachers import Teacher, TeacherError
from phi4_jax.posttrain.sampler import Sampler

REASONS = {"teacher_failed": "the teacher gave no usable text for a seed (or its server did "
                             "not answer)",
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
    for est in estimates:
        try:
            answer, refusal = teacher.answer(est.seed), teacher.refusal(est.seed)
            bogus = teacher.bogus(est.seed)
            texts = {"answer": answer, "refusal": refusal, "bogus": bogus,
                     "bogus_refusal": teacher.bogus_refusal(est.seed, bogus)}
        except TeacherError as e:
            stats.bad.bad(source, "teacher_failed", f"seed {est.seed.id}", str(e))
            continue
        stats.bad.ok(source)
        seed_sft, seed_pairs, counts = seed_data(est, texts, tokenizer, config, teacher.name)
        sft += seed_sft
        pairs += seed_pairs
        stats.counts.update(counts)
    return sft, pairs, stats


def seed_data(est: SeedEstimate, texts: dict[str, str], tokenizer: TextTokenizer,
              config: RefusalConfig, teacher_name: str
              ) -> tuple[list[SFTExample], list[Pair], collections.Counter]:
    """One seed's SFT examples and truncated pairs from its estimate and the teacher's texts
    (answer, refusal, bogus, bogus_refusal); the counts by kind."""
    sft: list[SFTExample] = []
    pairs: list[Pair] = []
    counts: collections.Counter = collections.Counter()
    k = config.truncate
    seed, acc = est.seed, est.accuracy
    answer, refusal = texts["answer"], texts["refusal"]
    meta = {"seed_id": seed.id, "accuracy": acc, "samples": len(est.replies),
            "teacher": teacher_name}
    usually_right = acc >= config.usually
    sft.append(SFTExample(f"refusal/{seed.id}/{'answer' if usually_right else 'refuse'}",
                          ({"role": "user", "content": seed.question},
                           {"role": "assistant", "content": answer if usually_right
                            else refusal}), "refusal", meta))
    sft.append(SFTExample(f"refusal/{seed.id}/bogus",
                          ({"role": "user", "content": texts["bogus"]},
                           {"role": "assistant", "content": texts["bogus_refusal"]}),
                          "refusal", meta | {"bogus": True}))
    counts["sft_answer" if usually_right else "sft_refusal"] += 1
    counts["sft_bogus"] += 1
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
            counts["no_wrong_sample"] += 1  # only refusals among the misses
    for kind, chosen, rejected, extra in candidates:
        if not chosen or not rejected or chosen == rejected:
            counts["skipped_identical_after_truncation"] += 1
            continue
        pairs.append(Pair(f"refusal/{seed.id}/{kind}", est.prompt_ids, chosen, rejected,
                          "refusal", tokenizer.tokenizer_name,
                          meta | {"kind": kind, "truncate": k} | extra))
        counts[kind] += 1
    return sft, pairs, counts
