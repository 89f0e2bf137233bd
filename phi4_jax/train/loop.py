"""The training loop: the one module with side effects (devices, files, signals, clocks).

`run(config, workdir)` builds everything from an experiment config (failing on a bad field
before anything compiles), then trains:

    resume order   WORKDIR/checkpoints (own run; newest good step) -> train.init_from (another
                   phase's parameters, fresh optimizer) -> scratch (train.seed)
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

from phi4_jax.model import ModelConfig
from phi4_jax.model.config import from_experiment
from phi4_jax.sharding import mesh as mesh_lib
from phi4_jax.sharding import rules as rules_lib
from phi4_jax.train import checkpoint as ckpt_lib
from phi4_jax.train import flops, inputs, objectives, optimizer, program
from phi4_jax.train.metrics import MetricLogger

log = logging.getLogger(__name__)


class NonFiniteAbort(RuntimeError):
    """Too many consecutive steps with a NaN/Inf loss or gradient."""


@dataclasses.dataclass
class RunResult:
    step: int  # the step the run stopped at (state after `step` updates)
    start: str  # 'checkpoint', 'init_from' or 'scratch'
    preempted: bool
    metrics: dict[str, float]  # the last step's scalars


def model_config(section: Any) -> ModelConfig:
    """The model preset with every non-None field of the `model` section applied."""
    return from_experiment(section)


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


def _peak_flops(config: Any, devices: Sequence[jax.Device]) -> float | None:
    if config.train.get("peak_flops") is not None:
        return float(config.train.peak_flops)
    per_chip = flops.device_peak_flops(devices[0])
    if per_chip is not None:
        return per_chip * len(devices)
    if devices[0].platform == "cpu":  # simulated CPU devices share one host's cores
        return flops.measure_matmul_peak(devices[0], size=1024, seconds=0.5)
    return None


def build(config: Any, devices: Sequence[jax.Device] | None = None) -> program.Program:
    """Everything that can be checked is checked here, before compilation."""
    mesh = mesh_lib.from_config(config.mesh, devices)
    rules = rules_lib.from_config(config.mesh, mesh)
    tx, _ = optimizer.from_config(config.optimizer, config.train.clip_norm, config.train.steps)
    return program.build(model_config(config.model), rules, objectives.from_config(config), tx,
                         seed=config.train.seed, global_batch=config.train.global_batch,
                         seq_len=config.data.seq_len,
                         micro_batches=micro_batches(config.train, rules))


def micro_batches(train: Any, rules: rules_lib.Rules) -> int:
    """train.micro_batches, or the count train.per_device_batch implies on this mesh."""
    per_device = train.get("per_device_batch")
    if per_device is None:
        return int(train.micro_batches)
    ways = rules.shards(("batch",))[0]
    rows = ways * int(per_device)
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


def _check_train_fields(train: Any) -> None:
    for name in ("steps", "checkpoint_every", "keep", "log_every", "max_nonfinite_in_row"):
        if int(train[name]) <= 0:
            raise ValueError(f"train.{name}={train[name]} must be positive")


def run(config: Any, workdir: str, *, devices: Sequence[jax.Device] | None = None) -> RunResult:
    """Trains `config` in `workdir` (resuming whatever is there) up to train.steps."""
    train = config.train
    _check_train_fields(train)
    prog = build(config, devices)
    primary = jax.process_index() == 0
    if primary:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))

    data = inputs.for_run(config, prog, workdir, host=jax.process_index(),
                          host_count=jax.process_count())
    checkpoints = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=train.keep,
                                        async_save=train.async_checkpoint)
    state, start = _initial_state(prog, checkpoints, data, train)
    step = int(state.step)

    t0 = time.perf_counter()
    step_fn = prog.step.lower(*prog.abstract_inputs()).compile()
    compile_s = time.perf_counter() - t0
    devices_used = list(prog.mesh.devices.flat)
    tokens_per_step = train.global_batch * config.data.seq_len
    logger = MetricLogger(
        workdir, total_steps=train.steps, tokens_per_step=tokens_per_step,
        flops_per_step=flops.flops_per_token(prog.model_config, config.data.seq_len)
        * tokens_per_step, peak_flops=_peak_flops(config, devices_used),
        log_every=train.log_every, tensorboard=config.log.tensorboard,
        wandb_project=config.log.wandb_project if config.log.wandb else None,
        config=config.to_dict(), writer=primary)
    logger.event(f"{config.name}: {program.param_count(prog) / 1e6:.1f}M parameters on "
                 f"{len(devices_used)} device(s) mesh {dict(prog.mesh.shape)}, rules "
                 f"{prog.rules.name!r}; start from {start} at step {step}; compiled the step "
                 f"in {compile_s:.1f}s")

    meta = {"config": json.loads(config.to_json_best_effort())}
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


def _initial_state(prog: program.Program, checkpoints: ckpt_lib.Checkpointer, data: Any,
                   train: Any) -> tuple[Any, str]:
    restored = checkpoints.restore(prog.abstract_state, prog.state_shardings)
    if restored is not None:
        state, data_state, _ = restored
        ckpt_lib.set_json_state(data, data_state)
        return state, "checkpoint"
    if train.get("init_from"):
        params = ckpt_lib.restore_params(train.init_from, prog.abstract_state.params,
                                         prog.state_shardings.params)
        state, start = prog.from_params(params), "init_from"
    else:
        state, start = prog.init(), "scratch"
    return _with_reference(prog, state, train), start


def _with_reference(prog: program.Program, state: Any, train: Any) -> Any:
    """train.reference_from fills the objective's frozen 'reference' tree (DPO) from another
    run's parameters; without it the reference is the start parameters."""
    if not train.get("reference_from") or "reference" not in state.frozen:
        return state
    params = ckpt_lib.restore_params(train.reference_from, prog.abstract_state.params,
                                     prog.state_shardings.params)
    return state._replace(frozen={**state.frozen, "reference": params})


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
