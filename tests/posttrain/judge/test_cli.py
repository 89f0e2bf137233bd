"""`python -m phi4_jax.posttrain.judge` end to end: reply models and the judge behind a scripted
OpenAI-compatible server, the real `openai` client, and the pairs file the DPO experiments read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import experiments.phi4_dpo_judge
from phi4_jax.data import chat, tokenizer
from phi4_jax.io import BadInputReport
from phi4_jax.model import preset
from phi4_jax.posttrain.judge.cli import main
from phi4_jax.posttrain.records import iter_records
from tests.posttrain.judge.test_judgement import good
from tests.posttrain.openai_server import ScriptedServer

ENC = tokenizer.phi4_encoding()
KEY = "sk-test-not-a-real-key-1234"
PROMPTS = [
    {"id": "p1", "prompt": "What is 2+2?",
     "replies": ["a4 s4 d4 four", {"text": "a1 s2 d2 five", "source": "gpt-4o"}]},
    {"id": "p2", "prompt": "Name a prime.", "reference": "2"},
    "{broken",
    {"id": "p1", "prompt": "a duplicate id"},
    {"id": "p3", "prompt": 5},
    {"id": "p4", "prompt": "Lonely?", "replies": "not a list"},
    {"id": "p5", "prompt": "fail the reply models"},
]


class Server(ScriptedServer):
    """m1 answers n replies at once (the second cut by max_tokens), m2 one per request (the
    client asks again), 'judge' scores a reply by the 'aN sN dN' it starts with."""

    def __init__(self):
        super().__init__(self.answer)
        self.m2_calls: dict[str, int] = {}
        self.m2_lock = threading.Lock()

    def answer(self, body):
        user = body["messages"][-1]["content"]
        if body["model"] == "judge":
            reply = body["messages"][1]["content"].split("## Reply to review\n")[1]
            if reply.startswith("broken"):
                return 200, "I refuse to use JSON."
            a, s, d = (int(x[1]) for x in reply.split()[:3])
            return 200, good(a, s, d)
        if "fail" in user:
            return 500, "reply model down"
        if body["model"] == "m1":
            assert body["n"] == 2 and body["temperature"] == 0.5
            return 200, [("a5 s5 d5 m1 best", "stop"), ("a2 s3 d3 m1 cut", "length")]
        with self.m2_lock:
            k = self.m2_calls[user] = self.m2_calls.get(user, 0) + 1
        return 200, [("a3 s3 d3 m2 first" if k == 1 else "broken m2", "stop")]


def test_judge_cli_writes_the_pairs_the_dpo_experiment_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join((p if isinstance(p, str) else json.dumps(p)) + "\n"
                               for p in PROMPTS))
    config = experiments.phi4_dpo_judge.get_config()
    judge_pairs = next(p for p in config.dpo.pairs.split(",") if "judge" in p)
    out = tmp_path / judge_pairs.rsplit("/", 1)[0]  # .../workdirs/judge
    with Server() as server:
        code = main(["--input", str(prompts), "--output", str(out), "--base_url", server.url,
                     "--model", "judge", "--api_key_env", "JUDGE_TEST_KEY",
                     "--reply_models", "m1,m2", "--num_samples", "2", "--reply_temperature",
                     "0.5", "--attempts", "2", "--max_retries", "0", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert set(server.keys) == {f"Bearer {KEY}"}  # from the named variable, sent, never shown
    assert not [f for f in out.rglob("*") if f.is_file() and KEY.encode() in f.read_bytes()]
    assert KEY not in printed

    report = BadInputReport()
    pairs = list(iter_records(tmp_path / judge_pairs, "pair", report,
                              vocab_size=preset(config.model.preset).vocab_size))
    assert report.bad_total == 0 and len(pairs) == 10 + 3  # p1: 5 judged replies, p2: 3
    assert {p.source for p in pairs} == {"judge"} and {p.tokenizer for p in pairs} == {"phi4"}
    for p in pairs:  # whole pairs fit a DPO row of the experiment (2 P + C + R - 2 positions)
        assert 2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) - 2 <= \
            config.data.seq_len
    by_id = {p.id: p for p in pairs}
    top = by_id["judge/p1/accuracy/2>0"]  # m1's best (a5) over the given a4 reply
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert top.prompt_ids == tuple(chat.render(user, encoding=ENC,
                                               add_generation_prompt=True)[0])
    assert top.chosen_ids == (*ENC.encode_ordinary("a5 s5 d5 m1 best"), tokenizer.IM_END)
    assert top.rejected_ids == (*ENC.encode_ordinary("a4 s4 d4 four"), tokenizer.IM_END)
    assert top.meta["chosen"]["source"] == "m1" and top.meta["rejected"]["source"] == "given"
    cut = by_id["judge/p1/accuracy/4>3"]  # m2's a3 over m1's a2, cut off: no <|im_end|>
    assert cut.rejected_ids == tuple(ENC.encode_ordinary("a2 s3 d3 m1 cut"))
    assert by_id["judge/p1/accuracy/0>1"].rejected_ids[-1] == tokenizer.IM_END  # gpt-4o's

    saved = json.loads((out / "report.json").read_text())
    assert saved["stats"]["prompts"] == 2 and saved["stats"]["pairs"] == 13
    assert saved["bad_input"]["bad_by_reason"] == {
        "malformed_json": 1, "duplicate_id": 1, "missing_field": 1, "bad_field": 1,
        "reply_failed": 2, "too_few_replies": 1, "no_valid_judgement": 2}
    judged = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert [j["id"] for j in judged] == ["p1", "p2"]
    assert [c["judgement"] is None for c in judged[0]["candidates"]] == [False] * 5 + [True]
    assert "13 pairs ->" in printed and "no_valid_judgement" in printed


def test_judge_help_names_the_flags():
    out = subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.judge", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: python -m phi4_jax.posttrain.judge")
    for flag in ("--base_url", "--model", "--api_key_env", "--output", "--num_samples",
                 "--reply_models", "example:"):
        assert flag in out


def deterministic(body):
    """A reply model that answers n replies 'aK sK dK ...' (K = 1 + (index + len(prompt)) % 5),
    and a judge that scores by them: every answer a function of the request."""
    if body["model"] == "judge":
        reply = body["messages"][1]["content"].split("## Reply to review\n")[1]
        a, s, d = (int(x[1]) for x in reply.split()[:3])
        return 200, good(a, s, d)
    prompt = body["messages"][-1]["content"]
    return 200, [(f"a{k} s{k} d3 reply {i} to {prompt}", "stop")
                 for i in range(body.get("n", 1)) for k in [1 + (i + len(prompt)) % 5]]


def run_judge(out, server, *extra, env=None):
    argv = ["--input", str(out.parent / "prompts.jsonl"), "--output", str(out),
            "--base_url", server.url, "--model", "judge", "--reply_models", "m1",
            "--num_samples", "3", "--shard_size", "2", "--quiet", *extra]
    if env is None:
        return main(argv)
    return subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.judge", *argv],
                          env={**os.environ, **env}, capture_output=True).returncode


FILES = ("pairs.jsonl", "judgements.jsonl", "report.json", "report.txt")


def test_killed_runs_resume_to_the_same_bytes_and_a_finished_rerun_asks_nothing(tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "prompt": "Why? " * (i + 1)}) + "\n" for i in range(7)))
    with ScriptedServer(deterministic) as server:
        assert run_judge(tmp_path / "ref", server) == 0
        asked = len(server.requests)
        assert asked == 7 * (1 + 3)  # one sampling request and 3 judgements per prompt
        reference = {f: (tmp_path / "ref" / f).read_bytes() for f in FILES}
        assert run_judge(tmp_path / "ref", server) == 0
        assert len(server.requests) == asked  # a finished rerun: zero requests
        assert {f: (tmp_path / "ref" / f).read_bytes() for f in FILES} == reference
        for k, point in enumerate(["record:9", "marker:5", "stage:2", "manifest:1"]):
            out = tmp_path / f"killed{k}"
            assert run_judge(out, server, env={"PHI4_SYNTH_KILL_AT": point}) == -9, point
            assert not (out / "pairs.jsonl").exists()
            before = len(server.requests)
            assert run_judge(out, server) == 0
            assert len(server.requests) - before < asked, point  # the killed run's replies kept
            assert {f: (out / f).read_bytes() for f in FILES} == reference, point
            assert len(list(iter_records(out / "pairs.jsonl", "pair"))) > 0
