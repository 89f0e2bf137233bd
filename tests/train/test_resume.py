"""Preemption and crashes, in real subprocesses of `python -m launch.local`.

kill -9 in the middle of a run, then the same command again: the loss of every step is bitwise
identical to an uninterrupted run. SIGTERM saves a checkpoint at the next step and exits 0.
The subprocesses share a persistent compilation cache so only the first one compiles.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 40
COMMAND = [sys.executable, "-m", "launch.local", "--exp=tiny_pretrain",
           "--exp.data.source=synthetic", "--exp.model.vocab_size=256",
           "--exp.data.seq_len=32", "--exp.train.global_batch=8", "--exp.train.loss_vocab_chunks=4",
           "--exp.optimizer.warmup_steps=4", f"--exp.train.steps={STEPS}",
           "--exp.train.checkpoint_every=4", "--exp.train.log_every=1",
           "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=False"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("jax_cache"))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
            "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def start(workdir, env):
    return subprocess.Popen(COMMAND + [f"--workdir={workdir}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(workdir, env):
    proc = start(workdir, env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for_checkpoint(workdir, step, proc, timeout=600):
    path = os.path.join(workdir, "checkpoints", str(step))
    deadline = time.time() + timeout
    while not os.path.isdir(path):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, f"no checkpoint {path} after {timeout}s"
        time.sleep(0.02)


def losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the line kill -9 cut short
                continue
            out[rec["step"]] = rec["loss"]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    finish(workdir, env)
    return losses(workdir)


def test_kill9_and_resume_is_bitwise_identical(tmp_path, env, uninterrupted):
    workdir = str(tmp_path)
    proc = start(workdir, env)
    wait_for_checkpoint(workdir, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(workdir))
    assert killed_at < STEPS, "the run finished before it could be killed"
    out = finish(workdir, env)
    assert "start from checkpoint at step" in out
    resumed = losses(workdir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert resumed == uninterrupted  # exact float equality, every step
    assert uninterrupted[STEPS] < uninterrupted[1]


def test_sigterm_saves_and_exits_cleanly(tmp_path, env, uninterrupted):
    workdir = str(tmp_path)
    proc = start(workdir, env)
    wait_for_checkpoint(workdir, 4, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    saved = int(out.split("SIGTERM: saved step ")[1].split(",")[0])
    assert 4 <= saved < STEPS
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(saved)))
    finish(workdir, env)
    assert losses(workdir) == uninterrupted
