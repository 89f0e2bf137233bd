"""The training loop: the one module with side effects (devices, files, signals, clocks).

`run(config, workdir)` converts an experiment config once into its typed form
(`phi4_jax.train.config.RunConfig`: an unknown key or a wrong type fails here, naming the
field), builds everything from it (failing on a bad value before anything compiles), then
trains:

    resume order   WORKDIR/checkpoints (own run; newest good step) -> train.init_from (another
                   phase's parameters, fresh optimizer) -> scratch (train.seed); on a fresh
                   start the objective may fill its frozen state (`Objective.load_frozen`)
    finished run   a checkpoint at train.steps: nothing compiles or trains; the run's last
                   logged metrics (WORKDIR/metrics.jsonl) are printed and returned
    each step      put this host's batch on the mesh, run the compiled step, then fetch the
                   PREVIOUS step's metrics (the host never waits on the step in flight)
    checkpoints    every train.checkpoint_every steps and at the end, asynchronously, with the
                   data iterator state; SIGTERM (preemption) saves at the next step and exits
    non-finite     a NaN/Inf loss or gradient skips that update (counted); after
                   train.max_nonfinite_in_row such steps in a row the run aborts
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.experimental.multihost_utils as multihost
import numpy as np

from phi4_jax.sharding import mesh as mesh_lib
from phi4_jax.sharding import rules as rules_lib
from phi4_jax.train import checkpoint as ckpt_lib
from phi4_jax.train import flops, objectives, optimizer, program
from phi4_jax.train.config import RunConfig, TrainConfig
from phi4_jax.train.metrics import MetricLogger

log = logging.getLogger(__name__)


class NonFiniteAbort(RuntimeError):
    """Too many consecutive steps with a NaN/Inf loss or gradient."""


@dataclasses.dataclass
class RunResult:
    step: int  # the step the run stopped at (state after `step` updates)
    start: str  # 'checkpoint', 'init_from' or 'scratch'
    preempted: bool
    metrics: dict[str, float]  # the last step's scalars (a finished run: the last logged)


def _preemption_service() -> bool:
    """Whether jax.distributed runs JAX's preemption sync service (it then owns SIGTERM)."""
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - private module moved
        return False
    return getattr(distributed.global_state, "preemption_sync_manager", None) is not None


class _Preemption:
    """Turns SIGTERM into a flag checked between steps, agreed on across hosts.

    One process: a Python SIGTERM handler sets the flag. Several processes: every host must stop
    at the same step (the checkpoint save is a collective), even when only one VM gets the
    signal. With JAX's preemption service (the default of jax.distributed) its own SIGTERM
    handler notifies every host and `reached_preemption_sync_point` names the common step; a
    Python handler would replace that handler and leave the other hosts training, so none is
    installed. Without the service, the hosts OR their flags with a small all-gather each step.
    """

    def __init__(self):
        self.signaled = False  # this process got SIGTERM (set by the handler, any time)
        self.requested = False  # the job stops at this step (every host agrees)
        self._previous = None
        self._service = False

    def __enter__(self) -> _Preemption:
        self._service = jax.process_count() > 1 and _preemption_service()
        if self._service:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self.signaled = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        if self._service:
            self.requested = self.requested or multihost.reached_preemption_sync_point(step)
        elif jax.process_count() > 1:
            # The handler may run during the gather; a signal it misses goes into the next one.
            flags = multihost.process_allgather(np.array(self.signaled, np.int32))
            self.requested = self.requested or bool(np.any(flags))
        else:
            self.requested = self.signaled
        return self.requested


def _peak_flops(train: TrainConfig, devices: Sequence[jax.Device]) -> float | None:
    if train.peak_flops is not None:
        return train.peak_flops
    per_chip = flops.device_peak_flops(devices[0])
    if per_chip is not None:
        return per_chip * len(devices)
    if devices[0].platform == "cpu":  # simulated CPU devices share one host's cores
        return flops.measure_matmul_peak(devices[0], size=1024, seconds=0.5)
    return None


