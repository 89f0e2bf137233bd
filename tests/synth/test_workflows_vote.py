"""The majority-vote question filter (workflows/majority_vote.py) on the scripted HTTP server,
through the command line: all-agree and no-majority questions are rejected with their reason,
majority questions kept with the histogram and the majority answer; math answers are grouped by
math-verify (1/2 = 0.5 = \\frac{1}{2}), text answers by normalized match."""

from __future__ import annotations

import json
import os

from phi4_jax.synth import run as synth_run
from phi4_jax.synth.recipes.text import extract_answer, normalize_answer
from tests.synth.scripted_server import ScriptedServer
from tests.synth.workflow_helpers import ROOT, by_system, config_arg, write_jsonl

SAMPLES = {  # question -> the k=5 sampled replies, by sample index
    "easy": ["2 + 2 = 4.\nAnswer: 4"] * 5,
    "split": [f"Answer: {i}" for i in range(1, 6)],
    "math_majority": ["So \\boxed{\\frac{1}{2}}", "Answer: 0.5", "half: Answer: 1/2",
                      "Answer: 3", "Answer: 7"],
    "text_majority": ["Answer: Paris", "The answer is here.\nAnswer: paris.", "Answer: London",
                      "Answer: the Paris", "Answer: Rome"],
    "tie": ["Answer: 2", "Answer: 2", "Answer: 3", "Answer: 3", "Answer: 9"],
    "math_easy": ["\\boxed{2}", "Answer: 2.0", "Answer: 4/2", "\\boxed{2}", "Answer: 2"],
}
QUESTIONS = [{"id": name, "question": f"Q {name}?",
              "kind": "text" if name.startswith("text") else "math"} for name in SAMPLES]


def answer(user: str, index: int, body: dict) -> str:
    return SAMPLES[user.removeprefix("Q ").removesuffix("?")][index]


def test_majority_vote_from_the_command_line(tmp_path, capsys):
    inputs = write_jsonl(str(tmp_path / "questions.jsonl"), QUESTIONS)
    out = str(tmp_path / "voted")
    with ScriptedServer(reply=by_system({"Solve the problem": answer})) as server:
        argv = [os.path.join(ROOT, "workflows", "majority_vote.py") + ":"
                + config_arg(server, inputs, "k=5"), f"--output={out}", "--quiet"]
        assert synth_run.main(argv) == 0
        assert server.generations == len(QUESTIONS)  # n=5 in one request per question
        bodies = list(server.bodies)
        assert synth_run.main(argv) == 0  # a finished workflow's rerun asks nothing
        assert server.generations == len(QUESTIONS)
    assert all(b["n"] == 5 for b in bodies)
    rejects = {}
    for name in os.listdir(os.path.join(out, "stages", "voted")):
        if name.endswith(".rejects.jsonl"):
            with open(os.path.join(out, "stages", "voted", name)) as f:
                rejects.update({r["id"]: r for r in map(json.loads, f)})
    assert {k: r["reason"] for k, r in rejects.items()} == {
        "easy": "all_agree", "math_easy": "all_agree", "split": "no_majority",
        "tie": "no_majority"}
    with open(os.path.join(out, "voted.jsonl")) as f:
        voted = {r["id"]: r for r in map(json.loads, f)}
    assert sorted(voted) == ["math_majority", "text_majority"]
    math = voted["math_majority"]["votes"]
    assert math["majority_count"] == 3 and math["k"] == 5
    assert math["majority_answer"] == "\\frac{1}{2}"
    assert [(h["answer"], h["count"]) for h in math["histogram"]] == [
        ("\\frac{1}{2}", 3), ("3", 1), ("7", 1)]
    assert math["histogram"][0]["samples"] == [0, 1, 2]
    text = voted["text_majority"]["votes"]
    assert (text["majority_answer"], text["majority_count"]) == ("Paris", 3)
    assert len(voted["text_majority"]["samples"]) == 5
    with open(os.path.join(out, "stages", "voted", "report.txt")) as f:
        report = f.read()
    assert "all_agree" in report and "no_majority" in report
    assert "workflow majority_vote: 6 input records" in capsys.readouterr().out


def test_answer_extraction_and_normalization():
    assert extract_answer("x\n\\boxed{\\frac{a}{b}} done") == "\\frac{a}{b}"
    assert extract_answer("Step 1\nFinal answer: 42.") == "42"
    assert extract_answer("just\n17\n") == "17"
    assert extract_answer("") is None
    assert normalize_answer("The  Eiffel Tower!") == normalize_answer("eiffel tower")
    assert normalize_answer("-3.5.") == "-3.5" != normalize_answer("3.5")
