"""`python -m phi4_jax.posttrain.refusal` end to end: the policy and the teacher behind a scripted
OpenAI-compatible server, the real `openai` client, and the files DPO and SFT read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import experiments.phi4_dpo_judge
import experiments.phi4_dpo_pts
from phi4_jax.data import chat, sft, tokenizer
from phi4_jax.io import BadInputReport
from phi4_jax.posttrain.records import iter_records
from phi4_jax.posttrain.refusal.cli import main
from tests.posttrain.openai_server import ScriptedServer

ENC = tokenizer.phi4_encoding()
SEEDS = [
    {"id": "s1", "question": "Capital of France?", "answer": "Paris"},
    {"id": "s2", "question": "Who wrote Hamlet?", "answer": "William Shakespeare",
     "aliases": ["Shakespeare"]},
    {"id": "s3", "question": "Year of the Peace of Westphalia?", "answer": "1648"},
    {"id": "s4", "question": "Who painted the Mona Lisa?", "answer": "Leonardo da Vinci"},
    {"id": "s5", "question": "Is the server down?", "answer": "no"},
    {"id": "s6", "question": "No answer?"},
    "[",
]
POLICY = {  # 4 samples each: accuracy 1, 0.75, 0, 1
    "Capital of France?": ["It is Paris.", "Paris.", "Paris, of course.", "Paris"],
    "Who wrote Hamlet?": ["Shakespeare.", "It was Marlowe.", "William Shakespeare wrote it.",
                          "Shakespeare did"],
    "Year of the Peace of Westphalia?": ["It was 1748.", "I do not know.", "It was 1748.",
                                         "In 1748 or so"],
    "Who painted the Mona Lisa?": ["Leonardo da Vinci"] * 4,
}


def respond(body):
    prompt = body["messages"][-1]["content"]
    if body["model"] == "policy":
        if "down" in prompt:
            return 503, "policy unavailable"
        assert body["n"] == 4 and body["max_tokens"] == 64
        # the last sample was cut by max_tokens: its ids get no <|im_end|>
        return 200, [(t, "length" if j == 3 else "stop") for j, t in enumerate(POLICY[prompt])]
    assert body["model"] == "teacher"
    if "Mona Lisa" in prompt:
        return 200, ""  # an empty reply every time: the teacher fails on this seed
    if prompt.startswith("Answer this"):
        answer = re.search(r"correct answer is: (.*)\)", prompt)[1]
        return 200, f"The answer is {answer}."
    if prompt.startswith("Rewrite"):
        return 200, "What did the 1897 census of Quastria record about that?"
    if "premise" in prompt:
        return 200, "I can't find any record of that census, so I can't answer."
    return 200, "I don't know the answer to that, sorry."


def test_refusal_cli_writes_the_pairs_and_sft_examples_training_reads(tmp_path, capsys):
    seeds = tmp_path / "trivia.jsonl"
    seeds.write_text("".join((s if isinstance(s, str) else json.dumps(s)) + "\n" for s in SEEDS))
    read_by = [experiments.phi4_dpo_pts.get_config(), experiments.phi4_dpo_judge.get_config()]
    refusal_pairs = {p for c in read_by for p in c.dpo.pairs.split(",") if "refusal" in p}
    assert len(refusal_pairs) == 1  # both DPO rounds read the same file
    (refusal_pairs,) = refusal_pairs
    out = tmp_path / refusal_pairs.rsplit("/", 1)[0]  # .../workdirs/refusal
    with ScriptedServer(respond) as server:
        code = main(["--input", str(seeds), "--output", str(out), "--base_url", server.url,
                     "--model", "policy", "--num_samples", "4", "--max_tokens", "64",
                     "--teacher_model", "teacher", "--teacher_attempts", "2",
                     "--max_retries", "0", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0

    report = BadInputReport()
    pairs = {p.id: p for p in iter_records(tmp_path / refusal_pairs, "pair", report,
                                           vocab_size=tokenizer.VOCAB_SIZE)}
    assert report.bad_total == 0
    assert set(pairs) == {"refusal/s1/correct>refusal", "refusal/s2/correct>refusal",
                          "refusal/s2/refusal>wrong", "refusal/s3/refusal>wrong"}
    for p in pairs.values():
        assert p.source == "refusal" and p.tokenizer == "phi4"
        assert len(p.chosen_ids) <= 5 and len(p.rejected_ids) <= 5
        for c in read_by:
            assert 2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) - 2 <= \
                c.data.seq_len
    user = [{"role": "user", "content": "Year of the Peace of Westphalia?"}]
    s3 = pairs["refusal/s3/refusal>wrong"]
    assert s3.prompt_ids == tuple(chat.render(user, encoding=ENC, add_generation_prompt=True)[0])
    refusal = ENC.encode_ordinary("I don't know the answer to that, sorry.")
    assert s3.chosen_ids == tuple(refusal)[:5]
    assert s3.rejected_ids == (*ENC.encode_ordinary("It was 1748."), tokenizer.IM_END)[:5]
    assert s3.meta["accuracy"] == 0 and s3.meta["wrong_count"] == 2
    s2 = pairs["refusal/s2/refusal>wrong"]
    assert s2.rejected_ids == (*ENC.encode_ordinary("It was Marlowe."), tokenizer.IM_END)[:5]

    examples = list(iter_records(out / "sft.jsonl", "sft"))
    assert sorted(e.id for e in examples) == sorted(
        ["refusal/s1/answer", "refusal/s2/answer", "refusal/s3/refuse"]
        + [f"refusal/s{i}/bogus" for i in (1, 2, 3)])
    manifest, stats = sft.build_store([str(out / "sft.jsonl")], str(tmp_path / "store"),
                                      max_tokens=128)
    assert stats.kept == manifest.num_documents == 6 and not stats.skipped

    saved = json.loads((out / "report.json").read_text())
    assert saved["stats"]["seeds"] == 5 and saved["stats"]["estimated"] == 4
    assert saved["stats"]["pairs"] == 4 and saved["stats"]["sft"] == 6
    assert saved["bad_input"]["bad_by_reason"] == {"missing_field": 1, "malformed_json": 1,
                                                   "policy_failed": 1, "teacher_failed": 1}
    teacher = saved["bad_input"]["files"]["teacher teacher"]["first"]["teacher_failed"]
    assert teacher == "seed s4: teacher 'answer' failed: empty reply; empty reply"
    estimates = [json.loads(line) for line in (out / "estimates.jsonl").read_text().splitlines()]
    assert [(e["id"], e["accuracy"]) for e in estimates] == [
        ("s1", 1.0), ("s2", 0.75), ("s3", 0.0), ("s4", 1.0)]
    assert "4 pairs ->" in printed and "teacher_failed" in printed


def test_refusal_cli_offline_template_teacher_and_help(tmp_path):
    seeds = tmp_path / "trivia.jsonl"
    seeds.write_text(json.dumps(SEEDS[2]) + "\n")
    with ScriptedServer(respond) as server:
        assert main(["--input", str(seeds), "--output", str(tmp_path / "out"), "--base_url",
                     server.url, "--model", "policy", "--num_samples", "4", "--max_tokens",
                     "64", "--quiet"]) == 0
    assert {r["model"] for r in server.requests} == {"policy"}  # no teacher server asked
    (pair,) = iter_records(tmp_path / "out" / "pairs.jsonl", "pair")
    assert pair.meta["teacher"] == "template"
    out = subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.refusal", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: python -m phi4_jax.posttrain.refusal")
    for flag in ("--base_url", "--model", "--api_key_env", "--output", "--num_samples",
                 "--teacher_model", "example:"):
        assert flag in out


FILES = ("pairs.jsonl", "sft.jsonl", "estimates.jsonl", "report.json", "report.txt")


def run_refusal(seeds, out, server, env=None):
    argv = ["--input", str(seeds), "--output", str(out), "--base_url", server.url,
            "--model", "policy", "--num_samples", "4", "--max_tokens", "64",
            "--teacher_model", "teacher", "--shard_size", "1", "--quiet"]
    if env is None:
        return main(argv)
    return subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.refusal", *argv],
                          env={**os.environ, **env}, capture_output=True).returncode


def test_killed_runs_resume_to_the_same_bytes_and_a_finished_rerun_asks_nothing(tmp_path):
    seeds = tmp_path / "trivia.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS[:4]))
    with ScriptedServer(respond) as server:
        assert run_refusal(seeds, tmp_path / "ref", server) == 0
        asked = len(server.requests)
        reference = {f: (tmp_path / "ref" / f).read_bytes() for f in FILES}
        assert run_refusal(seeds, tmp_path / "ref", server) == 0
        assert len(server.requests) == asked  # a finished rerun: zero requests
        for k, point in enumerate(["record:2", "marker:6", "stage:3"]):
            out = tmp_path / f"killed{k}"
            assert run_refusal(seeds, out, server, {"PHI4_SYNTH_KILL_AT": point}) == -9, point
            before = len(server.requests)
            assert run_refusal(seeds, out, server) == 0
            assert len(server.requests) - before < asked, point
            assert {f: (out / f).read_bytes() for f in FILES} == reference, point
