"""The training loop: the one module with side effects (devices, files, signals, clocks).

`run(config, workdir)` converts an experiment config once into its typed form
(`phi4_jax.train.config.RunConfig`: an unknown key, a wrong type or a value out of range fails
here, naming the field), builds everything from it (failing on a bad value before anything
compiles), takes the work dir's lease (`phi4_jax.train.workdir`: a second run on the same work
dir fails at once, naming the holder), then trains:

    resume order   WORKDIR/checkpoints (own run; newest step whose checksums match and that
                   restores) -> train.init_from (another phase's parameters, fresh optimizer)
                   -> scratch (train.seed); on a fresh start the objective may fill its frozen
                   state (`Objective.load_frozen`)
    finished run   a checkpoint at train.steps: nothing compiles or trains; the run's last
                   logged metrics (WORKDIR/metrics.jsonl) are printed and returned
    first batch    its token ids must lie in [0, model.vocab_size) (else a ValueError naming
                   the data source), checked before the step compiles
    each step      put this host's batch on the mesh, run the compiled step, then fetch the
                   PREVIOUS step's metrics (the host never waits on the step in flight)
    evaluation     every eval.every steps and at the end: held-out loss per source (and eval.tasks)
                   on the step's parameters, merged into that step's metrics row
    checkpoints    every train.checkpoint_every steps and at the end, asynchronously, with the
                   data iterator state, after this step's metrics row is on disk (fsync);
                   SIGTERM (preemption) saves at the next step and exits
    non-finite     a NaN/Inf loss or gradient skips that update (counted); a step whose loss,
                   gradient or parameters are not finite is never checkpointed (the newest good
                   checkpoint stays); after train.max_nonfinite_in_row such steps in a row the
                   run aborts
    disk full      one WorkdirError naming the step and the last good checkpoint (intact)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.experimental.multihost_utils as multihost
import numpy as np

from phi4_jax import runs
from phi4_jax.sharding import mesh as mesh_lib
from phi4_jax.sharding import rules as rules_lib
from phi4_jax.train import checkpoint as ckpt_lib
from phi4_jax.train import evaluation, flops, objectives, optimizer, program
from phi4_jax.train import workdir as workdir_lib
from phi4_jax.train.config import RunConfig, TrainConfig
from phi4_jax.train.metrics import MetricLogger, last_logged

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
    whatever is there, up to train.steps, holding the work dir's lease throughout (LeaseHeld,
    naming the holder, if another run has it)."""
    run_config = RunConfig.of(config)
    prog = build(run_config, devices)
    with workdir_lib.hold(workdir, timeout_s=run_config.train.lease_timeout_s) as lease:
        return _run(run_config, prog, workdir, lease)


def _run(run_config: RunConfig, prog: program.Program, workdir: str,
         lease: workdir_lib.Lease | None) -> RunResult:
    train = run_config.train
    primary = jax.process_index() == 0
    if primary:
        _write_config(workdir, run_config)
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
        batch = next(data)
        check_token_ids(batch, prog.model_config.vocab_size, run_config)
        # held-out rows on the mesh, the eval step compiled (eval.tasks' scorer checked)
        evaluator = evaluation.Evaluator(run_config, prog) if run_config.eval.every else None
    except BaseException:
        _close_quietly(checkpoints)
        raise
    step = int(state.step)
    record = runs.start(run_config, workdir, mesh=prog.mesh, data=data,
                        resume={"start": start, "step": step})

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
    saved = step if start == "checkpoint" else None  # the newest checkpoint of this run
    last: dict[str, float] = {}
    preempted = False
    pending = None  # (step number, device metrics) not yet fetched
    with _Preemption() as preemption:
        logger.start(step)
        try:
            while step < train.steps:
                if lease is not None:
                    lease.check()
                batch = next(data) if batch is None else batch
                state, metrics = step_fn(state, prog.put_batch(batch))
                batch = None
                step += 1
                if evaluator is not None and evaluation.due(step, run_config):
                    metrics = {**metrics, **evaluator(state.params)}  # fetched with the step's
                if pending is not None:
                    last = _report(logger, *pending, train.max_nonfinite_in_row, saved)
                pending = (step, metrics)
                preempted = preemption.reached(step)
                if step % train.checkpoint_every == 0 or preempted or step == train.steps:
                    # This step's row first: a checkpoint never runs ahead of metrics.jsonl,
                    # and a state from a non-finite step is never saved.
                    last, pending = _report(logger, *pending, train.max_nonfinite_in_row,
                                            saved), None
                    if _save(checkpoints, logger, step, state, data, meta, last, saved,
                             final=step == train.steps and not preempted):
                        saved = step
                if preempted:
                    logger.event(f"SIGTERM: saved step {step}, exiting" if saved == step else
                                 f"SIGTERM: exiting at step {step} without saving it; "
                                 f"{_newest(saved)} stays the newest")
                    break
            if pending is not None:
                last = _report(logger, *pending, train.max_nonfinite_in_row, saved)
        except BaseException as err:
            full = _no_space(checkpoints, step) if ckpt_lib.disk_full(err) else None
            _close_quietly(checkpoints, logger)
            if full is not None:
                raise full from None
            raise
        finally:  # this launch's end in WORKDIR/runs.jsonl (status from the error in flight)
            runs.finish(record, step=step, metrics=last, preempted=preempted)
    try:
        checkpoints.close()  # the last save's failure, if any, surfaces here
    finally:
        logger.close()
    return RunResult(step=step, start=start, preempted=preempted, metrics=last)


