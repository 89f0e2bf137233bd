"""Runs an experiment on Cloud TPU: on each worker, from a workstation, or as a dry run here.

    # From a workstation: create or reuse the TPU (a queued resource), wait until ACTIVE, then
    # set up and start every worker over ssh (--print_only: print the commands, run nothing)
    python -m launch.tpu --exp=phi4_pretrain --workdir=gs://BUCKET/phi4_pretrain \\
        --tpu=v5p-128 --zone=us-east5-a [--project=P] [--num_slices=2] [--spot] [--plan_batch]
    # GKE: emit (and run) an xpk workload instead
    python -m launch.tpu --exp=phi4_pretrain --workdir=gs://BUCKET/phi4_pretrain \\
        --tpu=v5p-128 --xpk_cluster=CLUSTER [--docker_image=IMAGE]
    # On each TPU VM worker (what the two above start there; auto-detected on a TPU VM)
    python -m launch.tpu --exp=phi4_pretrain --workdir=gs://BUCKET/phi4_pretrain --worker
    # Compile the exact train step ahead of time for a topology, on this CPU host
    python -m launch.tpu --exp=phi4_pretrain --dry_run --tpu=v5p-128 [--plan_batch]

--exp and --exp.FIELD=VALUE overrides work in every mode (launch.local's parsing) and are
forwarded verbatim to the workers. Worker mode initializes jax.distributed (auto-detected on
Cloud TPU VMs and GKE; --coordinator_address / --num_processes / --process_id elsewhere), builds
the mesh over all slices (DCN on data) and runs the training loop, which writes the resolved
config to WORKDIR/config.json and its run record to WORKDIR/runs.jsonl on the primary worker.
--reproduce=WORKDIR[@N] (instead of --exp) reruns a record's resolved config: the workers check
out the record's commit (unless --commit) and warn about, or with --strict refuse, any
difference in code, packages or input data. --plan_batch applies the batch planner's
layout for --tpu x --num_slices (exactly train.global_batch sequences per step) first.
Every gcloud / xpk command is printed before it runs, through `Runner` (tests swap it).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from absl import flags

from launch import exp_flags
from phi4_jax import cli
from phi4_jax.sharding.topology import describe

# Cloud TPU software versions per generation (override with --runtime_version).
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
# Environment variables present on Cloud TPU VMs / GKE TPU pods (worker auto-detection).
_TPU_ENV = ("TPU_WORKER_ID", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE",
            "MEGASCALE_COORDINATOR_ADDRESS")
_TPU_DEVICES = ("/dev/accel0", "/dev/vfio/0")
_FAILED_STATES = ("FAILED", "SUSPENDING", "SUSPENDED")
_FIT_HINT = ("Try --exp.train.per_device_batch=1, --exp.model.remat=full, more chips, or "
             "--plan_batch")


class LaunchError(cli.UsageError):
    """A launch step failed; the message says which and what to do (one line, exit 2)."""


def define_flags(values: flags.FlagValues, argv: Sequence[str]) -> None:
    exp_flags.define_exp(values, argv)  # --exp, --reproduce=WORKDIR[@N], --strict
    d = dict(flag_values=values)
    flags.DEFINE_string("workdir", None, "checkpoints, logs and config.json (gs:// on pods)", **d)
    flags.DEFINE_bool("worker", False, "run the job on this TPU VM worker", **d)
    flags.DEFINE_bool("dry_run", False, "compile the train step for --tpu on this host", **d)
    flags.DEFINE_bool("print_only", False, "print the gcloud / xpk commands, run nothing", **d)
    flags.DEFINE_bool("plan_batch", False, "apply the batch planner's layout for --tpu", **d)
    flags.DEFINE_string("tpu", None, "accelerator type, e.g. v5p-128 (chips x 2 for v4/v5p)", **d)
    flags.DEFINE_integer("num_slices", 1, "TPU slices (multi-slice: DCN on data)", lower_bound=1,
                         **d)
    flags.DEFINE_string("zone", None, "Cloud zone of the TPU", **d)
    flags.DEFINE_string("project", None, "Cloud project (default: gcloud's)", **d)
    flags.DEFINE_string("name", None, "queued resource / TPU / workload name "
                        "(default: the experiment name)", **d)
    flags.DEFINE_string("runtime_version", None, "TPU software version (default per generation)",
                        **d)
    flags.DEFINE_bool("spot", False, "request Spot TPUs", **d)
    flags.DEFINE_bool("reserved", False, "use the project's reservation", **d)
    flags.DEFINE_integer("wait_minutes", 24 * 60, "how long to wait for ACTIVE", lower_bound=0,
                         **d)
    flags.DEFINE_float("poll_seconds", 30, "seconds between queued-resource state checks",
                       lower_bound=0, **d)
    flags.DEFINE_string("repo", None, "git URL the workers clone (default: this checkout's "
                        "origin)", **d)
    flags.DEFINE_string("commit", None, "commit the workers check out (default: HEAD)", **d)
    flags.DEFINE_string("remote_dir", "phi4-jax", "checkout directory on the workers", **d)
    flags.DEFINE_multi_string("env", [], "KEY=VALUE set on the workers (repeatable)", **d)
    flags.DEFINE_bool("detach", False, "run under nohup on the workers (log: "
                      "REMOTE_DIR/NAME.log) instead of streaming over ssh", **d)
    flags.DEFINE_string("xpk_cluster", None, "GKE cluster: emit an xpk workload instead", **d)
    flags.DEFINE_string("docker_image", None, "xpk: a prebuilt image with phi4_jax installed", **d)
    flags.DEFINE_string("base_docker_image", "python:3.11", "xpk: base image; this checkout is "
                        "layered on it and installed at start", **d)
    flags.DEFINE_string("coordinator_address", None, "jax.distributed: host:port of process 0 "
                        "(not needed on Cloud TPU)", **d)
    flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes", **d)
    flags.DEFINE_integer("process_id", None, "jax.distributed: this process's index", **d)


PROG = "python -m launch.tpu"
USAGE = ("(--exp=NAME[:ARG] | --reproduce=WORKDIR[@N] [--strict]) [--exp.FIELD=VALUE ...] "
         "(--dry_run --tpu=T | --worker --workdir=D | "
         "--tpu=T --zone=Z --workdir=D | --tpu=T --xpk_cluster=C --workdir=D)")
EXAMPLE = "python -m launch.tpu --exp=phi4_pretrain --dry_run --tpu=v5p-128"


def parse(argv: Sequence[str]) -> flags.FlagValues:
    """Flags (the experiment as `.exp`, overrides applied) from a command line."""
    return exp_flags.parse(argv, prog=PROG, doc=__doc__, usage=USAGE, example=EXAMPLE,
                           define=define_flags)


def exp_args(argv: Sequence[str]) -> list[str]:
    """The experiment's own arguments (--exp=NAME[:ARG], --exp.FIELD=VALUE, --reproduce=SPEC,
    --strict), as typed, with separate values joined (`--exp NAME` -> `--exp=NAME`): what
    workers are given."""
    out, args, i = [], list(argv[1:]), 0
    while i < len(args):
        arg = args[i]
        separate = arg in ("--exp", "--reproduce") or (arg.startswith("--exp.") and "=" not in arg)
        if separate and i + 1 < len(args) and not args[i + 1].startswith("--"):
            arg, i = f"{arg}={args[i + 1]}", i + 1
        if arg.startswith(("--exp=", "--exp.", "--reproduce=")) or arg in ("--strict",
                                                                           "--nostrict"):
            out.append(arg)
        i += 1
    return out


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str = ""


class Runner:
    """The one place commands run: prints each, then runs it (not at all with print_only)."""

    def __init__(self, print_only: bool = False, out=None):
        self.print_only, self.out = print_only, out or sys.stdout

    def show(self, cmd: Sequence[str], note: str = "") -> None:
        print(shlex.join(cmd) + (f"    # {note}" if note else ""), file=self.out, flush=True)

    def __call__(self, cmd: Sequence[str], *, capture: bool = False, check: bool = True,
                 note: str = "") -> Result:
        self.show(cmd, note)
        if self.print_only:
            return Result(0)
        if shutil.which(cmd[0]) is None:
            raise LaunchError(f"{cmd[0]!r} is not installed or not on PATH (Google Cloud CLI: "
                              "https://cloud.google.com/sdk; xpk: pip install xpk); "
                              "--print_only prints the commands without running them")
        done = subprocess.run(list(cmd), text=True, check=False,
                              stdout=subprocess.PIPE if capture else None)
        if check and done.returncode:
            raise LaunchError(f"command failed with exit status {done.returncode}: "
                              f"{shlex.join(cmd)}")
        return Result(done.returncode, done.stdout or "")


@dataclasses.dataclass(frozen=True)
class Pod:
    """What the workstation commands need to know about the TPU and the job."""

    name: str
    tpu: str
    num_slices: int = 1
    zone: str | None = None
    project: str | None = None
    runtime_version: str | None = None
    spot: bool = False
    reserved: bool = False

    def _where(self) -> list[str]:
        return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

    def create(self) -> list[str]:
        runtime = self.runtime_version or RUNTIME_VERSIONS[describe(self.tpu).generation]
        nodes = ([f"--node-id={self.name}"] if self.num_slices == 1 else
                 [f"--node-count={self.num_slices}", f"--node-prefix={self.name}"])
        return (["gcloud", "compute", "tpus", "queued-resources", "create", self.name,
                 *self._where(), f"--accelerator-type={self.tpu}",
                 f"--runtime-version={runtime}", *nodes]
                + ["--spot"] * self.spot + ["--reserved"] * self.reserved)

    def describe(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.name,
                *self._where(), "--format=value(state.state)"]

    def ssh(self, script: str) -> list[str]:
        if self.num_slices == 1:
            return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name, *self._where(),
                    "--worker=all", f"--command={script}"]
        return ["gcloud", "compute", "tpus", "queued-resources", "ssh", self.name,
                *self._where(), "--node=all", "--worker=all", f"--command={script}"]


def worker_command(exp: Sequence[str], workdir: str, *, tpu: str | None, num_slices: int,
                   plan_batch: bool) -> list[str]:
    """`python -m launch.tpu --worker ...` with the experiment's arguments."""
    cmd = ["python", "-m", "launch.tpu", *exp, f"--workdir={workdir}", "--worker"]
    if plan_batch:
        cmd += [f"--tpu={tpu}", f"--num_slices={num_slices}", "--plan_batch"]
    return cmd


