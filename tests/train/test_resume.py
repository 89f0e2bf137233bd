"""Preemption, crashes and a hostile work dir, in real subprocesses of `python -m launch.local`.

kill -9 in the middle of a run, then the same command again: the loss of every step is bitwise
identical to an uninterrupted run (every step's row up to the newest checkpoint survived the
kill; the relaunch takes over the dead run's lease at once). SIGTERM saves a checkpoint at the
next step and exits 0. A second run on a busy work dir is refused in one line; a corrupt newest
checkpoint costs one line and the run ends as if uninterrupted; a full disk is one line, exit 2.
The subprocesses share a persistent compilation cache so only the first one compiles.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.train.test_checkpoint import flip_bytes, largest_data_file
from tests.train.test_disk_full import mount_tmpfs

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
    newest = max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert set(range(1, newest + 1)) <= set(losses(workdir))  # rows reach every checkpoint
    out = finish(workdir, env)
    assert "start from checkpoint at step" in out
    assert "took over the lease of run" in out and "on this host is gone" in out
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


def test_a_second_run_on_a_busy_workdir_is_refused_in_one_line(tmp_path, env, uninterrupted):
    workdir = str(tmp_path)
    first = start(workdir, env)
    wait_for_checkpoint(workdir, 4, first)
    first.send_signal(signal.SIGSTOP)  # still running (and holding) while the second starts
    try:
        second = start(workdir, env)
        out, _ = second.communicate(timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, out[-3000:]
    assert out.startswith(f"python -m launch.local: error: {workdir} is in use by run ")
    assert f"pid {first.pid}; last heartbeat" in out and len(out.splitlines()) == 1, out
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert losses(workdir) == uninterrupted  # the first run never noticed


def test_a_corrupt_newest_checkpoint_costs_one_line(tmp_path, env, uninterrupted):
    workdir = str(tmp_path)
    finish(workdir, env)
    flip_bytes(largest_data_file(tmp_path / "checkpoints" / str(STEPS)))
    out = finish(workdir, env)
    lines = out.splitlines()
    corrupt = [line for line in lines if "corrupt" in line]
    assert len(corrupt) == 1 and f"checkpoint step {STEPS} is corrupt" in corrupt[0], out
    assert f"restoring step {STEPS - 4}" in corrupt[0] and "Traceback" not in out
    assert f"start from checkpoint at step {STEPS - 4}" in out
    # the corrupt line, the header, 4 steps, the final held-out evaluation (tiny_pretrain's)
    assert len(lines) == 1 + 1 + 4 + 1 and lines[-2].startswith(f"eval step {STEPS}:"), out
    assert losses(workdir) == uninterrupted


def test_a_full_disk_is_one_line_and_exit_2(tmp_path, env):
    disk = mount_tmpfs(tmp_path / "disk", "8m")  # one checkpoint (4.8 MiB) fits, not two
    try:
        workdir = str(disk / "run")
        proc = start(workdir, env)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 2, out[-3000:]
        lines = out.splitlines()
        errors = [line for line in lines if line.startswith("python -m launch.local: error:")]
        assert len(errors) == 1, out[-3000:]
        assert errors[0].startswith(
            f"python -m launch.local: error: {workdir}: no space left on device while saving "
            f"step 8; the last good checkpoint is step 4 ({workdir}/checkpoints/4, "), out
        assert errors[0].endswith(" MiB, intact): free space or lower train.keep, then rerun "
                                  "the same command to resume from it"), out
        assert "Traceback" not in out and "sys.meta_path" not in out
        # Nothing else: the header, the step lines up to where the failure surfaced, the error.
        others = [line for line in lines[1:] if not line.startswith("step ")]
        assert others == errors, out[-3000:]
        assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