def build(config: Any, devices: Sequence[jax.Device] | None = None) -> program.Program:
    """The run's Program (`config`: a RunConfig or an experiment ConfigDict). Everything that
    can be checked is checked here, before compilation."""
    run_config = RunConfig.of(config)
    train = run_config.train
    mesh = mesh_lib.from_config(run_config.mesh, devices)
    rules = rules_lib.from_config(run_config.mesh, mesh)
    tx, _ = optimizer.from_config(run_config.optimizer, train.clip_norm, train.steps)
    return program.build(run_config.model, rules, objectives.from_config(run_config), tx,
                         seed=train.seed, global_batch=train.global_batch,
                         seq_len=run_config.data.seq_len,
                         micro_batches=micro_batches(train, rules))


def micro_batches(train: TrainConfig, rules: rules_lib.Rules) -> int:
    """train.micro_batches, or the count train.per_device_batch implies on this mesh."""
    per_device = train.per_device_batch
    if per_device is None:
        return train.micro_batches
    ways = rules.shards(("batch",))[0]
    rows = ways * per_device
    if per_device <= 0 or train.global_batch % rows:
        raise ValueError(
            f"train.per_device_batch={per_device} x {ways} batch-sharded devices = {rows} rows "
            f"per micro-step does not divide train.global_batch={train.global_batch}")
    implied = train.global_batch // rows
    if train.micro_batches not in (1, implied):
        raise ValueError(f"train.micro_batches={train.micro_batches} contradicts "
                         f"train.per_device_batch={per_device} (which implies {implied}); "
                         "set one of them")
    return implied


def run(config: Any, workdir: str, *, devices: Sequence[jax.Device] | None = None) -> RunResult:
    """Trains `config` (a RunConfig or an experiment ConfigDict) in `workdir`, resuming
    whatever is there, up to train.steps."""
    run_config = RunConfig.of(config)
    train = run_config.train
    prog = build(run_config, devices)
    primary = jax.process_index() == 0
    if primary:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(run_config.experiment, f, indent=2, sort_keys=True)

    checkpoints = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=train.keep,
                                        async_save=train.async_checkpoint)
    try:
        restored = checkpoints.restore(prog.abstract_state, prog.state_shardings)
        if restored is not None and restored[2] >= train.steps:
            checkpoints.close()
            return _finished(run_config, workdir, restored[2], primary)
        data = prog.objective.inputs(run_config, prog, workdir, host=jax.process_index(),
                                     host_count=jax.process_count())
        if restored is not None:
            state, data_state, _ = restored
            ckpt_lib.set_json_state(data, data_state)
            start = "checkpoint"
        else:
            state, start = _fresh_state(prog, train)
    except BaseException:
        checkpoints.close()
        raise
    step = int(state.step)

    t0 = time.perf_counter()
    step_fn = prog.step.lower(*prog.abstract_inputs()).compile()
    compile_s = time.perf_counter() - t0
    devices_used = list(prog.mesh.devices.flat)
    seq_len = run_config.data.seq_len
    tokens_per_step = train.global_batch * seq_len
    log_config = run_config.log
    logger = MetricLogger(
        workdir, total_steps=train.steps, tokens_per_step=tokens_per_step,
        flops_per_step=flops.flops_per_token(prog.model_config, seq_len) * tokens_per_step,
        peak_flops=_peak_flops(train, devices_used), log_every=train.log_every,
        tensorboard=log_config.tensorboard,
        wandb_project=log_config.wandb_project if log_config.wandb else None,
        config=run_config.experiment, writer=primary)
    logger.event(f"{run_config.name}: {prog.param_count / 1e6:.1f}M parameters on "
                 f"{len(devices_used)} device(s) mesh {dict(prog.mesh.shape)}, rules "
                 f"{prog.rules.name!r}; start from {start} at step {step}; compiled the step "
                 f"in {compile_s:.1f}s")

    meta = {"config": run_config.experiment}
    last: dict[str, float] = {}
    preempted = False
    pending = None  # (step number, device metrics) not yet fetched
    with _Preemption() as preemption:
        logger.start(step)
        try:
            while step < train.steps:
                batch = prog.put_batch(next(data))
                state, metrics = step_fn(state, batch)
                step += 1
                if pending is not None:
                    last = _report(logger, *pending, train.max_nonfinite_in_row)
                pending = (step, metrics)
                preempted = preemption.reached(step)
                if step % train.checkpoint_every == 0 or preempted or step == train.steps:
                    checkpoints.save(step, state, ckpt_lib.json_state(data), meta)
                if preempted:
                    logger.event(f"SIGTERM: saved step {step}, exiting")
                    break
            if pending is not None:
                last = _report(logger, *pending, train.max_nonfinite_in_row)
        finally:
            checkpoints.close()
            logger.close()
    return RunResult(step=step, start=start, preempted=preempted, metrics=last)


