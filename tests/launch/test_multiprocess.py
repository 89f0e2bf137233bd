"""Two-process training on CPU: what a multi-host pod run does, with gloo collectives.

Two `launch.tpu --worker` processes (2 local CPU devices each, one jax.distributed job, one
shared workdir) train tiny_pretrain on the embedded mixture: every host reads its own share of
the global batch, checkpoints hold one data-iterator state per process, and a second launch
resumes. The losses must equal a single process driving the same 4-device mesh.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from launch import tpu

pytestmark = pytest.mark.slow

ARGS = ["--exp=tiny_pretrain", "--exp.train.checkpoint_every=2", "--exp.train.log_every=1",
        "--exp.log.tensorboard=false", "--exp.train.peak_flops=1e12"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _start(workdir, cache, steps: int, **env) -> list[subprocess.Popen]:
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "launch.tpu", "--worker", *ARGS, f"--exp.train.steps={steps}",
         "--exp.optimizer.warmup_steps=2",
         f"--exp.data.cache_dir={cache}", f"--workdir={workdir}",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        env={**_env(2), **env}, cwd=tpu.repo_root(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _finish(procs: list[subprocess.Popen], head: list[list[str]] | None = None) -> list[str]:
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            p.kill()
    if head is not None:
        outs = ["".join(h) + o for h, o in zip(head, outs)]
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"
    return outs


def _losses(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # Build the embedded corpus once, so the two workers only read it.
    path = tmp_path_factory.mktemp("corpus")
    from data_mixtures import embedded

    embedded.build_mixture(str(path))
    return path


def _preempt_host_1(workdir, cache, **env) -> int:
    """Starts a 6-step two-process job, SIGTERMs process 1 after step 2; the saved step."""
    procs = _start(workdir, cache, steps=6, **env)
    head: list[list[str]] = [[], []]
    for line in procs[0].stdout:  # process 0 logs the steps
        head[0].append(line)
        if line.startswith("step 2/6"):
            procs[1].send_signal(signal.SIGTERM)
            break
    outs = _finish(procs, head)
    assert "process 0 of 2: 2 local of 4 devices" in outs[0]
    assert "process 1 of 2: 2 local of 4 devices" in outs[1]
    # Host 0 logs for the job; both exited cleanly (0) after saving the same step together.
    saved = re.search(r"SIGTERM: saved step (\d+), exiting", outs[0])
    assert saved, outs[0][-2000:]
    stop = int(saved.group(1))
    assert 2 <= stop < 6
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == sorted({2, stop})
    # One data-iterator state per host, saved with the model state.
    assert sorted(p.name for p in (workdir / "checkpoints" / str(stop) / "data").glob(
        "*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]
    return stop


def test_without_jax_preemption_service_the_hosts_agree_by_all_gather(tmp_path, cache):
    _preempt_host_1(tmp_path / "two", cache, JAX_ENABLE_PREEMPTION_SERVICE="false")


def test_two_processes_preempted_on_one_host_resume_and_match_one_process(tmp_path, cache):
    """SIGTERM reaches one host only (a maintenance event on one VM): both hosts stop at the
    same step, save one checkpoint together and exit cleanly; the relaunched job resumes there,
    and every loss equals a single process training the same 4-device mesh."""
    two = tmp_path / "two"
    stop = _preempt_host_1(two, cache)

    outs = _finish(_start(two, cache, steps=6))  # the relaunched job resumes
    assert f"at step {stop}" in outs[0], outs[0][-2000:]

    one = tmp_path / "one"
    done = subprocess.run(
        [sys.executable, "-m", "launch.local", *ARGS, "--exp.train.steps=6",
         "--exp.optimizer.warmup_steps=2", f"--exp.data.cache_dir={cache}", f"--workdir={one}"],
        env=_env(4), cwd=tpu.repo_root(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    ours, reference = _losses(two), _losses(one)
    assert sorted(ours) == sorted(reference) == [1, 2, 3, 4, 5, 6]
    # Same mesh and batch; only the cross-process reduction order may differ (gloo).
    np.testing.assert_allclose([ours[s] for s in range(1, 7)],
                               [reference[s] for s in range(1, 7)], rtol=2e-5)
    assert reference[6] < reference[1]
