"""launch.tpu: workstation commands (queued resources + ssh --worker=all, xpk), the queued-resource
wait, worker mode with a real jax.distributed, and the dry run on libtpu's compile-only devices."""

import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys

import pytest

from launch import tpu

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "https://github.com/example/phi4-jax.git"
BASE = ["prog", "--exp=phi4_pretrain", "--exp.train.per_device_batch=2",
        "--exp.optimizer.peak_lr", "1e-4", "--workdir=gs://bucket/run", "--tpu=v5p-128",
        f"--repo={REPO}", f"--commit={COMMIT}"]


class Recorder(tpu.Runner):
    """Runs nothing: records each command and answers `describe` from a script of states."""

    def __init__(self, states=(), print_only=False):
        super().__init__(print_only=print_only, out=io.StringIO())
        self.commands, self.states = [], list(states)

    def __call__(self, cmd, *, capture=False, check=True, note=""):
        self.show(cmd, note)
        self.commands.append(list(cmd))
        if "describe" in cmd and not self.print_only:
            state = self.states.pop(0)
            return tpu.Result(1 if state is None else 0, state or "")
        return tpu.Result(0)


def printed(argv):
    runner = Recorder(print_only=True)
    tpu.main(argv + ["--print_only"], runner=runner)
    return runner.commands


def worker_argv(script: str) -> list[str]:
    """The `python -m launch.tpu ...` line of a worker script, split as a shell would."""
    (line,) = [x for x in script.splitlines() if "launch.tpu" in x]
    return shlex.split(line)


def test_print_only_creates_waits_and_starts_every_worker():
    create, describe, ssh = printed(BASE + ["--zone=us-east5-a", "--env=LIBTPU_INIT_ARGS=--x=1"])
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create",
                          "phi4-pretrain"]
    assert {"--zone=us-east5-a", "--accelerator-type=v5p-128", "--node-id=phi4-pretrain",
            "--runtime-version=v2-alpha-tpuv5"} <= set(create)
    assert describe[4:6] == ["describe", "phi4-pretrain"]
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "phi4-pretrain"]
    assert "--worker=all" in ssh
    (command,) = [a for a in ssh if a.startswith("--command=")]
    script = command[len("--command="):]
    assert f"git checkout --quiet --force {COMMIT}" in script
    assert f"git clone --quiet {REPO} phi4-jax" in script
    assert 'pip install --quiet -e ".[tpu]"' in script
    assert "export LIBTPU_INIT_ARGS=--x=1" in script
    job = worker_argv(script)
    assert job[:3] == ["python", "-m", "launch.tpu"] and "--worker" in job
    # The workers parse the forwarded arguments to the same config.
    here, there = tpu.parse(BASE), tpu.parse(["prog"] + job[3:])
    assert there.exp.to_dict() == here.exp.to_dict()
    assert there.exp.optimizer.peak_lr == 1e-4 and there.exp.train.per_device_batch == 2
    assert there.workdir == "gs://bucket/run" and there.worker


def test_print_only_multislice_uses_node_prefix_and_queued_resource_ssh():
    create, _, ssh = printed(BASE + ["--zone=z", "--num_slices=2", "--spot", "--project=p",
                                     "--name=run1", "--plan_batch"])
    assert {"--node-count=2", "--node-prefix=run1", "--spot", "--project=p"} <= set(create)
    assert not any(a.startswith("--node-id") for a in create)
    assert ssh[3:6] == ["queued-resources", "ssh", "run1"]
    assert {"--node=all", "--worker=all"} <= set(ssh)
    job = worker_argv(ssh[-1])
    assert {"--tpu=v5p-128", "--num_slices=2", "--plan_batch", "--worker"} <= set(job)


def test_print_only_xpk_workload():
    (cmd,) = printed(BASE + ["--xpk_cluster=c1", "--docker_image=gcr.io/p/phi4:1"])
    assert cmd[:3] == ["xpk", "workload", "create"]
    assert {"--cluster=c1", "--workload=phi4-pretrain", "--tpu-type=v5p-128", "--num-slices=1",
            "--docker-image=gcr.io/p/phi4:1"} <= set(cmd)
    job = shlex.split(cmd[-1][len("--command="):])
    assert job[:3] == ["python", "-m", "launch.tpu"] and "--worker" in job
    (cmd,) = printed(BASE + ["--xpk_cluster=c1"])  # this checkout layered on a base image
    assert f"--script-dir={tpu.repo_root()}" in cmd and "--base-docker-image=python:3.11" in cmd


def test_waits_for_active_then_starts_workers():
    runner = Recorder(states=[None, "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"])
    tpu.main(BASE + ["--zone=z", "--poll_seconds=0"], runner=runner)
    verbs = [c[4] for c in runner.commands]
    assert verbs == ["describe", "create", "describe", "describe", "describe", "ssh"]


def test_reuses_an_active_queued_resource_and_reports_failure():
    runner = Recorder(states=["ACTIVE", "ACTIVE"])
    tpu.main(BASE + ["--zone=z", "--poll_seconds=0"], runner=runner)
    assert [c[4] for c in runner.commands] == ["describe", "describe", "ssh"]
    with pytest.raises(tpu.LaunchError, match="queued resource phi4-pretrain is FAILED"):
        tpu.main(BASE + ["--zone=z", "--poll_seconds=0"],
                 runner=Recorder(states=[None, "WAITING_FOR_RESOURCES", "FAILED"]))


