"""Judge retries and any-vs-any pairs, against a real local OpenAI-compatible HTTP server."""

from __future__ import annotations

import pytest

from phi4_jax.posttrain.judge import (
    FAULT_TYPES,
    Candidate,
    JudgeError,
    JudgeItem,
    ModelBackend,
    OpenAIBackend,
    PairStats,
    build_pairs,
    judge,
    judge_all,
    make_item,
)
from phi4_jax.posttrain.records import parse_pair
from phi4_jax.posttrain.sampler import Rollout
from tests.posttrain.judge.test_judgement import good
from tests.posttrain.openai_server import ScriptedServer, scripted


def backend(server: ScriptedServer, **kwargs) -> OpenAIBackend:
    return OpenAIBackend("judge", base_url=server.url, api_key="test", **kwargs)


# -- over HTTP ---------------------------------------------------------------------------------
def test_retries_transient_500s_and_invalid_replies_over_http():
    replies = [(500, "overloaded"), (200, "not json at all"),
               (200, good(acc=9)), (200, "```json\n" + good(acc=2, faults=["comprehension"]))]
    with ScriptedServer(scripted(replies)) as server:
        j = judge(backend(server, max_retries=2), "What is 2+2?", "5", attempts=3)
    assert j.accuracy == 2 and j.faults[0].type == "comprehension"
    assert len(server.requests) == 4  # one client-level retry, then three judge attempts
    assert server.requests[0] == server.requests[1]
    followup = server.requests[3]["messages"]
    assert followup[0]["role"] == "system" and "comprehension" in followup[0]["content"]
    assert "What is 2+2?" in followup[1]["content"] and "## Reply to review\n5" in followup[1][
        "content"]
    assert [m["role"] for m in followup[2:]] == ["assistant", "user"] * 2
    assert followup[2]["content"] == "not json at all" and "no JSON object" in followup[3][
        "content"]
    assert "scores.accuracy: 9 is outside 1-5" in followup[5]["content"]


def test_gives_up_with_every_attempts_error():
    replies = [(200, "nope"), (503, "down"), (503, "down"), (200, good(acc=0))]
    with ScriptedServer(scripted(replies)) as server, pytest.raises(JudgeError) as info:
        judge(backend(server, max_retries=1), "q", "a", attempts=3)
    errors = info.value.errors
    assert len(errors) == 3
    assert "no JSON object" in errors[0]
    assert "InternalServerError" in errors[1] or "503" in errors[1]
    assert "scores.accuracy: 0 is outside 1-5" in errors[2]


def _scores_from(body: dict) -> tuple[int, str]:
    """The candidate text carries the scores the judge gives it: 'a4 s2 d5' or 'broken'."""
    reply = body["messages"][1]["content"].split("## Reply to review\n")[1]
    if reply.startswith("broken"):
        return 200, '{"faults": [], "scores": '  # truncated JSON, every time
    a, s, d = (int(x[1]) for x in reply.split()[:3])
    return 200, good(a, s, d, ["factual"] if a < 3 else [])


def test_judge_all_and_any_vs_any_pairs_over_http():
    texts = ["a4 s2 d5", "a2 s5 d5", "a4 s4 d4", "broken reply", "a1 s1 d1"]
    items = [JudgeItem(f"q{k}", f"prompt {k}", (1, 2, 3 + k),
                       tuple(Candidate(t, (100 + k, 10 + i), f"model{i}")
                             for i, t in enumerate(texts)))
             for k in range(3)]
    with ScriptedServer(_scores_from) as server:
        judgements, report = judge_all(backend(server), items, attempts=2, max_workers=4,
                                       progress=False)
    assert report.records_ok == 12 and report.totals() == {"no_valid_judgement": 3}
    first = report.files["judge"].first["no_valid_judgement"]
    assert first.startswith("q0 candidate 3: no valid judgement after 2 attempts")
    assert "no JSON object" in first
    assert len(server.requests) == 12 + 3 * 2
    scores = {0: (4, 2, 5), 1: (2, 5, 5), 2: (4, 4, 4), 4: (1, 1, 1)}
    for by, key in (("accuracy", lambda s: s[0]), ("overall", lambda s: sum(s) / 3)):
        pairs = build_pairs(items[1], judgements[1], tokenizer="tok", by=by, judge_name="judge")
        expected = {(i, j) for i in scores for j in scores if key(scores[i]) > key(scores[j])}
        got = {(p.meta["chosen"]["index"], p.meta["rejected"]["index"]) for p in pairs}
        assert got == expected, by
        for p in pairs:
            assert parse_pair(p.to_json()) == p and p.prompt_ids == (1, 2, 4)
            i, j = p.meta["chosen"]["index"], p.meta["rejected"]["index"]
            assert p.chosen_ids == (101, 10 + i) and p.rejected_ids == (101, 10 + j)
            assert p.meta["chosen"]["source"] == f"model{i}"
            assert p.meta["chosen"]["scores"]["accuracy"] == scores[i][0]
    # accuracy ties (candidates 0 and 2) give no accuracy pair; overall separates them
    assert (2, 0) in {(p.meta["chosen"]["index"], p.meta["rejected"]["index"])
                      for p in build_pairs(items[1], judgements[1], tokenizer="t", by="overall")}
    assert len(build_pairs(items[1], judgements[1], tokenizer="t", min_margin=2)) == 4
    stats = PairStats()
    assert len(build_pairs(items[1], judgements[1], tokenizer="t", stats=stats)) == 5
    assert (stats.pairs, stats.ties, stats.identical) == (5, 1, 0)  # accuracy 4 = 4: a tie


class ScriptedSampler:
    """A Sampler whose single rollout spells a fixed judge reply (one char per token)."""

    tokenizer_name = "chars"

    def __init__(self, reply: str):
        self.reply, self.prompts = reply, []

    def render(self, messages):
        return [ord(c) for c in messages[-1]["content"][:5]]

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def sample(self, prefixes, n):
        self.prompts.extend(prefixes)
        return [[Rollout(tuple(ord(c) for c in self.reply), (0.0,) * len(self.reply), True)]
                for _ in prefixes]


def test_in_process_model_backend_and_make_item():
    sampler = ScriptedSampler("review: " + good(3, 3, 3, list(FAULT_TYPES)))
    j = judge(ModelBackend(sampler), "Explain X", "X is Y.")
    assert j.overall == 3 and len(j.faults) == 4
    assert sampler.prompts == [[ord(c) for c in "## Re"]]  # the rendered judge request
    item = make_item(sampler, "q", "hi", [("ab", "gpt"), ("c", "phi")], end_ids=(7,))
    assert item.prompt_ids == (104, 105)
    assert item.candidates == (Candidate("ab", (97, 98, 7), "gpt"), Candidate("c", (99, 7), "phi"))
