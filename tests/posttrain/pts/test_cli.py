"""The PTS runner: a workflow on the engine (kill -9 and resume, rejects, refusals), question
sources, printed noise report."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

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
from phi4_jax.posttrain.pts.workflow import OutputDirError, results
from phi4_jax.posttrain.records import read_pairs, read_records
from tests.posttrain.synthetic import CoinSampler, MarkerOracle, coin_problems

CONFIG = PTSConfig(n_samples=32, p_gap=0.3)
ROOT = pathlib.Path(__file__).resolve().parents[3]


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


def _tree(out):
    """Every file of an output directory but the two that name the input file's absolute path
    (the source's marker and report): relpath -> bytes."""
    files = {}
    for path in sorted(pathlib.Path(out).rglob("*")):
        rel = str(path.relative_to(out))
        if path.is_file() and rel not in ("source/_SUCCESS.json", "source/report.json"):
            files[rel] = path.read_bytes()
    return files


def _coin_run(out, kill=None):
    env = {k: v for k, v in os.environ.items() if k != "PHI4_SYNTH_KILL_AT"}
    if kill:
        env["PHI4_SYNTH_KILL_AT"] = kill
    return subprocess.run([sys.executable, "-m", "tests.posttrain.pts.coin_run", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("pts") / "reference"
    done = _coin_run(out)
    assert done.returncode == 0, done.stderr
    return _tree(out), json.loads(done.stdout)


# source:2 while splitting the questions; record:3 and record:7 after 3 and 7 questions;
# shard:2 between a shard's files and its marker; marker:2 after two shard markers; stage
# after the stage's marker; manifest just before the manifest.
@pytest.mark.parametrize("kill", ["source:2", "record:3", "record:7", "shard:2", "marker:2",
                                  "stage", "manifest"])
def test_kill_9_then_rerun_gives_the_same_bytes(reference, tmp_path, kill):
    expected, clean = reference
    killed = _coin_run(tmp_path, kill)
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "manifest.json").exists()
    resumed = _coin_run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    tree = _tree(tmp_path)
    assert tree["pivots.jsonl"] == expected["pivots.jsonl"]
    assert tree["pairs.jsonl"] == expected["pairs.jsonl"]
    assert tree == expected and not [p for p in tree if ".tmp-" in p]
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] + summary["searched"] == clean["searched"] == 8
    if kill in ("marker:2", "stage", "manifest"):  # the shards marked done are not redone
        assert summary["skipped"] >= 4
        assert summary["sampled_prefixes"] < clean["sampled_prefixes"]
    if kill in ("stage", "manifest"):
        assert summary["skipped"] == 8 and summary["sampled_prefixes"] == 0


def test_a_finished_rerun_does_no_search_work(tmp_path):
    problems = coin_problems(6)
    first = run(problems, CoinSampler(), MarkerOracle(), CONFIG, str(tmp_path),
                batch_questions=2, shard_size=4, progress=False)
    assert first.questions == 6 and first.skipped == 0 and first.pivots > 0
    before = _tree(tmp_path)
    sampler, oracle = CoinSampler(), MarkerOracle()
    again = run(problems, sampler, oracle, CONFIG, str(tmp_path), batch_questions=2,
                shard_size=4, progress=False)
    assert sampler.sampled_prefixes == [] and oracle.calls == 0
    assert (again.skipped, again.searched, again.pivots, again.oracle_calls) == (6, 0, 0, 0)
    assert _tree(tmp_path) == before
    assert not (tmp_path / "cache.sqlite").exists()  # no server asked: no request cache


def test_a_crash_mid_run_is_reported_then_redone_by_the_next_run(tmp_path):
    problems = coin_problems(6)
    clean = run(problems, CoinSampler(), MarkerOracle(), CONFIG, str(tmp_path / "clean"),
                batch_questions=2, shard_size=2, progress=False)
    out = tmp_path / "resumed"
    crashed = run(problems, CoinSampler(), FlakyOracle(fail_after=900), CONFIG, str(out),
                  batch_questions=2, shard_size=2, progress=False)
    # the run goes on: the questions of the batches that raised are rejected as transient
    assert 0 < crashed.rejected < 6 and crashed.searched == 6 - crashed.rejected
    rejects = [r for f in sorted(out.glob("stages/search/*.rejects.jsonl")) for r in _lines(f)]
    assert {r["reason"] for r in rejects} == {"request_failed"}
    assert all("simulated crash" in r["detail"] for r in rejects)
    report = (out / "stages/search/report.txt").read_text()
    assert f"{crashed.rejected} rejected" in report and "request_failed" in report
    failed = {r["id"] for r in rejects}
    sampler = CoinSampler()
    summary = run(problems, sampler, MarkerOracle(), CONFIG, str(out), batch_questions=2,
                  shard_size=2, progress=False)
    assert summary.rejected == 0 and summary.skipped == 6 - 2 * len({
        int(q[4:]) // 2 for q in failed})  # shards of 2: a failed question's shard is redone
    redone = {p.question.id for p in problems if p.prompt_ids in set(sampler.sampled_prefixes)}
    assert failed <= redone and len(redone) == 6 - summary.skipped
    for name in ("pivots.jsonl", "pairs.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    pairs, report = read_pairs(f"{out}/pairs.jsonl")
    assert report.bad_total == 0 and len(pairs) == clean.pairs
    pivots, report = read_records(f"{out}/pivots.jsonl", "pivot")
    assert report.bad_total == 0 and len(pivots) == clean.pivots
    assert [r["id"] for r in results(str(out))] == [p.question.id for p in problems]


def test_a_question_the_oracle_refuses_is_a_reject_not_a_stop(tmp_path):
    class PickyOracle(MarkerOracle):
        def check(self, question, completions):
            if question.id == "coin1":
                raise ValueError("cannot parse the gold answer")
            return super().check(question, completions)

    summary = run(coin_problems(3), CoinSampler(), PickyOracle(), CONFIG, str(tmp_path),
                  progress=False)
    assert summary.rejected == 1 and summary.searched == 2
    (reject,) = _lines(tmp_path / "stages/search/shard-00000.rejects.jsonl")
    assert (reject["id"], reject["reason"]) == ("coin1", "oracle_error")
    assert reject["detail"] == "ValueError: cannot parse the gold answer"
    assert reject["where"] == "source/shard-00000.jsonl:2"
    assert [r["id"] for r in results(str(tmp_path))] == ["coin0", "coin2"]
    assert "coin1" not in (tmp_path / "pairs.jsonl").read_text()
    again = run(coin_problems(3), CoinSampler(), PickyOracle(), CONFIG, str(tmp_path),
                progress=False)
    assert again.skipped == 3  # a refused question is final, not asked again


def test_batching_does_not_change_the_output(tmp_path):
    """Questions batched differently (as a resumed run may) find the same pivots and pairs."""
    outs = []
    for batch, shard in [(1, 1), (3, 2), (6, 16)]:
        out = tmp_path / f"b{batch}s{shard}"
        run(coin_problems(6), CoinSampler(), MarkerOracle(), CONFIG, str(out),
            batch_questions=batch, shard_size=shard, progress=False)
        outs.append({n: (out / n).read_bytes() for n in ("pivots.jsonl", "pairs.jsonl")})
    assert outs[0] == outs[1] == outs[2] and outs[0]["pairs.jsonl"]


def test_resume_refuses_a_different_configuration(tmp_path):
    run(coin_problems(1), CoinSampler(), MarkerOracle(), CONFIG, str(tmp_path), progress=False)
    with pytest.raises(OutputDirError, match="differs from the one"):
        run(coin_problems(1), CoinSampler(), MarkerOracle(), PTSConfig(n_samples=8),
            str(tmp_path), progress=False)
    with pytest.raises(OutputDirError, match="differs from the one"):  # the sampler's too
        run(coin_problems(1), SeededCoinSampler(), MarkerOracle(), CONFIG, str(tmp_path),
            progress=False)
    old = tmp_path / "old"
    old.mkdir()
    (old / "state.jsonl").write_text("")
    with pytest.raises(OutputDirError, match="earlier PTS runner"):
        run(coin_problems(1), CoinSampler(), MarkerOracle(), CONFIG, str(old), progress=False)


class SeededCoinSampler(CoinSampler):
    def settings(self):
        return {"seed": self.seed}


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
    assert pts_cli.main is main and pts_cli.run is run
    out = subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.pts_cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: python -m phi4_jax.posttrain.pts_cli")
    for flag in ("--out", "--arithmetic", "--questions", "--n-samples", "--p-gap",
                 "--max-new-tokens", "--stop-newline", "--batch-rows"):
        assert flag in out
