"""Hostile input to the post-training readers and the judge: every bad line or reply is one
counted record with its file and line (or item), and the good ones are all kept."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest

from phi4_jax.io import BadInputReport
from phi4_jax.posttrain.judge import (
    JUDGE_REASONS,
    JUDGE_SYSTEM,
    JudgeParseError,
    parse_judgement,
)
from phi4_jax.posttrain.judge.workflow import judged
from phi4_jax.posttrain.pts.cli import load_questions
from phi4_jax.posttrain.records import Pair, iter_records, read_pairs
from phi4_jax.synth import Sample
from tests.io.test_jsonl import HOSTILE
from tests.posttrain.judge.test_judgement import good

RECORD_REASON = {"malformed_json": "invalid JSON", "invalid_utf8": "invalid_utf8"}


def _pair(i: int) -> dict:
    return Pair(f"p{i}", (1, 2), (3,), (4,), "pts", "tok").to_json()


def test_read_pairs_counts_each_hostile_line_with_file_and_line(tmp_path):
    lines = []
    for i, (text, _, _) in enumerate(HOSTILE):
        lines += [json.dumps(_pair(i)), text]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    pairs, report = read_pairs(path)
    assert [p.id for p in pairs] == [f"p{i}" for i in range(len(HOSTILE))]
    expected = {}
    for _, reason, _ in HOSTILE:
        expected[RECORD_REASON[reason]] = expected.get(RECORD_REASON[reason], 0) + 1
    assert report.totals() == expected
    first = report.files[str(path)].first
    assert first["invalid JSON"] == f"{path}:2: invalid JSON (nested too deeply)"
    # iter_records streams the same way; a gzip file named .jsonl is decompressed
    gz = tmp_path / "gzip_named.jsonl"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    streamed = BadInputReport()
    assert len(list(iter_records(gz, "pair", streamed))) == len(HOSTILE)
    assert streamed.totals() == expected


def test_pts_questions_count_hostile_lines_and_refuse_a_choices_string(tmp_path):
    lines = [json.dumps({"id": "ok", "prompt": "Pick", "kind": "choice", "answer": "B",
                         "choices": ["x", "y"]})]
    lines += [text for text, _, _ in HOSTILE]
    lines.append(json.dumps({"id": "str", "prompt": "Pick", "kind": "choice", "answer": "B",
                             "choices": "ABCD"}))  # was split into ('A', 'B', 'C', 'D')
    lines.append(json.dumps({"id": "mixed", "prompt": "Pick", "choices": ["x", 2]}))
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    questions, problems = load_questions(str(path))
    assert [q.id for q in questions] == ["ok"] and questions[0].choices == ("x", "y")
    assert len(problems) == len(HOSTILE) + 2
    for k, (_, _, words) in enumerate(HOSTILE):
        assert problems[k].startswith(f"{path}:{k + 2}: ") and words in problems[k], problems[k]
    assert problems[-2] == f"{path}:{len(HOSTILE) + 2}: choices must be a list of strings, " \
                           "got str"
    assert problems[-1].startswith(f"{path}:{len(HOSTILE) + 3}: choices must be a list")


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", "1e999", '"nan"', "1" * 5000,
                                   "[" * 5000 + "]" * 5000])
def test_a_non_finite_or_hostile_score_is_a_parse_error(score):
    reply = '{"faults": [], "scores": {"accuracy": ' + score + ', "style": 3, "detail": 3}}'
    with pytest.raises(JudgeParseError):
        parse_judgement(reply)


class ReplyContext:
    """A stage context whose judge reply depends on the candidate text it reviews."""

    params = {"attempts": 2, "max_tokens": 64, "json_mode": False, "prefill": "",
              "temperature": 0.0}
    templates = {"system": JUDGE_SYSTEM}

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    async def chat(self, messages, **kwargs):
        reply = messages[1]["content"].split("## Reply to review\n")[1]
        if reply == "crash":
            raise KeyError("a bug in the backend")
        return [Sample(self.replies[reply], "stop")]


def test_the_judged_stage_keeps_every_good_judgement_when_some_replies_are_hostile():
    nan = '{"faults": [], "scores": {"accuracy": NaN, "style": 3, "detail": 3}}'
    replies = {"fine": good(4, 4, 4), "nan": nan, "braces": "{" * 200_000,
               "ok too": good(2, 3, 1)}
    records = [{"id": "q1", "prompt": "p", "reference": None, "candidates": [
                   {"text": t} for t in ("fine", "nan")]},
               {"id": "q2", "prompt": "p", "reference": None, "candidates": [
                   {"text": t} for t in ("braces", "ok too", "crash")]}]
    start = time.perf_counter()
    out = [asyncio.run(judged(r, ReplyContext(replies))) for r in records]
    assert time.perf_counter() - start < 5.0
    got = [[(c["judgement"] or {}).get("scores", {}).get("accuracy") for c in r["candidates"]]
           for r in out]
    assert got == [[4, None], [None, 2, None]]
    errors = [c["error"] for r in out for c in r["candidates"]]
    assert [e and e["reason"] for e in errors] == [
        None, "no_valid_judgement", "oversized", None, "judge_failed"]
    assert "NaN" in errors[1]["detail"] and set(JUDGE_REASONS) >= {e["reason"] for e in errors
                                                                   if e}
    assert errors[4]["detail"] == "KeyError: 'a bug in the backend'"


@pytest.mark.parametrize("reply", ["{" * 200_000, "{" * 100_000 + "}" * 100_000,
                                   '{"a": ' * 100_000, "```" + " " * 200_000 + "{" * 100_000,
                                   '{"' * 100_000])
def test_the_json_scan_is_linear_and_bounded(reply):
    start = time.perf_counter()
    with pytest.raises(JudgeParseError) as info:  # over the default bound: refused unread
        parse_judgement(reply)
    assert info.value.reason == "oversized" and time.perf_counter() - start < 0.1
    start = time.perf_counter()
    with pytest.raises(JudgeParseError) as info:  # scanned in full: linear time
        parse_judgement(reply, max_chars=10**6)
    assert info.value.reason == "invalid" and time.perf_counter() - start < 2.0


def test_the_scan_still_finds_a_judgement_after_hostile_prose():
    prose = "{" * 1000 + " I think the reply is fine. " + good(5, 4, 3)
    assert parse_judgement(prose).accuracy == 5
    fenced = "``` unclosed fence " + " " * 50_000 + "\n" + good(2, 2, 2)
    assert parse_judgement(fenced).accuracy == 2