def test_missing_binary_and_missing_flags_are_explained():
    with pytest.raises(tpu.LaunchError, match="not installed.*--print_only"):
        tpu.Runner()(["phi4-no-such-binary", "--version"])
    with pytest.raises(tpu.LaunchError, match="--zone is required"):
        tpu.main(BASE, runner=Recorder())
    with pytest.raises(tpu.LaunchError, match="--dry_run needs --tpu"):
        tpu.main(["prog", "--exp=phi4_pretrain:smoke", "--dry_run"])
    with pytest.raises(tpu.cli.UsageError, match="--exp is required"):
        tpu.main(["prog", "--dry_run"])


def test_exp_args_and_worker_detection(monkeypatch):
    argv = ["p", "--exp", "ablation_7b_1t:mixture=uniform", "--exp.train.steps", "5",
            "--exp.model.scan_layers", "--zone=z", "--exp.mesh.ici.fsdp=4"]
    assert tpu.exp_args(argv) == ["--exp=ablation_7b_1t:mixture=uniform", "--exp.train.steps=5",
                                  "--exp.model.scan_layers", "--exp.mesh.ici.fsdp=4"]
    for key in ("TPU_WORKER_ID", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE",
                "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    if not any(map(os.path.exists, ("/dev/accel0", "/dev/vfio/0"))):
        assert not tpu.on_tpu_vm()
    monkeypatch.setenv("TPU_WORKER_ID", "3")
    assert tpu.on_tpu_vm()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_worker_initializes_jax_distributed_and_writes_the_config(tmp_path):
    """A real worker process: jax.distributed with explicit flags, the loop, config.json."""
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launch.tpu", "--worker", "--exp=phi4_pretrain:smoke",
           "--exp.data.source=synthetic", "--exp.data.seq_len=32", "--exp.model.vocab_size=256",
           "--exp.train.steps=1", "--exp.optimizer.warmup_steps=1", "--exp.model.remat=none",
           "--exp.train.loss_vocab_chunks=1",
           "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=false",
           f"--workdir={workdir}", f"--coordinator_address=localhost:{_free_port()}",
           "--num_processes=1", "--process_id=0"]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          cwd=tpu.repo_root())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process 0 of 1: 4 local of 4 devices" in done.stdout
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["name"] == "phi4_pretrain" and saved["train"]["steps"] == 1
    assert saved["model"]["vocab_size"] == 256 and saved["model"]["rope_theta"] == 10_000
    assert (workdir / "checkpoints" / "1").is_dir()


PEAK_LINE = re.compile(r"per-chip peak: \d+\.\d\d GiB of \d+\.\d\d GiB HBM")


@pytest.mark.slow
@pytest.mark.tpu_compile
def test_dry_run_prints_the_report_and_fails_when_it_does_not_fit(capsys, tmp_path):
    tpu.main(["prog", "--exp=phi4_pretrain:smoke", "--dry_run", "--tpu=v5p-8",
              "--exp.model.dtype=bfloat16", f"--workdir={tmp_path}"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert PEAK_LINE.fullmatch(lines[-1]), lines[-1]
    assert any("compile time" in x for x in lines) and any("model FLOPs" in x for x in lines)
    assert json.loads((tmp_path / "config.json").read_text())["name"] == "phi4_pretrain"
    # 64 x 16K rows on one 16 GiB chip: the TPU compiler itself runs out of HBM.
    with pytest.raises(tpu.LaunchError, match="does not fit on v5litepod-1.*out of memory"):
        tpu.main(["prog", "--exp=phi4_pretrain:smoke", "--dry_run", "--tpu=v5litepod-1",
                  "--exp.train.global_batch=64", "--exp.data.seq_len=16384"])


@pytest.mark.slow
@pytest.mark.tpu_compile
def test_dry_run_applies_the_batch_plan(capsys):
    """1440 sequences (mid-training's batch) do not split over v5p-128's 64 chips as pure
    FSDP; the planner's layout (tensor=2 x fsdp=32) does, and compiles."""
    argv = ["prog", "--exp=phi4_midtrain:smoke", "--exp.train.global_batch=1440",
            "--exp.data.seq_len=128", "--dry_run", "--tpu=v5p-128"]
    with pytest.raises(tpu.LaunchError, match=r"1440 rows per micro-batch do not split"):
        tpu.main(argv)
    tpu.main(argv + ["--plan_batch"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert PEAK_LINE.fullmatch(lines[-1])
    assert "tensor=2" in lines[0] and any("global batch 1440" in x for x in lines)


def test_a_config_the_topology_rejects_fails_before_any_tpu_is_requested():
    runner = Recorder(print_only=True)
    with pytest.raises(tpu.LaunchError,
                       match=r"phi4_pretrain on v5p-128: train\.per_device_batch=7"):
        tpu.main(BASE + ["--zone=z", "--exp.train.per_device_batch=7", "--print_only"],
                 runner=runner)
    assert runner.commands == []