def setup_script(job: Sequence[str], *, repo: str, commit: str, remote_dir: str,
                 env: Sequence[str] = (), log: str | None = None) -> str:
    """The shell script each worker runs: the repository at `commit`, the [tpu] extra in a
    virtual environment, the environment variables, then the job."""
    q = shlex.quote
    lines = ["set -euo pipefail",
             f"[ -d {q(remote_dir)}/.git ] || git clone --quiet {q(repo)} {q(remote_dir)}",
             f"cd {q(remote_dir)}",
             f"git fetch --quiet origin && git checkout --quiet --force {q(commit)}",
             "[ -d .venv ] || python3 -m venv .venv",
             ". .venv/bin/activate",
             "pip install --quiet --upgrade pip && pip install --quiet -e \".[tpu]\"",
             "export PYTHONUNBUFFERED=1"]
    lines += [f"export {key}={q(value)}" for key, _, value in (e.partition("=") for e in env)]
    run = shlex.join(job)
    lines.append(f"nohup {run} > {q(log)} 2>&1 &" if log else run)
    return "\n".join(lines)


def xpk_command(pod: Pod, job: Sequence[str], *, cluster: str, docker_image: str | None,
                base_docker_image: str, script_dir: str) -> list[str]:
    """`xpk workload create`: a prebuilt image, or this checkout layered on a base image."""
    cmd = ["xpk", "workload", "create", f"--cluster={cluster}", f"--workload={pod.name}",
           f"--tpu-type={pod.tpu}", f"--num-slices={pod.num_slices}"]
    cmd += [f"--zone={pod.zone}"] * bool(pod.zone) + [f"--project={pod.project}"] * bool(
        pod.project)
    run = shlex.join(job)
    if docker_image:
        return cmd + [f"--docker-image={docker_image}", f"--command={run}"]
    return cmd + [f"--base-docker-image={base_docker_image}", f"--script-dir={script_dir}",
                  f"--command=pip install --quiet -e \".[tpu]\" && {run}"]