def _write_config(workdir: str, run_config: RunConfig) -> None:
    try:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(run_config.experiment, f, indent=2, sort_keys=True)
    except OSError as err:
        if not ckpt_lib.disk_full(err):
            raise
        raise workdir_lib.WorkdirError(f"{workdir}: no space left on device while writing "
                                       "config.json; free space and rerun") from None


def _no_space(checkpoints: ckpt_lib.Checkpointer, step: int) -> workdir_lib.WorkdirError:
    """The error for a write that found the disk full: the save in flight's, if it failed for
    space first (it filled the disk), else one naming the metrics of `step`."""
    try:
        checkpoints.wait()
    except workdir_lib.WorkdirError as err:
        return err
    except Exception:  # noqa: BLE001 - reported below
        pass
    return workdir_lib.WorkdirError(ckpt_lib.no_space_message(
        checkpoints, f"writing the metrics of step {step}"))


def _close_quietly(*closables: Any) -> None:
    """Closes what a failing run opened without masking its error (a failed save raises again
    on close; orbax's threads still stop)."""
    for closable in closables:
        try:
            closable.close()
        except Exception as err:  # noqa: BLE001
            log.debug("closing %s after a failure: %s", type(closable).__name__, err)


def _newest(saved: int | None) -> str:
    return "no checkpoint" if saved is None else f"the last checkpoint (step {saved})"


def _save(checkpoints: ckpt_lib.Checkpointer, logger: MetricLogger, step: int, state: Any,
          data: Any, meta: dict[str, Any], scalars: dict[str, float], saved: int | None, *,
          final: bool) -> bool:
    """Saves `step` (after syncing metrics.jsonl) unless its loss, gradient or parameters are
    not finite; returns whether it saved. The run's last step unsaved is an abort."""
    if scalars["nonfinite_in_row"] == 0 and math.isfinite(scalars["param_norm"]):
        logger.sync()
        checkpoints.save(step, state, ckpt_lib.json_state(data), meta)
        return True
    why = (f"step {step} is not checkpointed: its loss, gradient norm or parameters are not "
           f"finite ({int(scalars['nonfinite_in_row'])} non-finite step(s) in a row); "
           f"{_newest(saved)} stays the newest")
    if final:
        raise NonFiniteAbort(f"the run's last {why}. Lower optimizer.peak_lr or check the data "
                             "around this step, then rerun")
    logger.event(why)
    return False


def check_token_ids(batch: Mapping[str, np.ndarray], vocab_size: int, run: RunConfig) -> None:
    """The token ids of a (first) batch lie in [0, model.vocab_size): data tokenized for
    another vocabulary fails here, naming its source, not later as out-of-range embedding
    lookups and targets, which raise nothing on an accelerator."""
    for key in ("tokens", "targets"):
        ids = np.asarray(batch[key]) if key in batch else np.zeros(0)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(
                f"the first batch of {_data_source(run)} holds token id {bad} in {key!r}, outside "
                f"model.vocab_size={vocab_size} (ids must lie in [0, {vocab_size})): the data "
                "was tokenized for another vocabulary, or model.vocab_size is too small for it")


def _data_source(run: RunConfig) -> str:
    data = run.data
    if data.source == "mixture":
        return f"data.source='mixture' (data.mixture={data.mixture!r})"
    if data.source == "pairs" and "dpo" in run.sections:
        return f"data.source='pairs' (dpo.pairs={run.section('dpo').pairs!r})"
    return f"data.source={data.source!r}"


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


def _report(logger: MetricLogger, step: int, metrics: Any, max_in_row: int,
            saved: int | None) -> dict[str, float]:
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    logger.record(step, scalars)
    if scalars["nonfinite_in_row"] >= max_in_row:
        raise NonFiniteAbort(
            f"aborting at step {step}: {int(scalars['nonfinite_in_row'])} consecutive steps had "
            f"a non-finite loss or gradient norm (train.max_nonfinite_in_row={max_in_row}); "
            f"updates were skipped and nothing was saved from them: {_newest(saved)} is "
            "unaffected. Lower optimizer.peak_lr, check the data around this step, or raise "
            "the limit.")
    return scalars
