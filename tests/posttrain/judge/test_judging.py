"""Judge re-asks and any-vs-any pairs, through the engine's client against a real local
OpenAI-compatible HTTP server."""

from __future__ import annotations

import asyncio

import pytest

from phi4_jax import synth
from phi4_jax.posttrain.judge import (
    JUDGE_SYSTEM,
    Candidate,
    JudgeError,
    JudgeItem,
    Judgement,
    PairStats,
    build_pairs,
    judge,
    make_item,
)
from phi4_jax.posttrain.judge.workflow import judged
from phi4_jax.posttrain.records import parse_pair
from tests.posttrain.judge.test_judgement import good
from tests.posttrain.openai_server import ScriptedServer, scripted


def client(server: ScriptedServer, **kwargs) -> synth.LLMClient:
    return synth.LLMClient(synth.ModelConfig("judge", base_url=server.url, revision=None,
                                             initial_backoff_s=0.01, **kwargs))


def run_judge(server, prompt, reply, **kwargs):
    async def go():
        c = client(server, max_retries=kwargs.pop("max_retries"))

        async def ask(messages):
            return (await c.chat(messages, temperature=0.0))[0].text
        try:
            return await judge(ask, prompt, reply, **kwargs)
        finally:
            await c.aclose()
    return asyncio.run(go())


def test_retries_transient_500s_and_invalid_replies_over_http():
    replies = [(500, "overloaded"), (200, "not json at all"),
               (200, good(acc=9)), (200, "```json\n" + good(acc=2, faults=["comprehension"]))]
    with ScriptedServer(scripted(replies)) as server:
        j = run_judge(server, "What is 2+2?", "5", attempts=3, max_retries=2)
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


def test_gives_up_with_every_attempts_error_and_passes_request_errors_up():
    replies = [(200, "nope"), (503, "down"), (200, good(acc=0)), (200, '{"faults": [], "s')]
    with ScriptedServer(scripted(replies)) as server, pytest.raises(JudgeError) as info:
        run_judge(server, "q", "a", attempts=3, max_retries=1)
    assert len(server.requests) == 4 and info.value.reason == "no_valid_judgement"
    errors = info.value.errors
    assert len(errors) == 3 and "no JSON object" in errors[0] and "no JSON object" in errors[2]
    assert "scores.accuracy: 0 is outside 1-5" in errors[1]
    with ScriptedServer(scripted([(503, "down")] * 2)) as server, \
            pytest.raises(synth.RequestError) as info:
        run_judge(server, "q", "a", attempts=3, max_retries=1)
    assert info.value.transient and len(server.requests) == 2


def _scores_from(body: dict) -> tuple[int, str]:
    """The candidate text carries the scores the judge gives it: 'a4 s2 d5' or 'broken'."""
    reply = body["messages"][1]["content"].split("## Reply to review\n")[1]
    if reply.startswith("broken"):
        return 200, '{"faults": [], "scores": '  # truncated JSON, every time
    a, s, d = (int(x[1]) for x in reply.split()[:3])
    return 200, good(a, s, d, ["factual"] if a < 3 else [])


