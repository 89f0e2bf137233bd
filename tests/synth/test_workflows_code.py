"""Instruction reversal (workflows/code_reversal.py) on the scripted HTTP server and validation
(workflows/validation.py), both decided by execution in the project's sandbox: a faithful
regeneration is kept, an unfaithful one dropped; a time limit is told apart from a wrong answer;
math answers are checked with math-verify."""

from __future__ import annotations

import re

from tests.synth.scripted_server import ScriptedServer
from tests.synth.workflow_helpers import by_system, kept, rejected, run_config

SEEDS = [
    {"id": "add", "code": "def add(a, b):\n    return a + b\n",
     "tests": "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"},
    {"id": "mul", "code": "def mul(a, b):\n    return a * b\n",
     "tests": "assert mul(2, 3) == 6\nassert mul(0, 5) == 0\n"},
    {"id": "slow", "code": "def inc(x):\n    return x + 1\n", "tests": "assert inc(1) == 2\n"},
    {"id": "clamp", "code": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"},
    {"id": "absval", "code": "def absval(x):\n    return x if x >= 0 else -x\n"},
    {"id": "broken", "code": "def neg(x):\n    return x\n", "tests": "assert neg(2) == -2\n"},
    {"id": "humaneval", "code": "def double(x):\n    return 2 * x\n", "entry_point": "double",
     "tests": "def check(candidate):\n    assert candidate(3) == 6\n"
              "    assert candidate(0) == 0\n"},
]
REGENERATED = {  # entry point -> the code the model writes back from the instruction
    "add": "def add(a, b):\n    return b + a\n",                   # faithful
    "mul": "def mul(a, b):\n    return a + b\n",                   # unfaithful: wrong answer
    "inc": "def inc(x):\n    while True:\n        pass\n",          # unfaithful: time limit
    "clamp": "def clamp(x, lo, hi):\n    return min(hi, max(x, lo))\n",
    "double": "def double(x):\n    return x + x\n",
}
GENERATED_TESTS = {
    "clamp": ["assert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0\n"],  # right first time
    "absval": ["assert absval(-2) == 3\n", "assert absval(-2) == 5\n"],      # both wrong
}


def _entry(text: str) -> str:
    return re.search(r"`(\w+)`", text).group(1)


def instruction_reply(user: str, index: int, body: dict) -> str:
    name = re.search(r"def (\w+)", user).group(1)
    return f"Write a function `{name}` that does what the code does."


def code_reply(user: str, index: int, body: dict) -> str:
    return "Here:\n```python\n" + REGENERATED[_entry(user)] + "```\n"


def test_instruction_reversal_keeps_faithful_drops_unfaithful(tmp_path):
    asked: dict[str, int] = {}

    def tests_with_attempts(user, index, body):  # each re-ask is a new request: next suite
        name = re.search(r"def (\w+)", user).group(1)
        k = asked[name] = asked.get(name, -1) + 1
        suites = GENERATED_TESTS[name]
        return "```python\n" + suites[min(k, len(suites) - 1)] + "```"

    reply = by_system({"You write unit tests": tests_with_attempts,
                       "You write programming tasks": instruction_reply,
                       "You are an expert Python programmer": code_reply})
    with ScriptedServer(reply=reply) as server:
        result = run_config("code_reversal", tmp_path, server, SEEDS, "timeout_s=2")
    assert rejected(result, "tested") == {"absval": "generated_tests_fail",
                                          "broken": "original_fails_tests"}
    assert asked["absval"] == 1  # two suites tried, both failing on the original
    tested = kept(result, "tested")
    assert tested["clamp"]["tests_origin"] == "generated"
    assert tested["add"]["tests_origin"] == "seed" and tested["clamp"]["entry_point"] == "clamp"
    assert rejected(result, "faithful") == {"mul": "unfaithful_wrong_answer",
                                            "slow": "unfaithful_time_limit"}
    pairs = kept(result, "faithful")
    assert sorted(pairs) == ["add", "clamp", "humaneval"]
    assert pairs["add"]["code"] == REGENERATED["add"]
    assert pairs["add"]["instruction"].startswith("Write a function `add`")
    assert pairs["add"]["original_code"] == SEEDS[0]["code"]
    assert result.manifest["stages"]["faithful"]["rejects"] == 2


def test_validation_time_limit_apart_from_wrong_answer(tmp_path):
    square = "def square(x):\n    return x * x\n"
    tests = "assert square(3) == 9\n"
    records = [
        {"id": "ok", "kind": "code", "code": f"```python\n{square}```", "tests": tests},
        {"id": "wrong", "kind": "code", "code": "def square(x):\n    return x + x\n",
         "tests": tests},
        {"id": "loops", "kind": "code", "code": "def square(x):\n    while True:\n        pass\n",
         "tests": tests},
        {"id": "crash", "kind": "code", "code": "def square(x):\n    return 1 / 0\n",
         "tests": tests},
        {"id": "syntax", "kind": "code", "code": "def square(x) return x\n", "tests": tests},
        {"id": "half", "kind": "math", "solution": "... so \\boxed{\\frac{2}{4}}", "answer": "0.5"},
        {"id": "bad_math", "kind": "math", "solution": "Answer: 3", "answer": "4"},
        {"id": "other", "kind": "essay"},
        # texts (no kind: read by their fields): each fenced Python block runs on its own
        {"id": "prose", "text": "Squares grow fast: 3 squared is 9."},
        {"id": "worked", "text": f"Define it:\n```python\n{square}```\nthen check:\n"
                                 "```python\nassert 3 * 3 == 9\n```\n"},
        {"id": "broken", "text": "Fine:\n```python\nx = 1\n```\nNot fine:\n```python\n"
                                 "print(undefined_name)\n```\n"},
    ]
    result = run_config("validation", tmp_path, None, records, "timeout_s=1.5")
    assert rejected(result, "validated") == {
        "wrong": "wrong_answer", "loops": "time_limit", "crash": "runtime_error",
        "syntax": "syntax_error", "bad_math": "wrong_answer", "other": "unknown_kind",
        "broken": "runtime_error"}
    good = kept(result, "validated")
    assert sorted(good) == ["half", "ok", "prose", "worked"]
    assert good["half"]["validation"] == {"verdict": "passed", "predicted": "\\frac{2}{4}"}
    assert good["prose"]["validation"] == {"verdict": "no_code", "code_blocks": 0}
    assert good["worked"]["validation"] == {"verdict": "passed", "code_blocks": 2}
