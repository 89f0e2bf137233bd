"""Hostile input to the post-training readers and the judge: every bad line or reply is one
counted record with its file and line (or item), and the good ones are all kept."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from phi4_jax.io import BadInputReport
from phi4_jax.posttrain.judge import (
    Candidate,
    JudgeItem,
    JudgeParseError,
    judge_all,
    parse_judgement,
)
from phi4_jax.posttrain.judge.backends import JUDGE_REASONS
from phi4_jax.posttrain.pts.cli import load_questions
from phi4_jax.posttrain.records import Pair, iter_records, read_pairs
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


class ReplyBackend:
    """A judge whose reply depends on the candidate text it reviews."""

    name = "scripted"

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    def complete(self, messages):
        reply = messages[1]["content"].split("## Reply to review\n")[1]
        if reply == "crash":
            raise KeyError("a bug in the backend")
        return self.replies[reply]


def test_judge_all_keeps_every_good_judgement_when_some_replies_are_hostile():
    nan = '{"faults": [], "scores": {"accuracy": NaN, "style": 3, "detail": 3}}'
    replies = {"fine": good(4, 4, 4), "nan": nan, "braces": "{" * 200_000,
               "ok too": good(2, 3, 1)}
    items = [JudgeItem("q1", "p", (1,), (Candidate("fine", (2,)), Candidate("nan", (3,)))),
             JudgeItem("q2", "p", (1,), (Candidate("braces", (2,)), Candidate("ok too", (3,)),
                                         Candidate("crash", (4,))))]
    start = time.perf_counter()
    out, report = judge_all(ReplyBackend(replies), items, attempts=2, max_workers=2,
                            progress=False, report=BadInputReport(JUDGE_REASONS))
    assert time.perf_counter() - start < 5.0
    assert out[0][0].accuracy == 4 and out[0][1] is None
    assert out[1][0] is None and out[1][1].accuracy == 2 and out[1][2] is None
    assert report.records_ok == 2
    assert report.totals() == {"no_valid_judgement": 1, "oversized": 1, "judge_failed": 1}
    first = report.files["judge"].first
    assert first["no_valid_judgement"].startswith("q1 candidate 1: ") and "NaN" in \
        first["no_valid_judgement"]
    assert first["oversized"].startswith("q2 candidate 0: ")
    assert first["judge_failed"] == "q2 candidate 2: KeyError: 'a bug in the backend'"


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