def test_the_judged_stage_and_any_vs_any_pairs_over_http():
    texts = ["a4 s2 d5", "a2 s5 d5", "a4 s4 d4", "broken reply", "a1 s1 d1"]
    records = [{"id": f"q{k}", "prompt": f"prompt {k}", "reference": None, "candidates": [
        {"text": t, "finished": True, "source": f"model{i}"} for i, t in enumerate(texts)]}
        for k in range(3)]
    stage = synth.Stage("judged", judged, model="judge", templates={"system": JUDGE_SYSTEM},
                        params={"attempts": 2, "max_tokens": 64, "json_mode": False,
                                "prefill": "", "temperature": 0.0})

    async def go(server):
        clients = {"judge": client(server, concurrency=4)}
        try:
            return await asyncio.gather(*[judged(r, synth.StageContext(stage, clients, r["id"]))
                                          for r in records])
        finally:
            await clients["judge"].aclose()

    with ScriptedServer(_scores_from) as server:
        out = asyncio.run(go(server))
    assert len(server.requests) == 12 + 3 * 2
    errors = [c["error"] for r in out for c in r["candidates"] if c["error"]]
    assert len(errors) == 3 and {e["reason"] for e in errors} == {"no_valid_judgement"}
    assert errors[0]["detail"].startswith("no valid judgement after 2 attempts")
    assert "no JSON object" in errors[0]["detail"]
    judgements = [Judgement.from_json(c["judgement"]) if c["judgement"] else None
                  for c in out[1]["candidates"]]
    assert judgements[0].to_json() == out[1]["candidates"][0]["judgement"]
    item = JudgeItem("q1", "prompt 1", (1, 2, 4),
                     tuple(Candidate(t, (101, 10 + i), f"model{i}") for i, t in enumerate(texts)))
    scores = {0: (4, 2, 5), 1: (2, 5, 5), 2: (4, 4, 4), 4: (1, 1, 1)}
    for by, key in (("accuracy", lambda s: s[0]), ("overall", lambda s: sum(s) / 3)):
        pairs = build_pairs(item, judgements, tokenizer="tok", by=by, judge_name="judge")
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
                      for p in build_pairs(item, judgements, tokenizer="t", by="overall")}
    assert len(build_pairs(item, judgements, tokenizer="t", min_margin=2)) == 4
    stats = PairStats()
    assert len(build_pairs(item, judgements, tokenizer="t", stats=stats)) == 5
    assert (stats.pairs, stats.ties, stats.identical) == (5, 1, 0)  # accuracy 4 = 4: a tie


def test_a_judge_prefill_is_sent_as_the_final_assistant_message_and_parsed_with_the_reply():
    """--judge_prefill: the reply continues the prefix (vLLM's continue_final_message); the
    judgement is parsed from prefix + continuation."""
    prefill = '{"faults": [], "scores": {"accuracy": '
    record = {"id": "q", "prompt": "p", "reference": None, "candidates": [
        {"text": t, "finished": True, "source": "m"} for t in ("x", "y")]}
    stage = synth.Stage("judged", judged, model="judge", templates={"system": JUDGE_SYSTEM},
                        params={"attempts": 1, "max_tokens": 32, "json_mode": False,
                                "prefill": prefill, "temperature": 0.5})

    def continuation(body: dict) -> tuple[int, str]:
        reply = body["messages"][1]["content"].split("## Reply to review\n")[1]
        return 200, ('4, "style": 3, "detail": 2}}' if reply == "x"
                     else '2, "style": 3, "detail": 2}}')

    async def go(server):
        clients = {"judge": client(server)}
        try:
            return await judged(record, synth.StageContext(stage, clients, "q"))
        finally:
            await clients["judge"].aclose()

    with ScriptedServer(continuation) as server:
        out = asyncio.run(go(server))
    body = server.requests[0]
    assert body["messages"][-1] == {"role": "assistant", "content": prefill}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["temperature"] == 0.5
    accuracy = [c["judgement"]["scores"]["accuracy"] for c in out["candidates"]]
    assert accuracy == [4, 2]


class CharSampler:
    """A tokenizer of one id per character, rendering a chat as its last message's start."""

    def render(self, messages):
        return [ord(c) for c in messages[-1]["content"][:5]]

    def encode(self, text):
        return [ord(c) for c in text]


def test_make_item_tokenizes_prompt_and_replies_once():
    item = make_item(CharSampler(), "q", "hi", [("ab", "gpt"), ("c", "phi")], end_ids=(7,))
    assert item.prompt_ids == (104, 105)
    assert item.candidates == (Candidate("ab", (97, 98, 7), "gpt"), Candidate("c", (99, 7), "phi"))
