"""Refusal data from a scripted policy and teacher: SFT choices and 5-token pairs."""

from __future__ import annotations

import json

from phi4_jax.posttrain.records import parse_pair, parse_sft
from phi4_jax.posttrain.refusal import (
    RefusalConfig,
    TeacherError,
    TemplateTeacher,
    TriviaSeed,
    build_refusal_data,
    estimate_accuracy,
    grade,
    read_seeds,
)
from phi4_jax.posttrain.sampler import Rollout

EOS = 0


class WordSampler:
    """Word-level tokenizer + a policy that replies from a fixed list per question (cycling)."""

    tokenizer_name = "words"

    def __init__(self, replies: dict[str, list[str]]):
        self.replies, self.vocab = replies, {"<eos>": EOS}

    def encode(self, text):
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]

    def decode(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        return " ".join(inverse[i] for i in ids if i != EOS)

    def render(self, messages):
        return [self.vocab.setdefault("<user>", len(self.vocab))] + self.encode(
            messages[-1]["content"]) + [self.vocab.setdefault("<assistant>", len(self.vocab))]

    def sample(self, prefixes, n):
        out = []
        for prefix in prefixes:
            question = self.decode(prefix[1:-1])
            texts = self.replies[question]
            out.append([Rollout(tuple(self.encode(texts[j % len(texts)])) + (EOS,),
                                (0.0,) * 0, True) for j in range(n)])
        return out


SEEDS = [TriviaSeed("s1", "Capital of France ?", "Paris"),
         TriviaSeed("s2", "Who wrote Hamlet ?", "William Shakespeare", ("Shakespeare",)),
         TriviaSeed("s3", "Tallest mountain ?", "Mount Everest", ("Everest",)),
         TriviaSeed("s4", "Year of the Peace of Westphalia ?", "1648")]
REPLIES = {  # 8 samples each -> accuracy 1, 0.75, 0.25, 0
    "Capital of France ?": ["It is Paris ."],
    "Who wrote Hamlet ?": ["Shakespeare wrote it .", "Shakespeare did .", "It was Marlowe .",
                           "Hamlet was by Shakespeare ."],
    "Tallest mountain ?": ["K2 is the tallest mountain on earth .", "Everest .",
                           "K2 is the tallest mountain on earth .", "I do not know ."],
    "Year of the Peace of Westphalia ?": ["It was 1748 .", "I do not know .", "In 16480 .",
                                          "It was 1748 ."],
}


def test_grade_normalizes_and_spots_refusals():
    seed = TriviaSeed("x", "q", "The Beatles", ("Beatles",))
    assert grade("It was the beatles!", seed) == "correct"
    assert grade("I don't know, sorry.", seed) == "refusal"
    assert grade("The Rolling Stones.", seed) == "wrong"
    year = TriviaSeed("y", "q", "1648")
    assert grade("In 16480.", year) == "wrong"  # whole words only
    assert grade("1648, I think", year) == "correct"


def test_sft_examples_and_truncated_pairs_from_a_scripted_model():
    sampler = WordSampler(REPLIES)
    config = RefusalConfig(samples=8, usually=0.5, truncate=5, seeds_per_batch=3)
    estimates = estimate_accuracy(sampler, SEEDS, config, progress=False)
    assert [e.accuracy for e in estimates] == [1.0, 0.75, 0.25, 0.0]
    teacher = TemplateTeacher()
    sft, pairs, report = build_refusal_data(estimates, teacher, sampler, config)

    by_id = {e.id: e for e in sft}
    assert set(by_id) == {"refusal/s1/answer", "refusal/s2/answer", "refusal/s3/refuse",
                          "refusal/s4/refuse"} | {f"refusal/s{i}/bogus" for i in range(1, 5)}
    assert by_id["refusal/s2/answer"].messages[1]["content"] == "The answer is William Shakespeare."
    assert by_id["refusal/s3/refuse"].messages[1]["content"] == teacher.refusal(SEEDS[2])
    bogus = by_id["refusal/s4/bogus"].messages
    assert bogus[0]["content"] == teacher.bogus(SEEDS[3]) != SEEDS[3].question
    assert grade(bogus[1]["content"], SEEDS[3]) == "refusal"
    for example in sft:
        assert parse_sft(example.to_json()) == example

    got = {p.id: p for p in pairs}
    assert set(got) == {"refusal/s1/correct>refusal", "refusal/s2/correct>refusal",
                        "refusal/s3/correct>refusal", "refusal/s2/refusal>wrong",
                        "refusal/s3/refusal>wrong", "refusal/s4/refusal>wrong"}
    words = lambda ids: sampler.decode(ids).split()
    for seed, est in zip(SEEDS, estimates):
        refusal = teacher.refusal(seed).split()[:5]
        if f"refusal/{seed.id}/correct>refusal" in got:
            p = got[f"refusal/{seed.id}/correct>refusal"]
            assert words(p.chosen_ids) == teacher.answer(seed).split()[:5]
            assert words(p.rejected_ids) == refusal
        if f"refusal/{seed.id}/refusal>wrong" in got:
            p = got[f"refusal/{seed.id}/refusal>wrong"]
            assert words(p.chosen_ids) == refusal
            assert p.prompt_ids == est.prompt_ids
    # the most frequent wrong reply, as the ids the policy generated, cut to 5 tokens
    s3 = got["refusal/s3/refusal>wrong"]
    assert words(s3.rejected_ids) == ["K2", "is", "the", "tallest", "mountain"]
    assert s3.meta["wrong_count"] == 4
    s4 = got["refusal/s4/refusal>wrong"]
    assert s4.rejected_ids == tuple(sampler.encode("It was 1748 ."))[:4] + (EOS,)  # short reply
    assert all(len(p.chosen_ids) <= 5 and len(p.rejected_ids) <= 5 for p in pairs)
    for p in pairs:
        assert parse_pair(p.to_json()) == p and p.tokenizer == "words"
    assert report.counts["sft_answer"] == 2 and report.counts["sft_bogus"] == 4
    assert report.counts["refusal>wrong"] == 3 and report.bad.bad_total == 0
    assert report.bad.records_ok == 4  # every seed got its teacher texts


def test_pairs_identical_after_truncation_are_skipped():
    class SameTeacher(TemplateTeacher):
        def refusal(self, seed):
            return "The answer is unknown to me, sorry."  # same first 3 words as the answer

    sampler = WordSampler({"Q ?": ["The answer is Bo .", "no idea"]})
    seed = TriviaSeed("q", "Q ?", "Bo")
    estimates = estimate_accuracy(sampler, [seed], RefusalConfig(samples=2), progress=False)
    _, pairs, report = build_refusal_data(estimates, SameTeacher(), sampler,
                                          RefusalConfig(truncate=3))
    assert report.counts["skipped_identical_after_truncation"] == 1
    assert [p.id for p in pairs] == ["refusal/q/refusal>wrong"]


def test_read_seeds_counts_malformed_lines(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "question": "Q?", "answer": "A", "aliases": ["AA"]}),
        json.dumps({"id": "b", "question": "Q?"}),
        "[",
        json.dumps({"id": "c", "question": "Q?", "answer": "C", "aliases": "C"}),
        json.dumps({"id": "a", "question": "Q2?", "answer": "B"}),
        "",
        json.dumps({"id": "d", "question": "Q?", "answer": "D"}),
    ]))
    with open(path, "ab") as f:  # invalid UTF-8 inside a record: reported, the next one kept
        f.write(b'\n{"id": "e", "question": "\xff?", "answer": 3}\n')
        f.write(json.dumps({"id": "f", "question": "Q?", "answer": "F"}).encode() + b"\n")
    seeds, report = read_seeds(str(path))
    assert [s.id for s in seeds] == ["a", "d", "f"] and seeds[0].aliases == ("AA",)
    # the line of invalid UTF-8 is refused by the shared line reader (phi4_jax.io.jsonl)
    assert report.records_ok == 3 and report.totals() == {
        "missing_field": 1, "malformed_json": 2, "bad_aliases": 1, "duplicate_id": 1}
    first = report.files[str(path)].first
    assert first["missing_field"] == f"{path}:2: answer: missing or not a non-empty string"
    assert first["malformed_json"].startswith(f"{path}:3: invalid JSON")
    assert first["bad_aliases"].startswith(f"{path}:4:")
    assert first["duplicate_id"] == f"{path}:5: id: duplicate 'a'"


def test_teacher_failures_are_counted_per_seed():
    class FailingTeacher(TemplateTeacher):
        def answer(self, seed):
            if "Hamlet" in seed.question:
                raise TeacherError("teacher 'answer' failed: empty reply; empty reply")
            return super().answer(seed)

    sampler = WordSampler(REPLIES)
    estimates = estimate_accuracy(sampler, SEEDS[:2], RefusalConfig(), progress=False)
    sft, pairs, report = build_refusal_data(estimates, FailingTeacher(), sampler,
                                            RefusalConfig())
    assert report.bad.totals() == {"teacher_failed": 1}
    failure = report.bad.files["teacher"].first["teacher_failed"]
    assert failure == "seed s2: teacher 'answer' failed: empty reply; empty reply"
    assert [e.id for e in sft] == ["refusal/s1/answer", "refusal/s1/bogus"]
    assert {p.id for p in pairs} == {"refusal/s1/correct>refusal"}