def wait_active(pod: Pod, runner: Runner, *, minutes: float, poll_seconds: float = 30,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Polls the queued resource until ACTIVE, printing each state change with elapsed time."""
    if runner.print_only:
        runner(pod.describe(), capture=True, check=False, note="repeated until it prints ACTIVE")
        return
    start, last = clock(), None
    while True:
        state = runner(pod.describe(), capture=True, check=False).stdout.strip() or "UNKNOWN"
        elapsed = clock() - start
        if state != last:
            print(f"queued resource {pod.name}: {state} after {elapsed / 60:.1f} min",
                  flush=True)
            last = state
        if state == "ACTIVE":
            return
        if state in _FAILED_STATES:
            raise LaunchError(f"queued resource {pod.name} is {state}: see `gcloud compute tpus "
                              f"queued-resources describe {pod.name} --zone={pod.zone}`")
        if elapsed > minutes * 60:
            raise LaunchError(f"queued resource {pod.name} still {state} after {minutes} min "
                              "(--wait_minutes); it stays queued: rerun to keep waiting")
        sleep(poll_seconds)


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=repo_root()).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def workstation(values: flags.FlagValues, argv: Sequence[str], runner: Runner) -> Pod:
    """Create or reuse the TPU, then start the job on every worker (or submit it via xpk)."""
    if not values.tpu or not values.workdir:
        raise LaunchError("launching needs --tpu (e.g. v5p-128) and --workdir (gs://... so "
                          "every worker sees it); or --dry_run, or --worker on a TPU VM")
    if not values.xpk_cluster and not values.zone:
        raise LaunchError("--zone is required to create the TPU (or --xpk_cluster for GKE)")
    pod = Pod(name=values.name or values.exp.name.replace("_", "-"), tpu=values.tpu,
              num_slices=values.num_slices, zone=values.zone, project=values.project,
              runtime_version=values.runtime_version, spot=values.spot,
              reserved=values.reserved)
    preflight(values)
    job = worker_command(exp_args(argv), values.workdir, tpu=values.tpu,
                         num_slices=values.num_slices, plan_batch=values.plan_batch)
    if values.xpk_cluster:
        runner(xpk_command(pod, job, cluster=values.xpk_cluster, docker_image=values.docker_image,
                           base_docker_image=values.base_docker_image, script_dir=repo_root()))
        return pod
    repo = values.repo or _git("remote", "get-url", "origin")
    commit = values.commit or _recorded_commit(values) or _git("rev-parse", "HEAD")
    if not repo or not commit:
        raise LaunchError("cannot tell which repository and commit the workers should run: "
                          "pass --repo=GIT_URL and --commit=SHA")
    if not values.commit and _git("status", "--porcelain", "--untracked-files=no"):
        print(f"warning: uncommitted changes are not on the workers; they run {commit}",
              file=sys.stderr)
    existing = None if runner.print_only else runner(pod.describe(), capture=True, check=False)
    if existing is not None and existing.returncode == 0 and existing.stdout.strip():
        print(f"reusing queued resource {pod.name} ({existing.stdout.strip()})", flush=True)
    else:
        runner(pod.create(), note="unless it exists")
    wait_active(pod, runner, minutes=values.wait_minutes, poll_seconds=values.poll_seconds)
    log = f"{pod.name}.log" if values.detach else None
    runner(pod.ssh(setup_script(job, repo=repo, commit=commit, remote_dir=values.remote_dir,
                                env=values.env, log=log)))
    return pod


def _recorded_commit(values: flags.FlagValues) -> str | None:
    """--reproduce: the commit the record ran (its uncommitted changes are not on the workers:
    said here; the workers' --strict refuses such a record)."""
    if not values.reproduce:
        return None
    from phi4_jax.runs import reproduce

    code = reproduce.load(values.reproduce).get("code") or {}
    if code.get("dirty"):
        print(f"warning: {values.reproduce} ran with uncommitted changes (diff sha256 "
              f"{code.get('diff_sha256')}); the workers run its commit {code.get('commit')} "
              "without them", file=sys.stderr)
    return code.get("commit")


def compile_only_libtpu() -> None:
    """Compile-only libtpu use: no chips to contend for, so other processes (tests, another dry
    run) may hold libtpu too. Not on a TPU VM, where a running job owns the chips."""
    if not on_tpu_vm():
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def preflight(values: flags.FlagValues) -> None:
    """Validates the config for --tpu x --num_slices here, before any TPU is requested: the
    planner's layout (with --plan_batch), the mesh, rules and batch over libtpu's compile-only
    devices (`loop.build`: no compilation). Skipped with a note when libtpu is missing."""
    from phi4_jax.sharding import topology
    from phi4_jax.train import loop

    config = values.exp.copy_and_resolve_references()
    compile_only_libtpu()
    try:
        devices = topology.devices(values.tpu, values.num_slices)
    except RuntimeError as e:
        print(f"note: config not validated for {values.tpu} ({e})", file=sys.stderr)
        return
    if values.plan_batch:
        apply_plan(config, values.tpu, values.num_slices)
    try:
        loop.build(config, devices)
    except ValueError as e:
        raise LaunchError(f"{config.name} on {values.tpu}: {e}") from e


def on_tpu_vm() -> bool:
    """True on a Cloud TPU VM or in a GKE TPU pod (its environment or TPU device files)."""
    return any(os.environ.get(k) for k in _TPU_ENV) or any(map(os.path.exists, _TPU_DEVICES))


def apply_plan(config, tpu: str | None, num_slices: int) -> None:
    """The batch planner's layout for the topology, applied to config (printed)."""
    from launch import planner

    if not tpu:
        raise LaunchError("--plan_batch needs --tpu (e.g. v5p-128)")
    try:
        plan = planner.plan_batch(config, tpu, num_slices)
    except planner.BatchPlanError as e:
        raise LaunchError(f"batch planner: {e}") from e
    print(plan.describe(), flush=True)
    plan.apply(config)


def initialize_distributed(values: flags.FlagValues) -> None:
    """jax.distributed for this worker: explicit flags, else Cloud TPU / GKE auto-detection."""
    import jax

    explicit = {k: values[k].value for k in ("coordinator_address", "num_processes",
                                             "process_id") if values[k].value is not None}
    if explicit or on_tpu_vm():
        jax.distributed.initialize(**explicit)
    print(f"process {jax.process_index()} of {jax.process_count()}: "
          f"{jax.local_device_count()} local of {jax.device_count()} devices", flush=True)


def worker(values: flags.FlagValues, argv: Sequence[str] | None = None):
    if not values.workdir:
        raise LaunchError("--worker needs --workdir")
    initialize_distributed(values)
    exp_flags.record_command(values, sys.argv if argv is None else argv, PROG)
    config = values.exp
    if values.plan_batch:
        apply_plan(config, values.tpu or os.environ.get("TPU_ACCELERATOR_TYPE"),
                   values.num_slices)
    from phi4_jax.train import loop  # builds the mesh over every slice; config.json on host 0

    return loop.run(config, values.workdir)


def dry_run(values: flags.FlagValues):
    """Compiles the step for --tpu here; raises LaunchError when it does not fit in HBM."""
    if not values.tpu:
        raise LaunchError("--dry_run needs --tpu (e.g. v5p-128)")
    import jax

    if not os.environ.get("JAX_PLATFORMS"):  # compile-only TPU devices; libtpu must not
        jax.config.update("jax_platforms", "cpu")  # claim (or probe for) a TPU here
    compile_only_libtpu()
    config = values.exp
    if values.plan_batch:
        apply_plan(config, values.tpu, values.num_slices)
    from phi4_jax.train import aot

    try:
        report = aot.dry_run(config, values.tpu, values.num_slices)
    except jax.errors.JaxRuntimeError as e:  # the TPU compiler itself may refuse: out of HBM
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        raise LaunchError(f"{config.name} does not fit on {values.tpu}: the TPU compiler ran "
                          f"out of memory: {str(e).splitlines()[0]}. {_FIT_HINT}") from e
    print("\n".join(report.lines()), flush=True)
    if values.workdir:
        from phi4_jax.io.atomic import atomic_write_text

        os.makedirs(values.workdir, exist_ok=True)
        atomic_write_text(os.path.join(values.workdir, "config.json"),
                          config.to_json_best_effort(indent=2, sort_keys=True))
    if not report.fits:
        raise LaunchError(
            f"{config.name} does not fit on {values.tpu}: per-chip peak "
            f"{report.peak_bytes / 2**30:.2f} GiB > {report.hbm_bytes / 2**30:.2f} GiB HBM. "
            + _FIT_HINT)
    return report


def main(argv: Sequence[str] | None = None, runner: Runner | None = None):
    argv = cli.strip_debug(list(sys.argv if argv is None else argv))
    values = parse(argv)
    if values.dry_run:
        try:
            return dry_run(values)
        except ValueError as e:  # a config the mesh or model rejects, named by field
            raise LaunchError(str(e)) from e
    if values.worker or (on_tpu_vm() and not values.zone and not values.xpk_cluster):
        exp_flags.configure_logging()
        return worker(values, argv)
    return workstation(values, argv, runner or Runner(values.print_only))


def _entry(args: Sequence[str]) -> int:
    main([sys.argv[0], *args])
    return 0


if __name__ == "__main__":
    cli.quiet_library_noise()  # libtpu's metadata probes on a CPU host
    cli.run(_entry, prog=PROG, user_errors=(ValueError,))
