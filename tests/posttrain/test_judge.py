"""Judge parsing, retries and pairs, against a real local OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phi4_jax.posttrain.judge import (
    FAULT_TYPES,
    Candidate,
    JudgeError,
    JudgeItem,
    JudgeParseError,
    ModelBackend,
    OpenAIBackend,
    build_pairs,
    judge,
    judge_all,
    make_item,
    parse_judgement,
)
from phi4_jax.posttrain.pairs import parse_pair
from phi4_jax.posttrain.sampler import Rollout

Reply = tuple[int, str]  # (HTTP status, assistant content)


def _completion(content: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "judge",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class JudgeServer:
    """/v1/chat/completions answered by `respond(request_body) -> (status, content)`."""

    def __init__(self, respond: Callable[[dict], Reply]):
        self.respond, self.requests, self.lock = respond, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                status, content = server.respond(body)
                payload = json.dumps(_completion(content) if status == 200 else
                                     {"error": {"message": content, "type": "server_error"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("retry-after-ms", "1")  # keep the client's backoff short
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def backend(self, **kwargs) -> OpenAIBackend:
        return OpenAIBackend("judge", base_url=f"http://127.0.0.1:{self.httpd.server_port}/v1",
                             api_key="test", **kwargs)


def scripted(replies: list[Reply]) -> Callable[[dict], Reply]:
    it = iter(replies)
    return lambda body: next(it)


def good(acc=4, sty=3, det=5, faults=()) -> str:
    return json.dumps({"faults": [{"type": t, "description": "x"} for t in faults],
                       "scores": {"accuracy": acc, "style": sty, "detail": det}})


# -- parsing ----------------------------------------------------------------------------------
def test_parse_accepts_the_shapes_judges_produce():
    j = parse_judgement(good(4, 3, 5, ["logical", "factual"]))
    assert (j.accuracy, j.style, j.detail, j.overall) == (4, 3, 5, 4.0)
    assert [f.type for f in j.faults] == ["logical", "factual"]
    fenced = ("Here is my review.\n```json\n" + good(2, 2, 3) + "\n```\nHope it helps {sic}")
    assert parse_judgement(fenced).accuracy == 2
    prose = 'Sure! {"faults": ["Stylistic: uses \\"{\\" oddly"], "scores": ' \
            '{"accuracy": "5", "style": 4.0, "detail": 1}} -- end'
    j = parse_judgement(prose)
    assert (j.accuracy, j.style, j.detail) == (5, 4, 1)
    assert j.faults[0].type == "stylistic" and j.faults[0].description == 'uses "{" oddly'
    flat = json.dumps({"faults": [], "accuracy": 1, "style": 2, "detail": 3})
    assert parse_judgement(flat).detail == 3


@pytest.mark.parametrize("text, message", [
    ("I think it is fine.", "no JSON object"),
    ('{"faults": [], "scores": {"accuracy": 4, "style": 3}}', "scores.detail: missing"),
    ('{"faults": [], "scores": {"accuracy": 7, "style": 3, "detail": 3}}',
     "scores.accuracy: 7 is outside 1-5"),
    ('{"faults": [], "scores": {"accuracy": 3.5, "style": 3, "detail": 3}}',
     "scores.accuracy: expected an integer"),
    ('{"faults": [], "scores": {"accuracy": true, "style": 3, "detail": 3}}',
     "scores.accuracy: expected an integer"),
    ('{"scores": {"accuracy": 1, "style": 3, "detail": 3}}', "faults: missing"),
    ('{"faults": [{"type": "grammar"}], "scores": {"accuracy": 1, "style": 3, "detail": 3}}',
     "faults[0].type: 'grammar' is not one of"),
    ('[1, 2]', "expected a JSON object"),
])
def test_parse_errors_name_the_field(text, message):
    with pytest.raises(JudgeParseError, match=re.escape(message)):
        parse_judgement(text)


# -- over HTTP ---------------------------------------------------------------------------------
def test_retries_transient_500s_and_invalid_replies_over_http():
    replies = [(500, "overloaded"), (200, "not json at all"),
               (200, good(acc=9)), (200, "```json\n" + good(acc=2, faults=["comprehension"]))]
    with JudgeServer(scripted(replies)) as server:
        j = judge(server.backend(max_retries=2), "What is 2+2?", "5", attempts=3)
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
    with JudgeServer(scripted(replies)) as server, pytest.raises(JudgeError) as info:
        judge(server.backend(max_retries=1), "q", "a", attempts=3)
    errors = info.value.errors
    assert len(errors) == 3
    assert "no JSON object" in errors[0]
    assert "InternalServerError" in errors[1] or "503" in errors[1]
    assert "scores.accuracy: 0 is outside 1-5" in errors[2]


def _scores_from(body: dict) -> Reply:
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
    with JudgeServer(_scores_from) as server:
        judgements, report = judge_all(server.backend(), items, attempts=2, max_workers=4,
                                       progress=False)
    assert report.judged == 12 and len(report.failures) == 3
    assert all("candidate 3" in f and "no JSON object" in f for f in report.failures)
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
