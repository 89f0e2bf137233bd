"""The PTS runner: resumable output directory, question sources, printed noise report."""

from __future__ import annotations

import json

import pytest

from phi4_jax.posttrain import pts_cli
from phi4_jax.posttrain.pts.cli import (
    arithmetic_questions,
    build_problems,
    false_pivot_report,
    load_questions,
    main,
    run,
)
from phi4_jax.posttrain.pts.oracles import MathOracle
from phi4_jax.posttrain.pts.search import PTSConfig, false_pivot_probability
from phi4_jax.posttrain.records import read_pairs, read_records
from tests.posttrain.synthetic import CoinSampler, MarkerOracle, coin_problems

CONFIG = PTSConfig(n_samples=32, p_gap=0.3)


class FlakyOracle(MarkerOracle):
    """Raises once it has checked `fail_after` completions (a crash mid-run)."""

    def __init__(self, fail_after: int):
        super().__init__()
        self.fail_after = fail_after

    def check(self, question, completions):
        if self.calls + len(completions) > self.fail_after:
            raise RuntimeError("simulated crash")
        return super().check(question, completions)


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_resume_skips_finished_questions_and_matches_an_uninterrupted_run(tmp_path):
    problems = coin_problems(6)
    clean = run(problems, CoinSampler(), MarkerOracle(), CONFIG, str(tmp_path / "clean"),
                batch_questions=2, progress=False)
    assert clean.questions == 6 and clean.skipped == 0 and clean.pivots > 0

    out = str(tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(problems, CoinSampler(), FlakyOracle(fail_after=900), CONFIG, out,
            batch_questions=2, progress=False)
    finished = {row["question_id"] for row in _lines(f"{out}/state.jsonl")}
    assert 0 < len(finished) < 6
    # a crash between a question's records and its state line leaves orphans: simulate one
    with open(f"{out}/pairs.jsonl", "a") as f:
        f.write(json.dumps({"meta": {"question_id": "coin5"}, "id": "orphan"}) + "\n")
        f.write('{"schema": "phi4_jax.pair/v1", "id": "cut')  # torn last line
    sampler = CoinSampler()
    summary = run(problems, sampler, MarkerOracle(), CONFIG, out, batch_questions=2,
                  progress=False)
    assert summary.skipped == len(finished)
    assert not {p.prompt_ids for p in problems if p.question.id in finished} & set(
        sampler.sampled_prefixes)  # finished questions were not sampled again
    for name in ("pivots", "pairs", "state"):
        a = sorted(json.dumps(r, sort_keys=True) for r in _lines(f"{out}/{name}.jsonl"))
        b = sorted(json.dumps(r, sort_keys=True) for r in _lines(f"{tmp_path}/clean/{name}.jsonl"))
        assert a == b, name
    pairs, report = read_pairs(f"{out}/pairs.jsonl")
    assert report.bad_total == 0 and len(pairs) == clean.pairs
    pivots, report = read_records(f"{out}/pivots.jsonl", "pivot")
    assert report.bad_total == 0 and len(pivots) == clean.pivots

    again = run(problems, CoinSampler(), MarkerOracle(), CONFIG, out, progress=False)
    assert again.skipped == 6 and again.pivots == 0  # all done: nothing to do


def test_resume_refuses_a_different_configuration(tmp_path):
    run(coin_problems(1), CoinSampler(), MarkerOracle(), CONFIG, str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="differs from the one"):
        run(coin_problems(1), CoinSampler(), MarkerOracle(), PTSConfig(n_samples=8),
            str(tmp_path), progress=False)


def test_arithmetic_questions_and_their_prompts():
    qs = arithmetic_questions("4*12, 40+32,9-3")
    assert [(q.prompt, q.answer, q.reply_prefix) for q in qs] == [
        ("What is 4 * 12?", "48", "4 * 12 ="), ("What is 40 + 32?", "72", "40 + 32 ="),
        ("What is 9 - 3?", "6", "9 - 3 =")]
    oracle = MathOracle()
    assert oracle.check(qs[0], ["4 * 12 = 48", "4 * 12 = 42", "4 * 12 = 48.\nDone"]) == [
        True, False, True]
    with pytest.raises(ValueError, match="not 'a\\+b'"):
        arithmetic_questions("4/2")
    sampler = CoinSampler()
    problems = build_problems(qs[:1], sampler, "calc")
    assert problems[0].reply_start == 3  # [system, user, end of prompt] from the fake render
    assert problems[0].prompt_ids[3:] == tuple(sampler.encode("4 * 12 ="))


def test_load_questions_counts_malformed_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "prompt": "What is 2+2?", "answer": "4"}),
        "{not json",
        json.dumps({"id": "b", "prompt": "x", "colour": "red"}),
        json.dumps({"id": "a", "prompt": "dup"}),
        json.dumps({"id": "c", "prompt": " "}),
        json.dumps(["list"]),
        json.dumps({"id": "d", "prompt": "Pick", "answer": "B", "kind": "choice",
                    "choices": ["x", "y"]}),
        json.dumps({"id": "e", "prompt": "What is 6*7?", "answer": 42}),
        json.dumps({"id": "f", "prompt": "Write", "kind": "essay"}),
    ]) + "\n")
    with open(path, "ab") as f:  # a line of damaged bytes, then a good record after it
        f.write(b'{"id": "g", "prompt": "\xff\xfe broken"\n')
        f.write(json.dumps({"id": "h", "prompt": "What is 1+1?", "answer": "2"}).encode() + b"\n")
    questions, problems = load_questions(str(path))
    assert [q.id for q in questions] == ["a", "d", "h"] and questions[1].choices == ("x", "y")
    assert len(problems) == 8 and problems[7].startswith(f"{path}:10: invalid UTF-8")
    assert problems[0].startswith(f"{path}:2:") and "unknown fields ['colour']" in problems[1]
    assert "duplicate" in problems[2] and f"{path}:5:" in problems[3]
    assert problems[4] == f"{path}:6: not a JSON object"
    assert problems[5] == f"{path}:8: answer must be a string"
    assert "kind 'essay' is not one of" in problems[6]


def test_false_pivot_report_prints_the_configured_numbers():
    text = false_pivot_report(16, 0.2)
    assert "N=16, p_gap=0.2" in text
    assert f"p=0.5: {false_pivot_probability(16, 0.2):.4f}" in text
    assert f"{false_pivot_probability(16, 0.2, 0.5, 0.9):.4f}" in text


def test_the_old_pts_cli_command_is_the_same_runner():
    import subprocess
    import sys

    assert pts_cli.main is main and pts_cli.run is run
    out = subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.pts_cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: python -m phi4_jax.posttrain.pts_cli")
    for flag in ("--out", "--arithmetic", "--questions", "--n-samples", "--p-gap",
                 "--max-new-tokens", "--stop-newline", "--batch-rows"):
        assert flag in out
