"""The command-line convention (phi4_jax/cli.py) on every `python -m` entry point.

Entry points are discovered, not listed: every module of phi4_jax/ and launch/ with a
`__main__` guard, and every `__main__.py`. Each must answer `--help` with exit 0, a usage line
under its real `python -m` name, and an example command. User errors (the table below) print one
line naming what is wrong, exit 2, and show no traceback.
"""

from __future__ import annotations

import ast
import concurrent.futures
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def entry_points() -> list[str]:
    found = []
    for top in ("phi4_jax", "launch"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__main__":
                found.append(".".join(parts[:-1]))
                continue
            if parts[-1].startswith("_"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                        and isinstance(node.test.left, ast.Name)
                        and node.test.left.id == "__name__"):
                    found.append(".".join(parts))
                    break
    return sorted(set(found))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), PHI4_JAX_DEBUG="0")
    env.pop("XLA_FLAGS", None)
    return env


def _run(args: list[str], cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=300)


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    modules = entry_points()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda m: _run(["-m", m, "--help"]), modules)
    return dict(zip(modules, results))


def test_entry_points_are_discovered():
    modules = entry_points()
    for expected in ("launch.local", "launch.tpu", "launch.demo", "phi4_jax.data.prepare",
                     "phi4_jax.data.plan", "phi4_jax.posttrain.pts_cli"):
        assert expected in modules, modules


def test_every_entry_point_answers_help(helps):
    problems = []
    for module, proc in helps.items():
        out = proc.stdout
        lines = [line for line in out.splitlines() if line.strip()]
        if proc.returncode != 0:
            problems.append(f"{module} --help exited {proc.returncode}: {proc.stderr[-500:]}")
        elif not lines[0].startswith(f"usage: python -m {module}"):
            problems.append(f"{module}: usage line {lines[0]!r}")
        elif "example" not in out.lower():
            problems.append(f"{module} --help gives no example command")
        elif "Traceback" in proc.stderr or "apitools" in proc.stderr + out:
            problems.append(f"{module} --help prints library noise: {proc.stderr[-300:]}")
    assert not problems, "\n".join(problems)


def test_help_lists_flags_with_defaults(helps):
    local = helps["launch.local"].stdout
    for flag in ("--exp", "--workdir", "--debug"):
        assert flag in local
    assert "tiny_pretrain" in local  # the experiments a user can name
    plan = helps["phi4_jax.data.plan"].stdout
    assert "--total_tokens" in plan and "default" in plan


# argv, text the one line must contain
USER_ERRORS = [
    (["-m", "launch.local", "--exp=nope", "--workdir=/tmp/x"],
     "unknown experiment 'nope'"),
    (["-m", "launch.local", "--exp=tiny_pretrain"], "--workdir"),
    (["-m", "launch.local", "--exp=tiny_pretrain", "--workdir=/tmp/x",
      "--exp.train.stepz=3"], 'did you mean "train.steps"'),
    (["-m", "launch.local", "--exp=tiny_pretrain", "--workdir=/tmp/x",
      "--exp.train.steps=abc"], "train.steps"),
    (["-m", "launch.local", "--exp=tiny_pretrain", "--workdir=/tmp/x", "--bogus=1"],
     "bogus"),
    (["-m", "launch.tpu", "--exp=tiny_pretrain", "--dry_run"], "--tpu"),
    (["-m", "launch.tpu", "--exp=tiny_pretrain", "--workdir=gs://b/r", "--tpu=v5p-8",
      "--zone=z", "--num_slices=-2", "--print_only"], "--num_slices"),
    (["-m", "phi4_jax.data.plan", "/nonexistent/mixture.py"], "/nonexistent/mixture.py"),
    (["-m", "phi4_jax.data.prepare", "--input=/nonexistent/*.txt", "--output=/tmp/x",
      "--source_name=s"], "/nonexistent/*.txt"),
    (["-m", "phi4_jax.posttrain.pts_cli", "--out=/tmp/x", "--questions=/nonexistent.jsonl"],
     "/nonexistent.jsonl"),
    (["-m", "phi4_jax.data.plan", "data_mixtures/phi4_pretrain.py", "--no_such_flag"],
     "--no_such_flag"),
]


@pytest.mark.parametrize("argv,expected", USER_ERRORS, ids=[" ".join(a[1:3]) for a, _ in
                                                             USER_ERRORS])
def test_user_errors_are_one_line_exit_2(argv, expected):
    proc = _run(argv)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    module = argv[1]
    error_lines = [line for line in lines if line.startswith(f"python -m {module}: error:")]
    assert len(error_lines) == 1, lines
    assert expected.lower() in error_lines[0].lower(), error_lines[0]


def test_debug_shows_the_traceback():
    proc = _run(["-m", "launch.local", "--exp=nope", "--workdir=/tmp/x", "--debug"])
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_internal_failure_exits_1_with_traceback(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("from phi4_jax import cli\n"
                      "def main(argv):\n    raise RuntimeError('bug')\n"
                      "cli.run(main, [], prog='python -m boom')\n")
    proc = _run([str(script)])
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: bug" in proc.stderr