def _fresh_state(prog: program.Program, train: TrainConfig) -> tuple[Any, str]:
    """train.init_from's parameters (fresh optimizer) or the seed's init; then the objective
    fills its frozen state."""
    if train.init_from:
        params = ckpt_lib.restore_params(train.init_from, prog.abstract_state.params,
                                         prog.state_shardings.params)
        state, start = prog.from_params(params), "init_from"
    else:
        state, start = prog.init(), "scratch"
    return prog.objective.load_frozen(prog, state), start


def _finished(run_config: RunConfig, workdir: str, step: int, primary: bool) -> RunResult:
    """A run whose checkpoint is at (or past) train.steps: report it, train nothing."""
    step_logged, last = last_logged(workdir, upto=step)
    if primary:
        if last:
            shown = " | ".join(f"{label} {last[k]:{spec}}" for k, label, spec in (
                ("loss", "loss", ".4f"), ("learning_rate", "lr", ".2e"),
                ("grad_norm", "gnorm", ".3f"),
                *((k, k, ".4f") for k in sorted(last) if k.startswith("rewards/")))
                if k in last)
            summary = f"last logged metrics (step {step_logged}): {shown}"
        else:
            summary = f"no metrics in {os.path.join(workdir, 'metrics.jsonl')}"
        print(f"{run_config.name}: run complete at step {step}/{run_config.train.steps} in "
              f"{workdir}; nothing to train; {summary}", flush=True)
    return RunResult(step=step, start="checkpoint", preempted=False, metrics=last)


def last_logged(workdir: str, upto: int | None = None) -> tuple[int | None, dict[str, float]]:
    """(step, scalars) of the newest step (at most `upto`) in WORKDIR/metrics.jsonl, its last
    record (a resumed run appends the steps it redoes again), or (None, {})."""
    best: tuple[int | None, dict[str, float]] = (None, {})
    try:
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a torn last line of a killed run
                    continue
                step = record.pop("step", None)
                if not isinstance(step, int) or (upto is not None and step > upto):
                    continue
                if best[0] is None or step >= best[0]:
                    best = (step, record)
    except OSError:
        pass
    return best


def _report(logger: MetricLogger, step: int, metrics: Any, max_in_row: int) -> dict[str, float]:
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    logger.record(step, scalars)
    if scalars["nonfinite_in_row"] >= max_in_row:
        raise NonFiniteAbort(
            f"aborting at step {step}: {int(scalars['nonfinite_in_row'])} consecutive steps had "
            f"a non-finite loss or gradient norm (train.max_nonfinite_in_row={max_in_row}); "
            f"updates were skipped, the last checkpoint is unaffected. Lower "
            "optimizer.peak_lr, check the data around this step, or raise the limit.")
    return scalars
